"""`rating keys create --rate-limit N/PER[:BURST]`: read as a key's limit, or refused clearly."""

from __future__ import annotations

from decimal import Decimal

import click
import pytest

from rating_service.cli.tenants import _key_rate_limit
from rating_service.core.contracts.rate_limits import LimitWindow


def test_a_limit_with_and_without_a_burst() -> None:
    limit = _key_rate_limit("100/second:200")
    assert (limit.limit, limit.per, limit.burst) == (Decimal(100), LimitWindow.SECOND, Decimal(200))
    assert _key_rate_limit("5/hour").burst is None


@pytest.mark.parametrize("text", ["100", "100/day", "lots/second", "0/minute", "1/second:-1"])
def test_a_wrong_limit_says_what_is_expected(text: str) -> None:
    with pytest.raises(click.BadParameter) as refused:
        _key_rate_limit(text)
    assert "e.g. 100/second:200" in str(refused.value)
