"""AmendContract and SetSeats over real gRPC and PostgreSQL.

An amendment mid-period: events before and after it are priced by their own version (a late
event too), the preview prorates the fee across it to the cent, GetContract shows the
history; retries are idempotent; the wrong role, another tenant and bad input change nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf import json_format
from grpc import aio

from rating_client.client import usage_event
from rating_client.gen.rating.v1 import (
    contract_pb2,
    contract_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
)
from rating_service.core.auth import Role
from rating_service.runtime.server import RunningServer
from tests.conftest import TenantKeys, refusal
from tests.integration.api.test_contracts import apply_example_catalog

TEN_DAYS = 10 * 24 * 3600


def midnight(days_from_today: int) -> datetime:
    """Midnight UTC, some days from today."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=days_from_today)


def amend_request(contract_id: str, request_id: str, **fields: Any) -> Any:
    return json_format.ParseDict(
        {"contract_id": contract_id, "request_id": request_id, **fields},
        contract_pb2.AmendContractRequest(),
    )


UPGRADE: dict[str, Any] = {
    "overrides": {
        "items": [
            {
                "product_key": "support-resolutions",
                "effective_from": "2020-01-01T00:00:00Z",
                "replace_price": {"model": "per_unit", "unit_price": "0.50"},
            },
            {
                "product_key": "platform-fee",
                "effective_from": "2020-01-01T00:00:00Z",
                "replace_price": {"model": "flat_fee", "amount": "1000", "timing": "in_advance"},
            },
        ]
    },
    "spend_cap": {"amount": "5000"},
}


async def test_an_amendment_prices_each_event_by_its_version_and_prorates_the_fee(
    server: RunningServer, channel: aio.Channel, acme: TenantKeys, globex: TenantKeys
) -> None:
    """Ten-day periods from midnight two days ago; the amendment takes effect in a moment.

    Support resolutions: $0.99 before, $0.50 after. Platform fee, in advance: $500 before,
    $1,000 after. Fees prorate by UTC day, the day of the change counting for the new terms:
    two old days and eight new ones (unless the test straddles midnight). The preview of this
    period's invoice (composed at its end):
    - usage: 0.99 (an hour ago) + 0.99 (two hours ago, sent after the amendment: late, still
      the old price) + 0.50 (after it) = 2.48;
    - the fee charged on the opening invoice for the whole period, 8/10 of it unused:
      −500 × 8/10 = −400.00, and the amended fee for the same eight days: 1000 × 8/10 = 800.00;
    - the next period in advance at the new fee: 1,000.00. Total 1,402.48.
    """
    await apply_example_catalog(server, acme)
    contracts = contract_pb2_grpc.ContractServiceStub(channel)
    rating = rating_pb2_grpc.RatingServiceStub(channel)
    admin, rater = acme.metadata(Role.ADMIN), acme.metadata(Role.RATER)
    await contracts.CreateCustomer(
        contract_pb2.CreateCustomerRequest(customer_id="upgrader", name="Upgrader"),
        metadata=admin,
    )
    start = midnight(-2)
    created = await contracts.CreateContract(
        contract_pb2.CreateContractRequest(
            contract=json_format.ParseDict(
                {
                    "customer_id": "upgrader",
                    "term_start": start.isoformat(),
                    "billing_anchor": {"day": 1},
                    "billing_frequency": "monthly",
                    "billing_interval_seconds": TEN_DAYS,
                    "invoice_currency": "USD",
                    "rate_card_key": "list",
                    "overage_policy": "arrears",
                    "seats": 3,
                },
                contract_pb2.Contract(),
            )
        ),
        metadata=admin,
    )
    contract_id = created.contract.contract_id

    async def resolve(event_id: str, at: datetime) -> Decimal:
        event = usage_event(
            event_id, "upgrader", "support.conversation.closed", {"outcome": "resolved"}, at
        )
        answer = await rating.RateAndDebit(
            rating_pb2.RateAndDebitRequest(event=event), metadata=rater
        )
        return Decimal(answer.charge)

    now = datetime.now(UTC)
    change = now + timedelta(seconds=2)
    assert await resolve("before", now - timedelta(hours=1)) == Decimal("0.99")

    request = amend_request(
        contract_id,
        "upgrade-1",
        effective="at",
        effective_at=change.isoformat(),
        terms=UPGRADE,
        reason="moved to the pro plan",
    )
    # Refused to a rater key, and to another tenant (which does not see the contract).
    assert (await refusal(contracts.AmendContract(request, metadata=rater)))[0] == (
        "PERMISSION_DENIED"
    )
    assert (await refusal(contracts.AmendContract(request, metadata=globex.metadata(Role.ADMIN))))[
        :2
    ] == ("NOT_FOUND", "CONTRACT_NOT_FOUND")
    # Bad input names its field.
    for bad, field in (
        (
            {"effective": "at", "effective_at": (now - timedelta(days=1)).isoformat()},
            "effective_at",
        ),
        ({"effective": "yesterday"}, "effective"),
        ({"terms": {"spend_cap": {"amount": "-1"}}}, "terms.spend_cap"),
        ({"terms": {"rate_card_key": "gold"}}, "terms.rate_card_key"),
        ({"terms": {}}, "terms"),
    ):
        wrong = amend_request(contract_id, "bad", **({"terms": UPGRADE} | bad))
        code, _, fields = await refusal(contracts.AmendContract(wrong, metadata=admin))
        assert (code, field in fields) == ("INVALID_ARGUMENT", True), (bad, fields)
    unchanged = await contracts.GetContract(
        contract_pb2.GetContractRequest(contract_id=contract_id), metadata=rater
    )
    assert list(unchanged.contract.amendments) == []

    answer = await contracts.AmendContract(request, metadata=admin)
    assert not answer.replay
    assert answer.amendment.amendment_id == "upgrade-1"
    assert answer.amendment.effective_at.ToDatetime(UTC) == change
    assert answer.amendment.terms.spend_cap.amount == "5000"
    again = await contracts.AmendContract(request, metadata=admin)
    assert again.replay and again.amendment == answer.amendment
    other = amend_request(contract_id, "upgrade-1", effective="now", terms=UPGRADE)
    assert (await refusal(contracts.AmendContract(other, metadata=admin)))[:2] == (
        "ALREADY_EXISTS",
        "IDEMPOTENCY_KEY_MISMATCH",
    )

    assert await resolve("after", change + timedelta(seconds=1)) == Decimal("0.50")
    assert await resolve("late", now - timedelta(hours=2)) == Decimal("0.99")

    shown = await contracts.GetContract(
        contract_pb2.GetContractRequest(contract_id=contract_id), metadata=rater
    )
    assert [a.amendment_id for a in shown.contract.amendments] == ["upgrade-1"]
    assert shown.contract.amendments[0].reason == "moved to the pro plan"
    assert shown.contract.spend_cap == ""  # the terms at creation; the history holds the rest

    preview = await rating.PreviewInvoice(
        rating_pb2.PreviewInvoiceRequest(contract_id=contract_id), metadata=rater
    )
    lines = [(line.description, line.amount) for line in preview.invoice.lines]
    day = change.date().isoformat()
    new_days = 10 - (change.date() - start.date()).days  # 8, unless midnight passed meanwhile
    unused, amended = Decimal(-500 * new_days) / 10, Decimal(1000 * new_days) / 10
    assert (f"Platform fee: unused part, changed from {day}", f"{unused:.2f}") in lines
    assert (f"Platform fee: as amended, from {day}", f"{amended:.2f}") in lines
    assert ("Platform fee", "1000.00") in lines
    expected = Decimal("2.48") + unused + amended + 1000
    assert Decimal(preview.invoice.total) == expected
    if new_days == 8:
        assert preview.invoice.total == "1402.48"


