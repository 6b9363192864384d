"""Draw-down order: priority → cost basis → scope width → expiry → start → creation order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from rating_service.core.contracts import CommitmentKind, Pool, draw_down_order
from tests.unit.core.contracts.builders import a_pool, at

# Each row: two pools equal on every earlier key, differing on one; `first` is drawn first.
# Both input orders are tried, so the outcome never depends on how the pools were listed.
TIE_BREAKERS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("smaller priority first", {"priority": 1}, {"priority": 2}),
    ("negative priority before zero", {"priority": -5}, {"priority": 0}),
    ("free before paid (cost basis 0 < 1)", {"cost_basis": "0"}, {"cost_basis": "1"}),
    ("cheaper paid before dearer (0.8 < 1)", {"cost_basis": "0.8"}, {"cost_basis": "1"}),
    (
        "narrower scope first (1 product < 2 products)",
        {"scope": frozenset({"gpt"})},
        {"scope": frozenset({"gpt", "embed"})},
    ),
    (
        "any named scope before every-product scope",
        {"scope": frozenset({"gpt", "embed", "image"})},
        {"scope": None},
    ),
    ("soonest expiry first", {"expires_at": at(10)}, {"expires_at": at(20)}),
    ("an expiry before no expiry", {"expires_at": at(400)}, {"expires_at": None}),
    ("earliest start first", {"starts_at": at(-2)}, {"starts_at": at(-1)}),
    ("creation order last", {"created_seq": 3}, {"created_seq": 4}),
    # Earlier keys win over later ones: priority beats cost basis, cost beats scope, …
    (
        "priority beats cost basis",
        {"priority": 0, "cost_basis": "1"},
        {"priority": 1, "cost_basis": "0"},
    ),
    (
        "cost basis beats scope",
        {"cost_basis": "0", "scope": None},
        {"cost_basis": "0.5", "scope": frozenset({"gpt"})},
    ),
    (
        "scope beats expiry",
        {"scope": frozenset({"gpt"}), "expires_at": None},
        {"scope": None, "expires_at": at(1)},
    ),
    (
        "expiry beats start",
        {"expires_at": at(5), "starts_at": at(-1)},
        {"expires_at": at(6), "starts_at": at(-9)},
    ),
    (
        "start beats creation order",
        {"starts_at": at(-9), "created_seq": 9},
        {"starts_at": at(-1), "created_seq": 1},
    ),
]


@pytest.mark.parametrize(
    ("rule", "first", "second"), TIE_BREAKERS, ids=[r[0] for r in TIE_BREAKERS]
)
def test_each_tie_breaker_in_both_input_orders(
    rule: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    a = a_pool("first", **first)
    b = a_pool("second", **second)
    assert [p.pool_id for p in draw_down_order([a, b], "gpt", at(0))] == ["first", "second"]
    assert [p.pool_id for p in draw_down_order([b, a], "gpt", at(0))] == ["first", "second"]


def test_a_full_ordering() -> None:
    pools = [
        a_pool("paid_wide", cost_basis="1", created_seq=1),
        a_pool("promo_scoped", scope=frozenset({"gpt"}), created_seq=2),
        a_pool("promo_wide_expiring", expires_at=at(30), created_seq=3),
        a_pool("promo_wide", created_seq=4),
        a_pool("urgent", priority=-1, cost_basis="1", created_seq=5),
    ]
    order = [p.pool_id for p in draw_down_order(pools, "gpt", at(1))]
    assert order == ["urgent", "promo_scoped", "promo_wide_expiring", "promo_wide", "paid_wide"]


@pytest.mark.parametrize(
    ("pool", "moment", "applies"),
    [
        # [starts_at, expires_at): the start is in, the expiry is out.
        (a_pool("p", starts_at=at(5)), at(4.999), False),  # not started yet
        (a_pool("p", starts_at=at(5)), at(5), True),  # starts exactly now
        (a_pool("p", expires_at=at(10)), at(9.999), True),
        (a_pool("p", expires_at=at(10)), at(10), False),  # expired exactly now
        (a_pool("p", expires_at=at(10)), at(11), False),  # expired, even if the sweep is late
        (a_pool("p", scope=frozenset({"embed"})), at(1), False),  # out of scope
        (a_pool("p", scope=frozenset({"gpt"})), at(1), True),
    ],
)
def test_only_pools_in_scope_and_in_force_are_drawn(
    pool: Pool, moment: datetime, applies: bool
) -> None:
    assert pool.applies_to("gpt", moment) is applies
    assert (draw_down_order([pool], "gpt", moment) == (pool,)) is applies


def test_postpaid_commits_are_never_drawn() -> None:
    # A postpaid commit is a minimum spend, not a balance.
    commit = a_pool("commit", "1000", kind=CommitmentKind.POSTPAID_COMMIT)
    credit = a_pool("credit")
    assert draw_down_order([commit, credit], "gpt", at(1)) == (credit,)


def test_empty_pools_stay_in_the_order() -> None:
    # Allocation passes over them; ordering does not hide them.
    empty = a_pool("empty", balance="0")
    assert draw_down_order([empty], "gpt", at(1)) == (empty,)
