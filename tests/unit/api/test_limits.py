"""The edge's request limits, as tables (pure, no server)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import Message

from rating_client.gen.rating.v1 import contract_pb2, ops_pb2, rating_pb2
from rating_service.api import limits
from rating_service.core.errors import InvalidArgument, ResourceExhausted
from rating_service.core.money import parse_decimal


def _event(**fields: Any) -> rating_pb2.UsageEvent:
    event = rating_pb2.UsageEvent(event_id="e1", customer_id="c1", event_type="api.call")
    event.timestamp.seconds = 1_800_000_000
    for name, value in fields.items():
        if name == "properties":
            event.properties.update(value)
        elif name == "seconds":
            event.timestamp.seconds = value
        elif name == "nanos":
            event.timestamp.nanos = value
        else:
            setattr(event, name, value)
    return event


def _fields(message: Message) -> list[str]:
    return [v.field for v in limits.violations(message)]


@pytest.mark.parametrize(
    ("event", "bad"),
    [
        (_event(), []),
        (_event(event_id="x" * 255), []),  # the longest identifier
        (_event(event_id="x" * 256), ["event.event_id"]),
        (_event(event_id="a\x00b"), ["event.event_id"]),
        (_event(event_id="a\tb"), ["event.event_id"]),  # identifiers: no whitespace but space
        (_event(event_id="a b"), []),
        (_event(customer_id="\u202e"), ["event.customer_id"]),  # a format character
        (_event(event_type="llm\x7fcall"), ["event.event_type"]),
        (_event(properties={"model": "x" * 4096}), []),
        (_event(properties={"model": "x" * 4097}), ["event.properties['model']"]),
        (_event(properties={"memo": "line\nnext\ttab"}), []),  # text: tab, LF and CR pass
        (_event(properties={"memo": "a\x00"}), ["event.properties['memo']"]),
        (_event(properties={"memo": "a\x85"}), ["event.properties['memo']"]),  # C1 control
        (_event(properties={"k\x00": "1"}), ["event.properties"]),
        (_event(seconds=0), []),  # 1970-01-01T00:00:00Z
        (_event(seconds=-1), ["event.timestamp"]),
        (_event(seconds=32_503_679_999), []),  # 2999-12-31T23:59:59Z
        (_event(seconds=32_503_680_000), ["event.timestamp"]),
        (_event(nanos=999_999_999), []),
        (_event(nanos=1_000_000_000), ["event.timestamp"]),
        (_event(nanos=-1), ["event.timestamp"]),
        (_event(event_id="\x00", customer_id="y" * 300), ["event.event_id", "event.customer_id"]),
    ],
)
def test_every_field_of_an_event_is_held_to_its_limit(
    event: rating_pb2.UsageEvent, bad: list[str]
) -> None:
    assert _fields(rating_pb2.RateAndDebitRequest(event=event)) == bad


def test_limits_reach_every_message_of_every_service() -> None:
    request = ops_pb2.ReplayInvoicesRequest(workflow_ids=["ok", "b\x00d"], reason="why\x00")
    assert _fields(request) == ["workflow_ids[1]", "reason"]
    customer = contract_pb2.CreateCustomerRequest(customer_id="c" * 256, name="n" * 4097)
    assert _fields(customer) == ["customer_id", "name"]


def test_a_batch_leaves_its_events_to_the_servicer_but_not_their_number() -> None:
    bad = _event(event_id="\x00")
    assert _fields(rating_pb2.BatchRateAndDebitRequest(events=[bad])) == []
    many = rating_pb2.BatchRateAndDebitRequest(events=[_event()] * 1001)
    assert _fields(many) == ["events"]


def test_an_oversized_request_is_refused_with_a_reason_before_its_fields() -> None:
    request = rating_pb2.RateAndDebitRequest(event=_event(properties={"memo": "\x00" * 2000}))
    with pytest.raises(ResourceExhausted) as refused:
        limits.check(request, max_bytes=1000)
    assert refused.value.reason == "MESSAGE_TOO_LARGE"
    with pytest.raises(InvalidArgument):
        limits.check(request, max_bytes=10_000)


@pytest.mark.parametrize("text", ["١٢", "１２", "1\u0662", "½"])
def test_decimals_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_decimal(text, "amount")