async def test_seats_change_by_amendment_and_keep_their_history(
    server: RunningServer, channel: aio.Channel, acme: TenantKeys
) -> None:
    await apply_example_catalog(server, acme)
    contracts = contract_pb2_grpc.ContractServiceStub(channel)
    admin = acme.metadata(Role.ADMIN)
    await contracts.CreateCustomer(
        contract_pb2.CreateCustomerRequest(customer_id="seated", name="Seated"), metadata=admin
    )
    created = await contracts.CreateContract(
        contract_pb2.CreateContractRequest(
            contract=json_format.ParseDict(
                {
                    "customer_id": "seated",
                    "term_start": midnight(-2).isoformat(),
                    "billing_anchor": {"day": 1},
                    "billing_frequency": "monthly",
                    "invoice_currency": "USD",
                    "rate_card_key": "list",
                    "overage_policy": "arrears",
                    "seats": 3,
                },
                contract_pb2.Contract(),
            )
        ),
        metadata=admin,
    )
    contract_id = created.contract.contract_id
    assert created.contract.seats == 3
    seats = contract_pb2.SetSeatsRequest
    up = await contracts.SetSeats(
        seats(contract_id=contract_id, request_id="s1", seats=10), metadata=admin
    )
    down = await contracts.SetSeats(
        seats(contract_id=contract_id, request_id="s2", seats=4, effective="next_period_start"),
        metadata=admin,
    )
    assert up.amendment.terms.seats == 10 and down.amendment.terms.seats == 4
    assert down.amendment.effective_at.ToDatetime(UTC) > up.amendment.effective_at.ToDatetime(UTC)
    assert [a.terms.seats for a in down.contract.amendments] == [10, 4]
    code, _, fields = await refusal(
        contracts.SetSeats(
            seats(contract_id=contract_id, request_id="s3", seats=-1), metadata=admin
        )
    )
    assert (code, fields) == ("INVALID_ARGUMENT", {"terms.seats"})
    code, _, fields = await refusal(
        contracts.CreateContract(
            contract_pb2.CreateContractRequest(contract=down.contract), metadata=admin
        )
    )
    assert code == "INVALID_ARGUMENT" and "contract.amendments" in fields
