"""The API edge under arbitrary requests: never INTERNAL, refusals write nothing, no one else hurt.

Hypothesis builds requests for every RatingService RPC from hostile parts (control
characters, ids of any length, any Timestamp, decimals of any size or spelling, ids repeated
within and across calls) and sends them over real gRPC to a real server and PostgreSQL,
while another tenant sends ordinary traffic beside them. It runs in a thread with a blocking
channel, so the server's event loop serves both.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import hypothesis
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from rating_client import RatingClient
from rating_client.errors import decode_rich_status, error_info
from rating_client.gen.rating.v1 import (
    admin_pb2,
    catalog_pb2,
    contract_pb2,
    invoice_pb2,
    ops_pb2,
    rating_pb2,
    rating_pb2_grpc,
)
from rating_service.core.auth import Role
from rating_service.runtime.embedded import free_port
from rating_service.runtime.server import RunningServer, start_server
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn
from tests.conftest import TenantKeys
from tests.integration.api.test_rate_and_debit import ledger_is_balanced
from tests.integration.billing import load_catalog, open_account

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("RATING_FUZZ_EXAMPLES", "400"))
"""Requests per run; `make fuzz` runs many more."""

NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
NEVER_CODES = {code.value[0] for code in NEVER}

CUSTOMER = "fuzz-cus"
NEIGHBOUR = "calm-cus"

# Hostile text: control characters, NULs, huge and empty strings, odd Unicode, and the
# few values that reach deep into the code (the real customer, event types, products).
_hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=20),
    st.sampled_from(["\x00", "a\x00b", "\n", "\u202e", "\ufeff", " ", "١٢٣", "１２"]),
    st.integers(200, 12_000).map(lambda n: "x" * n),
)
_ids = st.one_of(st.sampled_from([f"e{n}" for n in range(6)]), _hostile_text)
_customers = st.one_of(st.just(CUSTOMER), st.just(NEIGHBOUR), _hostile_text)
_event_types = st.one_of(
    st.sampled_from(["api.call", "llm.completion", "embedding.created"]), _hostile_text
)
_decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**60), 10**60).map(str),
    st.sampled_from(
        ["1e15", "1e999999", "-1", "0", "0.0000000000000000000001", "9" * 60, "1_000", " 7 "]
    ),
    _hostile_text,
)
_properties = st.dictionaries(
    st.one_of(st.sampled_from(["tokens", "model"]), _hostile_text),
    st.one_of(_decimals, st.sampled_from(["small", "large"])),
    max_size=4,
)


_fresh_ids = st.builds(lambda: uuid.uuid4().hex)  # fresh every time: a first rating
_holds = st.sampled_from([f"r{n}" for n in range(6)])
_quantities = st.one_of(
    st.integers(0, 10**6).map(str),
    st.decimals(min_value=0, max_value=10**6, places=6).map(str),
    st.just("1e15"),
)


def _mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """Valid most of the time, so requests get deep enough to matter."""
    return st.sampled_from([True, True, True, True, True, False]).flatmap(
        lambda fine: valid if fine else hostile
    )


@st.composite
def _timestamps(draw: st.DrawFn, valid: bool = False) -> Timestamp | None:
    """Near now, or (unless `valid`) unset or any seconds/nanos at all."""
    kind = "now" if valid else draw(st.sampled_from(["unset", "now", "any", "edge"]))
    if kind == "unset":
        return None
    message = Timestamp()
    if kind == "now":
        message.FromDatetime(datetime.now(UTC) - timedelta(seconds=draw(st.integers(-250, 600))))
    elif kind == "edge":
        message.seconds = draw(st.sampled_from([-62135596800, 0, 253402300799, 253402300800]))
        message.nanos = draw(st.sampled_from([0, 999_999_999, 1_000_000_000, -1]))
    else:
        message.seconds = draw(st.integers(-(2**63), 2**63 - 1))
        message.nanos = draw(st.integers(-(2**31), 2**31 - 1))
    return message


@st.composite
def _events(draw: st.DrawFn) -> rating_pb2.UsageEvent:
    """A valid event of the fuzzed customer with up to two of its fields made hostile."""
    event_type = draw(st.sampled_from(["api.call", "llm.completion", "embedding.created"]))
    properties = {} if event_type == "api.call" else {"tokens": draw(_quantities)}
    if event_type == "llm.completion":
        properties["model"] = draw(st.sampled_from(["small", "large"]))
    event = rating_pb2.UsageEvent(
        event_id=draw(st.one_of(_fresh_ids, _ids)),
        customer_id=CUSTOMER,
        event_type=event_type,
        properties=properties,
        timestamp=draw(_timestamps(valid=True)),
    )
    hostile: dict[str, st.SearchStrategy[Any]] = {
        "event_id": _ids,
        "customer_id": _customers,
        "event_type": _event_types,
        "properties": _properties,
        "timestamp": _timestamps(),
    }
    spoiled = draw(_mostly(st.just([]), st.lists(st.sampled_from(sorted(hostile)), max_size=2)))
    for name in spoiled:
        value = draw(hostile[name])
        if name == "properties":
            event.properties.update(value)
        elif name == "timestamp":
            event.ClearField("timestamp")
            if value is not None:
                event.timestamp.CopyFrom(value)
        else:
            setattr(event, name, value)
    return event


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, Message | list[Message]]:
    """(RPC name, request, or a stream's requests) for any RatingService RPC."""
    rpc = draw(
        st.sampled_from(
            [
                "RateAndDebit",
                "BatchRateAndDebit",
                "StreamRateAndDebit",
                "Authorize",
                "Capture",
                "Void",
                "GetBalances",
                "GetUsage",
                "PreviewInvoice",
            ]
        )
    )
    request: Message
    if rpc == "RateAndDebit":
        request = rating_pb2.RateAndDebitRequest(event=draw(_events()))
    elif rpc == "BatchRateAndDebit":
        request = rating_pb2.BatchRateAndDebitRequest(events=draw(st.lists(_events(), max_size=8)))
    elif rpc == "StreamRateAndDebit":
        return rpc, [
            rating_pb2.StreamRateAndDebitRequest(event=event)
            for event in draw(st.lists(_events(), max_size=8))
        ]
    elif rpc == "Authorize":
        request = rating_pb2.AuthorizeRequest(
            reservation_id=draw(_mostly(_holds, _ids)),
            customer_id=draw(_mostly(st.just(CUSTOMER), _customers)),
            product_key=draw(_mostly(st.sampled_from(["calls", "tokens"]), _hostile_text)),
            amount=draw(_mostly(_quantities, _decimals)),
            ttl_seconds=draw(_mostly(st.integers(0, 86_400), st.integers(-(2**31), 2**31 - 1))),
        )
        at = draw(_mostly(_timestamps(valid=True), _timestamps()))
        if at is not None:
            request.timestamp.CopyFrom(at)
    elif rpc == "Capture":
        request = rating_pb2.CaptureRequest(
            reservation_id=draw(_mostly(_holds, _ids)), event=draw(_events())
        )
    elif rpc == "Void":
        request = rating_pb2.VoidRequest(reservation_id=draw(_mostly(_holds, _ids)))
    elif rpc in ("GetBalances", "GetUsage"):
        reading: Any = getattr(rating_pb2, f"{rpc}Request")(
            customer_id=draw(_mostly(st.just(CUSTOMER), _customers))
        )
        at = draw(_mostly(st.none(), _timestamps()))
        if at is not None:
            reading.at.CopyFrom(at)
        request = reading
    else:
        request = rating_pb2.PreviewInvoiceRequest(
            customer_id=draw(_mostly(st.just(CUSTOMER), _customers)),
            contract_id=draw(st.one_of(st.just(""), st.just(""), _hostile_text)),
        )
    return rpc, request


@dataclass
class CalmTraffic:
    """Ordinary traffic of another tenant, every answer counted."""

    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, client: RatingClient) -> None:
        """Rate one ordinary call after another until told to stop."""
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                await client.rate_and_debit(
                    event_id=f"calm-{n}",
                    customer_id=NEIGHBOUR,
                    event_type="api.call",
                    properties={},
                )
                self.ok += 1
            except Exception as error:  # every failure of an ordinary call is a finding
                self.failures.append(repr(error))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No reservation sweeps: only the request under test may change what is stored."""
    return replace(settings, reservation_sweep_seconds=3600.0)


@pytest.fixture
async def accounts(client: RatingClient, neighbour: RatingClient) -> None:
    """The fuzzed customer and the calm one, each on a contract with plenty of credit."""
    for rating, customer in ((client, CUSTOMER), (neighbour, NEIGHBOUR)):
        account = await open_account(rating, customer, overage_policy="arrears")
        await account.grant("1000000", grant_id="plenty")


async def test_no_request_gets_internal_writes_when_refused_or_hurts_a_neighbour(
    server: RunningServer,
    acme: TenantKeys,
    database_url: str,
    neighbour: RatingClient,
    accounts: None,
) -> None:
    loop = asyncio.get_running_loop()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    calm = CalmTraffic()
    traffic = asyncio.create_task(calm.run(neighbour))

    def state() -> tuple[Any, ...]:
        """What the fuzzed tenant has written: rated events, transfers, holds, money moved."""
        row = asyncio.run_coroutine_threadsafe(_state(conn, acme.tenant_id), loop).result(30)
        return tuple(row)

    answers: Counter[str] = Counter()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = rating_pb2_grpc.RatingServiceStub(channel)
    metadata = acme.metadata(Role.ADMIN)

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_requests())
    def one_request(call: tuple[str, Message | list[Message]]) -> None:
        rpc, request = call
        method: Callable[..., Any] = getattr(stub, rpc)
        before = state()
        reply: Any
        try:
            if isinstance(request, list):  # a stream: every answer, until it ends
                reply = list(method(iter(request), metadata=metadata, timeout=20))
            else:
                reply = method(request, metadata=metadata, timeout=20)
        except grpc.RpcError as error:
            answers[f"{rpc} {error.code().name}"] += 1
            assert error.code() not in NEVER, f"{rpc} answered {error.code()}: {error.details()}"
            assert error.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"{rpc} never answered"
            assert state() == before, f"a refused {rpc} wrote something"
            return
        answers[f"{rpc} OK"] += 1
        if rpc in ("BatchRateAndDebit", "StreamRateAndDebit"):
            results = reply if isinstance(request, list) else reply.results
            if isinstance(request, list):
                assert len(results) == len(request), "a streamed event went unanswered"
            codes = [r.error.code for r in results if r.WhichOneof("result") == "error"]
            assert not NEVER_CODES & set(codes), f"a {rpc} item answered {codes}"
            fresh = sum(
                1 for r in results if r.WhichOneof("result") == "response" and not r.response.replay
            )
            assert state()[0] == before[0] + fresh, "rated events ≠ fresh answers"

    try:
        await asyncio.to_thread(one_request)
    finally:
        calm.stop.set()
        await traffic
        channel.close()
        await conn.close()
    print("fuzzed answers:", dict(sorted(answers.items())), "neighbour ok:", calm.ok)
    assert calm.failures == []
    assert calm.ok > 0
    await ledger_is_balanced(database_url)


async def _state(conn: asyncpg.Connection, tenant_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM rated_events WHERE tenant_id = $1),"
        " (SELECT count(*) FROM transfers WHERE tenant_id = $1),"
        " (SELECT count(*) FROM reservations WHERE tenant_id = $1),"
        " (SELECT coalesce(sum(debits_posted + credits_posted + debits_pending"
        "   + credits_pending), 0) FROM accounts WHERE tenant_id = $1)",
        tenant_id,
    )
    assert row is not None
    return row


SERVICES = [
    descriptor.services_by_name[name]
    for descriptor, name in (
        (admin_pb2.DESCRIPTOR, "AdminService"),
        (catalog_pb2.DESCRIPTOR, "CatalogService"),
        (contract_pb2.DESCRIPTOR, "ContractService"),
        (invoice_pb2.DESCRIPTOR, "InvoiceService"),
        (ops_pb2.DESCRIPTOR, "OpsService"),
        (rating_pb2.DESCRIPTOR, "RatingService"),
    )
]
METHODS = [method for service in SERVICES for method in service.methods]

_INTEGER_BOUNDS = {
    FieldDescriptor.TYPE_INT32: 31,
    FieldDescriptor.TYPE_SINT32: 31,
    FieldDescriptor.TYPE_SFIXED32: 31,
    FieldDescriptor.TYPE_INT64: 63,
    FieldDescriptor.TYPE_SINT64: 63,
    FieldDescriptor.TYPE_SFIXED64: 63,
}
_UNSIGNED_BOUNDS = {
    FieldDescriptor.TYPE_UINT32: 32,
    FieldDescriptor.TYPE_FIXED32: 32,
    FieldDescriptor.TYPE_UINT64: 64,
    FieldDescriptor.TYPE_FIXED64: 64,
}


def _scalar(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """Any value of one (non-repeated) field's type."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        return _message(field.message_type, depth + 1)
    if kind == FieldDescriptor.TYPE_STRING:
        return st.one_of(_hostile_text, _decimals, st.just(CUSTOMER))
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-(2**31), 2**31 - 1)  # proto3 enums are open: any number
    if kind in _INTEGER_BOUNDS:
        bits = _INTEGER_BOUNDS[kind]
        return st.integers(-(2**bits), 2**bits - 1)
    return st.integers(0, 2 ** _UNSIGNED_BOUNDS[kind] - 1)


