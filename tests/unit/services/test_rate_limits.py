"""Rate limits: token bucket arithmetic, what an event costs, and the shared bucket table."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from rating_service.core.contracts.contract import contract_from_dict, contract_to_dict
from rating_service.core.contracts.rate_limits import (
    MICRO,
    RATE_LIMITED,
    Bucket,
    LimitUnit,
    LimitWindow,
    RateLimit,
    rate_limit_from_dict,
    refilled,
    wait_for,
)
from rating_service.core.errors import InvalidArgument, ResourceExhausted
from rating_service.core.rating.rate import Measured, PreparedEvent
from rating_service.services.rating.rate_limiter import BucketTable, RateLimiter
from tests.unit.core.billing.builders import a_contract

D = Decimal
SECOND = 1_000_000_000
TEN_A_SECOND = RateLimit("calls", D(10))


@pytest.mark.parametrize(
    ("limit", "tokens", "elapsed_ns", "expected"),
    [
        (TEN_A_SECOND, 0, SECOND // 10, MICRO),  # 100 ms refill one call
        (TEN_A_SECOND, 0, SECOND // 20, MICRO // 2),
        (TEN_A_SECOND, 9 * MICRO, SECOND, 10 * MICRO),  # never past the burst
        (RateLimit("m", D(60), LimitWindow.MINUTE), 0, SECOND, MICRO),
        (RateLimit("h", D(3600), LimitWindow.HOUR, burst=D(5)), 0, 10 * SECOND, 5 * MICRO),
        (RateLimit("slow", D("0.5")), 0, SECOND, MICRO // 2),
    ],
)
def test_buckets_refill_at_the_limit_up_to_the_burst(
    limit: RateLimit, tokens: int, elapsed_ns: int, expected: int
) -> None:
    assert refilled(limit, Bucket(tokens, 0), elapsed_ns).tokens == expected


def test_a_new_bucket_is_full_and_a_wait_is_what_the_refill_needs() -> None:
    assert refilled(TEN_A_SECOND, None, 5) == Bucket(10 * MICRO, 5)
    assert wait_for(TEN_A_SECOND, Bucket(0, 0), MICRO) == timedelta(milliseconds=100)
    assert wait_for(TEN_A_SECOND, Bucket(MICRO, 0), MICRO) == timedelta(0)


def test_what_an_event_costs_each_limit() -> None:
    tokens = {"tokens": (D("1500.5"), frozenset({"llm"})), "images": (D(2), frozenset())}
    assert TEN_A_SECOND.cost(tokens) == MICRO  # a request, whatever it measures
    by_units = RateLimit("t", D(100_000), unit=LimitUnit.UNITS, tag="llm")
    assert by_units.cost(tokens) == 1_500_500_000  # its covered units, in micro-tokens
    assert RateLimit("i", D(1), product_key="audio").cost(tokens) == 0  # not covered


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"limit_id": "a", "limit": "0"}, "limit"),
        ({"limit_id": "a", "limit": "1", "per": "day"}, "per"),
        ({"limit_id": "a", "limit": "1", "unit": "bytes"}, "unit"),
        ({"limit_id": "a", "limit": "1", "product_key": "x", "tag": "y"}, "product_key"),
        ({"limit": "1"}, "limit_id"),
        ({"limit_id": "a", "limit": "1", "burst": "-1"}, "burst"),
    ],
)
def test_bad_limits_name_their_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        rate_limit_from_dict(data)
    assert field in {v.field for v in refused.value.violations}


def test_a_contract_keeps_its_limits_in_its_dict_form() -> None:
    contract = replace(
        a_contract(),
        rate_limits=(TEN_A_SECOND, RateLimit("tok", D(1000), LimitWindow.MINUTE, LimitUnit.UNITS)),
    )
    assert contract_from_dict(contract_to_dict(contract)) == contract
    with pytest.raises(InvalidArgument):
        replace(contract, rate_limits=(TEN_A_SECOND, TEN_A_SECOND))


def event_on(contract: object, quantity: str = "1") -> PreparedEvent:
    """A prepared event of one product, tagged llm, on `contract`."""
    from rating_service.core.pricing import PerUnit, product_from_dict

    product = product_from_dict(
        {"key": "tokens", "tags": ["llm"], "meter": {"event_type": "llm", "quantity_property": "n"}}
    )
    at = datetime(2025, 1, 2, tzinfo=UTC)
    measured = Measured(product, D(quantity), {}, PerUnit(D(1)), None, ())  # type: ignore[arg-type]
    return PreparedEvent("tnt_1", "e", "f", contract, at, (at, at), (measured,))  # type: ignore[arg-type]


def test_the_limiter_refuses_the_eleventh_and_admits_after_refill() -> None:
    now = [0]
    limiter = RateLimiter(BucketTable(), clock_ns=lambda: now[0])
    event = event_on(replace(a_contract(), rate_limits=(TEN_A_SECOND,)))
    for _ in range(10):
        limiter.admit(event)
    with pytest.raises(ResourceExhausted) as refused:
        limiter.admit(event)
    assert refused.value.reason == RATE_LIMITED
    assert refused.value.retry_after == timedelta(milliseconds=100)
    assert [v.subject for v in refused.value.quota_violations] == [
        "contracts/ctr_1/rate_limits/calls"
    ]
    now[0] += SECOND // 10
    limiter.admit(event)
    with pytest.raises(ResourceExhausted):
        limiter.admit(event)


def test_a_refused_event_takes_no_token_from_its_other_limits() -> None:
    now = [0]
    limiter = RateLimiter(BucketTable(), clock_ns=lambda: now[0])
    calls = RateLimit("calls", D(100))
    units = RateLimit("units", D(10), unit=LimitUnit.UNITS, tag="llm")
    contract = replace(a_contract(), rate_limits=(calls, units))
    limiter.admit(event_on(contract, "8"))
    with pytest.raises(ResourceExhausted) as refused:
        limiter.admit(event_on(contract, "5"))  # 2 units left
    assert [v.subject.rsplit("/", 1)[1] for v in refused.value.quota_violations] == ["units"]
    for _ in range(2):  # the calls limit lost nothing to the refused event: 99 calls left
        limiter.admit(event_on(contract, "1"))
    assert refused.value.retry_after == timedelta(milliseconds=300)


def test_processes_sharing_a_file_share_the_buckets(tmp_path: object) -> None:
    path = f"{tmp_path}/buckets"
    first, second = BucketTable(path), BucketTable(path)
    try:
        event = event_on(replace(a_contract(), rate_limits=(TEN_A_SECOND,)))
        one, two = RateLimiter(first, lambda: 0), RateLimiter(second, lambda: 0)
        for n in range(10):
            (one if n % 2 else two).admit(event)
        with pytest.raises(ResourceExhausted):
            one.admit(event)
        with pytest.raises(ResourceExhausted):
            two.admit(event)
    finally:
        first.close()
        second.close()
