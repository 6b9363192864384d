"""A pool moved to a new balance keeps its terms, and refuses amounts as its constructor does."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rating_service.core.contracts import CommitmentKind
from rating_service.core.errors import InvalidArgument
from tests.unit.core.contracts.builders import a_pool

amounts = st.decimals(min_value=-5, max_value=200, places=4) | st.sampled_from(
    [Decimal("NaN"), Decimal("Infinity"), Decimal(0)]
)


@given(kind=st.sampled_from(CommitmentKind), balance=amounts, pending=amounts)
def test_holding_is_replace_without_checking_the_terms_again(
    kind: CommitmentKind, balance: Decimal, pending: Decimal
) -> None:
    pool = a_pool("p1", "100", kind=kind, scope=frozenset({"tokens"}))
    try:
        expected = replace(pool, balance=balance, pending=pending)
    except InvalidArgument as refused:
        with pytest.raises(InvalidArgument) as raised:
            pool.holding(balance, pending)
        assert raised.value.violations == refused.violations
        return
    moved = pool.holding(balance, pending)
    assert moved == expected
    assert hash(moved) == hash(expected)
    assert (moved.balance, moved.pending, pool.balance) == (balance, pending, pool.balance)