def _message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of this type: each field unset or any value, nested up to three deep."""
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return _timestamps().map(lambda at: at if at is not None else Timestamp())
    if depth > 3:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for member in descriptor.fields:
        if member.message_type is not None and member.message_type.GetOptions().map_entry:
            key, value = (member.message_type.fields_by_name[n] for n in ("key", "value"))
            entries: st.SearchStrategy[Any] = st.dictionaries(
                _scalar(key, depth), _scalar(value, depth), max_size=3
            )
            optional[member.name] = entries
        elif member.is_repeated:
            optional[member.name] = st.lists(_scalar(member, depth), max_size=3)
        else:
            optional[member.name] = _scalar(member, depth)
    # A oneof takes one member: the last one set wins, as protobuf itself would have it.
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: cls(**values))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _raw(answer: bytes) -> bytes:
    return answer


@pytest.fixture
def any_service_settings(settings: Settings) -> Settings:
    """Temporal at a port where nothing listens: ops RPCs must say UNAVAILABLE, not fail."""
    return replace(settings, temporal_address=f"127.0.0.1:{free_port()}")


async def test_no_rpc_of_any_service_answers_internal(
    any_service_settings: Settings, acme: TenantKeys, database_url: str
) -> None:
    await load_catalog(database_url, acme.tenant_id)
    running = await start_server(any_service_settings)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    answers: Counter[str] = Counter()

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def one_request(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(METHODS), label="method")
        role = data.draw(st.sampled_from(sorted(Role)), label="role")
        path = f"/{method.containing_service.full_name}/{method.name}"
        try:
            if method.client_streaming:
                requests = data.draw(st.lists(_message(method.input_type), max_size=3))
                stream = channel.stream_stream(path, _serialize, _raw)
                replies = list(stream(iter(requests), metadata=acme.metadata(role), timeout=20))
                # Each answer of a stream may carry an event's error: never INTERNAL either.
                output = message_factory.GetMessageClass(method.output_type)
                for raw in replies:
                    reply: Any = output.FromString(raw)
                    if "error" in reply.DESCRIPTOR.fields_by_name and reply.HasField("error"):
                        assert reply.error.code not in NEVER_CODES, reply.error.message
            else:
                request = data.draw(_message(method.input_type), label="request")
                call = channel.unary_unary(path, _serialize, _raw)
                call(request, metadata=acme.metadata(role), timeout=20)
        except grpc.RpcError as error:
            answers[f"{method.name} {error.code().name}"] += 1
            assert error.code() not in NEVER, f"{method.name}: {error.details()}"
            return
        answers[f"{method.name} OK"] += 1

    try:
        await asyncio.to_thread(one_request)
    finally:
        channel.close()
        await running.stop(0.5)
    print("answers:", dict(sorted(answers.items())))


async def test_bytes_that_are_no_request_are_refused_as_malformed_after_authentication(
    any_service_settings: Settings, acme: TenantKeys
) -> None:
    running = await start_server(any_service_settings)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    # Field 1, length-delimited, announcing 127 bytes that never come: no message parses it.
    truncated = b"\x0a\x7f"

    def send(path: str, metadata: Any) -> tuple[str, str]:
        call = channel.unary_unary(path, _raw, _raw)
        with pytest.raises(grpc.RpcError) as refused:
            call(truncated, metadata=metadata, timeout=20)
        error: Any = refused.value
        status = decode_rich_status(error.trailing_metadata())
        info = None if status is None else error_info(status)
        return error.code().name, "" if info is None else info.reason

    try:
        for method in (m for m in METHODS if not m.client_streaming):
            path = f"/{method.containing_service.full_name}/{method.name}"
            admin = await asyncio.to_thread(send, path, acme.metadata(Role.ADMIN))
            assert admin[0] in {"INVALID_ARGUMENT", "PERMISSION_DENIED"}, (method.name, admin)
            if admin[0] == "INVALID_ARGUMENT":
                assert admin[1] == "MALFORMED_REQUEST", (method.name, admin)
            stranger = await asyncio.to_thread(send, path, ())
            assert stranger[0] == "UNAUTHENTICATED", (method.name, stranger)
    finally:
        channel.close()
        await running.stop(0.5)
