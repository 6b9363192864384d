"""The one reader of plain-dict forms: field paths, absent and wrong fields, unknown fields."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rating_service.core.dict_form import DictReader, join_path
from rating_service.core.errors import ViolationCollector


@pytest.mark.parametrize(
    ("prefix", "key", "path"),
    [
        ("", "amount", "amount"),  # at the top
        ("prices.tokens", "amount", "prices.tokens.amount"),
        ("prices.tokens", "[3]", "prices.tokens[3]"),  # an index joins without a dot
        ("prices.tokens", "", "prices.tokens"),  # the prefix itself
    ],
)
def test_a_field_path_joins_a_prefix_and_a_key(prefix: str, key: str, path: str) -> None:
    assert join_path(prefix, key) == path


def read(data: object, use: Callable[[DictReader], object], path: str) -> list[str]:
    """`field: description` of each violation reading `data` under `path` records."""
    violations = ViolationCollector()
    use(DictReader(data, path, violations, "a tier"))
    return [f"{v.field}: {v.description}" for v in violations.violations]


@pytest.mark.parametrize(
    ("data", "use", "path", "recorded"),
    [
        ({}, lambda r: r.sequence("tiers"), "p", []),  # absent means empty
        ({}, lambda r: r.required_sequence("tiers"), "p", ["p.tiers: is required"]),
        ({"tiers": []}, lambda r: r.required_sequence("tiers"), "p", []),  # given, empty
        ({"tiers": "1"}, lambda r: r.sequence("tiers"), "p", ["p.tiers: must be a list, got str"]),
        (
            {"tiers": 1},
            lambda r: r.required_sequence("tiers"),
            "p",
            ["p.tiers: must be a list, got int"],
        ),
        ([], lambda r: None, "", ["a tier: must be a mapping, got list"]),  # no path: the shape
        ([], lambda r: None, "tiers[1]", ["tiers[1]: must be a mapping, got list"]),
        # Unknown fields, sorted by name; the shape named when read, or as the reader was told.
        (
            {"zeta": 1, "alpha": 2, "up_to": "1"},
            lambda r: (r.raw("up_to"), r.reject_unknown()),
            "tiers[0]",
            ["tiers[0].alpha: is not a field of a tier", "tiers[0].zeta: is not a field of a tier"],
        ),
        (
            {"unit_prise": "1"},
            lambda r: r.reject_unknown("a per_unit price"),
            "",
            ["unit_prise: is not a field of a per_unit price"],
        ),
    ],
)
def test_each_problem_is_recorded_under_its_field_path(
    data: object, use: Callable[[DictReader], object], path: str, recorded: list[str]
) -> None:
    assert read(data, use, path) == recorded
