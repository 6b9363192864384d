"""Catalog planning: what `catalog apply` and the catalog RPCs may and may not change (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from rating_service.cli.catalog_file import dump_catalog, load_catalog_text, read_catalog_file
from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing.catalog import (
    Catalog,
    ChangeKind,
    apply_plan,
    catalog_from_document,
    next_rate_card_version,
    plan_changes,
)
from rating_service.core.pricing.rate_card import rate_card_from_dict

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[3] / "rating_service" / "examples" / "catalog.yaml"

TOKENS = {
    "key": "tokens",
    "meter": {"event_type": "llm", "quantity_property": "n", "dimensions": ["model"]},
}


def card(version: int, start: str, until: str | None = None, price: str = "0.01") -> dict:
    return {
        "key": "list",
        "version": version,
        "effective_from": start,
        "effective_until": until,
        "pricing_unit": "USD",
        "prices": {"tokens": {"model": "per_unit", "unit_price": price}},
    }


def catalog(*cards: dict) -> Catalog:
    return catalog_from_document({"products": [TOKENS], "rate_cards": list(cards)})


def violations(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


def test_an_empty_catalog_plans_creates_and_applying_twice_changes_nothing() -> None:
    desired = catalog(card(1, "2026-01-01T00:00:00Z"))
    changes = plan_changes(Catalog(), desired, NOW)
    assert [c.kind for c in changes] == [
        ChangeKind.CREATE_PRODUCT,
        ChangeKind.CREATE_RATE_CARD_VERSION,
    ]
    assert plan_changes(apply_plan(Catalog(), changes), desired, NOW) == []


def test_a_stored_version_is_immutable() -> None:
    current = catalog(card(1, "2026-01-01T00:00:00Z"))
    with pytest.raises(InvalidArgument) as refused:
        plan_changes(current, catalog(card(1, "2026-01-01T00:00:00Z", price="0.02")), NOW)
    assert "immutable" in violations(refused)["rate_cards[list].versions[1]"]


def test_an_open_version_may_be_closed_in_the_future_but_not_in_the_past() -> None:
    current = catalog(card(1, "2026-01-01T00:00:00Z"))
    future = catalog(card(1, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"))
    [change] = plan_changes(current, future, NOW)
    assert change.kind is ChangeKind.CLOSE_RATE_CARD_VERSION
    past = catalog(card(1, "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"))
    with pytest.raises(InvalidArgument) as refused:
        plan_changes(current, past, NOW)
    assert "past" in violations(refused)["rate_cards[list].versions[1].effective_until"]


def test_a_new_version_of_an_existing_card_cannot_start_in_the_past() -> None:
    current = catalog(card(1, "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"))
    late = catalog(
        card(1, "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"), card(2, "2026-06-01T00:00:00Z")
    )
    with pytest.raises(InvalidArgument) as refused:
        plan_changes(current, late, NOW)
    assert "past" in violations(refused)["rate_cards[list].versions[2].effective_from"]


def test_a_new_card_may_carry_history() -> None:
    history = catalog(
        card(1, "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"), card(2, "2025-01-01T00:00:00Z")
    )
    assert len(plan_changes(Catalog(), history, NOW)) == 3


def test_versions_must_not_leave_gaps_or_overlap() -> None:
    with pytest.raises(InvalidArgument) as gap:
        plan_changes(Catalog(), catalog(card(2, "2026-01-01T00:00:00Z")), NOW)
    assert "without gaps" in violations(gap)["rate_cards[list]"]
    with pytest.raises(InvalidArgument) as overlap:
        catalog(card(1, "2026-01-01T00:00:00Z"), card(2, "2026-03-01T00:00:00Z"))
    assert any("overlaps" in d for d in violations(overlap).values())


def test_a_product_change_that_breaks_a_rate_card_is_refused() -> None:
    matrix = {
        "model": "matrix",
        "dimensions": ["model"],
        "cells": [{"match": {"model": "m"}, "price": {"model": "per_unit", "unit_price": "1"}}],
    }
    current = catalog({**card(1, "2026-01-01T00:00:00Z"), "prices": {"tokens": matrix}})
    no_dimensions = Catalog(
        {
            "tokens": catalog_from_document(
                {"products": [{**TOKENS, "meter": {"event_type": "llm"}}]}
            ).products["tokens"]
        },
        {},
    )
    with pytest.raises(InvalidArgument) as refused:
        plan_changes(current, no_dimensions, NOW)
    assert "rate_cards[list].versions[1].prices.tokens.dimensions[0]" in violations(refused)


def test_the_next_version_closes_the_open_one_where_it_starts() -> None:
    current = catalog(card(1, "2026-01-01T00:00:00Z"))
    proposed = rate_card_from_dict(card(1, "2027-01-01T00:00:00Z", price="0.005"))
    desired = next_rate_card_version(current, proposed)
    changes = plan_changes(current, desired, NOW)
    assert [(c.kind, c.version) for c in changes] == [
        (ChangeKind.CLOSE_RATE_CARD_VERSION, 1),
        (ChangeKind.CREATE_RATE_CARD_VERSION, 2),
    ]
    assert changes[0].after["effective_until"] == "2027-01-01T00:00:00+00:00"


def test_unknown_sections_and_entries_are_named() -> None:
    with pytest.raises(InvalidArgument) as refused:
        catalog_from_document({"products": [TOKENS, TOKENS], "prices": []})
    assert set(violations(refused)) == {"prices", "products[1].key"}


def test_yaml_numbers_are_exact_and_timestamps_stay_text() -> None:
    document = load_catalog_text("a: 0.0000025\nb: 10\nc: 2026-01-01T00:00:00Z\n")
    assert document == {"a": Decimal("0.0000025"), "b": 10, "c": "2026-01-01T00:00:00Z"}


def test_the_example_catalog_loads_and_round_trips_through_export() -> None:
    example = catalog_from_document(read_catalog_file(EXAMPLE))
    assert set(example.products) == {
        "llm-tokens",
        "image-generation",
        "embeddings",
        "fine-tuning",
        "support-resolutions",
        "platform-fee",
    }
    stored = apply_plan(Catalog(), plan_changes(Catalog(), example, NOW))
    exported = dump_catalog(stored.to_document())
    reread = catalog_from_document(load_catalog_text(exported))
    assert plan_changes(stored, reread, NOW) == []
    assert dump_catalog(reread.to_document()) == exported
