"""Quote prices hypothetical usage exactly as real-time rating would (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from rating_service.cli.catalog_file import read_catalog_file
from rating_service.core.errors import FailedPrecondition, InvalidArgument, NotFound
from rating_service.core.pricing.catalog import catalog_from_document
from rating_service.core.pricing.quote import UsageLine, quote

EXAMPLE = catalog_from_document(
    read_catalog_file(
        Path(__file__).resolve().parents[4] / "rating_service" / "examples" / "catalog.yaml"
    )
)
NOW = datetime(2026, 11, 21, tzinfo=UTC)


def line(product: str, quantity: str, **dimensions: str) -> UsageLine:
    return UsageLine(product, Decimal(quantity), dimensions)


def test_tokens_are_priced_per_cell_at_the_rate_in_force() -> None:
    lines = [
        line("llm-tokens", "1000000", model="gpt-4o", token_type="input"),  # 1M × 0.0000025 = 2.5
        line("llm-tokens", "200000", model="gpt-4o", token_type="output"),  # 200k × 0.00001 = 2
    ]
    result = quote(EXAMPLE, "list", NOW, lines)
    assert result.rate_card.version == 2
    assert [q.priced.amount for q in result.lines] == [Decimal("2.5"), Decimal("2")]
    assert result.total == Decimal("4.5")
    # Before 2024-08-06, version 1: 1M × 0.000005 + 200k × 0.000015 = 5 + 3 = 8
    assert quote(EXAMPLE, "list", datetime(2024, 6, 1, tzinfo=UTC), lines).total == Decimal("8")


def test_later_lines_continue_the_tiers_of_earlier_ones_and_of_period_to_date() -> None:
    # Fine-tuning graduated: 0–100 h at 6, 100–1000 at 5. 90 h already used this period:
    # 20 h more = 10 × 6 + 10 × 5 = 110; then 5 h more = 5 × 5 = 25.
    result = quote(
        EXAMPLE,
        "list",
        NOW,
        [line("fine-tuning", "20"), line("fine-tuning", "5")],
        period_to_date=[line("fine-tuning", "90")],
    )
    assert [q.priced.amount for q in result.lines] == [Decimal("110"), Decimal("25")]
    assert [(b.tier, b.quantity) for b in result.lines[0].priced.lines] == [
        (0, Decimal("10")),
        (1, Decimal("10")),
    ]


def test_a_volume_tier_crossing_can_credit_back() -> None:
    # Embeddings volume: ≤ 1e9 at 0.00000002, ≤ 1e10 at 0.000000016.
    # P(1e9) = 20; P(1e9 + 1) = 16.000000016; the 1 extra token costs −3.999999984.
    result = quote(
        EXAMPLE,
        "list",
        NOW,
        [line("embeddings", "1")],
        period_to_date=[line("embeddings", "1000000000")],
    )
    assert result.total == Decimal("-3.999999984")


@pytest.mark.parametrize(
    ("usage", "error", "field"),
    [
        (line("nope", "1"), InvalidArgument, "lines[0].product_key"),
        (
            line("llm-tokens", "1", model="gpt-4o", token_type="input", region="eu"),
            InvalidArgument,
            "lines[0].dimensions.region",
        ),
    ],
)
def test_usage_that_does_not_fit_the_catalog_names_the_field(
    usage: UsageLine, error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as refused:
        quote(EXAMPLE, "list", NOW, [usage])
    assert [v.field for v in refused.value.violations] == [field]  # type: ignore[attr-defined]


def test_unknown_rate_cards_and_times_before_any_version_are_refused() -> None:
    with pytest.raises(NotFound):
        quote(EXAMPLE, "nope", NOW, [])
    with pytest.raises(FailedPrecondition):
        quote(EXAMPLE, "list", datetime(2020, 1, 1, tzinfo=UTC), [])
