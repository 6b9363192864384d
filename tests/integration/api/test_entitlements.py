"""CheckEntitlement over real gRPC and PostgreSQL: each kind of feature from the rate card,
the metered one following the period's usage as events are rated, and the contract's own
grants after an amendment; refused without a feature or for another tenant's customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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


def answer_of(response: rating_pb2.CheckEntitlementResponse) -> dict[str, Any]:
    fields: dict[str, Any] = json_format.MessageToDict(response, preserving_proto_field_name=True)
    fields.pop("period_start", None)
    fields.pop("period_end", None)
    fields["allowed"] = response.allowed  # proto3 leaves a False out
    return fields


async def test_each_kind_of_feature_and_a_contract_s_own_grants(
    server: RunningServer, channel: aio.Channel, acme: TenantKeys, globex: TenantKeys
) -> None:
    """The example card grants fine-tuning (on), 20 seats and 1,000 HD images a period."""
    await apply_example_catalog(server, acme)
    contracts = contract_pb2_grpc.ContractServiceStub(channel)
    rating = rating_pb2_grpc.RatingServiceStub(channel)
    admin, rater = acme.metadata(Role.ADMIN), acme.metadata(Role.RATER)
    await contracts.CreateCustomer(
        contract_pb2.CreateCustomerRequest(customer_id="entitled", name="Entitled"),
        metadata=admin,
    )
    created = await contracts.CreateContract(
        contract_pb2.CreateContractRequest(
            contract=json_format.ParseDict(
                {
                    "customer_id": "entitled",
                    "term_start": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                    "billing_anchor": {"day": 1},
                    "billing_frequency": "monthly",
                    "invoice_currency": "USD",
                    "rate_card_key": "list",
                    "overage_policy": "arrears",
                    "features": {
                        "hd-images": {
                            "kind": "metered",
                            "product_key": "image-generation",
                            "limit": "3",
                        }
                    },
                },
                contract_pb2.Contract(),
            )
        ),
        metadata=admin,
    )

    async def check(feature: str) -> dict[str, Any]:
        request = rating_pb2.CheckEntitlementRequest(customer_id="entitled", feature_key=feature)
        return answer_of(await rating.CheckEntitlement(request, metadata=rater))

    async def image(event_id: str) -> None:
        event = usage_event(event_id, "entitled", "image.generated", {"quality": "hd"})
        await rating.RateAndDebit(rating_pb2.RateAndDebitRequest(event=event), metadata=rater)

    assert await check("fine-tuning") == {
        "feature_key": "fine-tuning",
        "allowed": True,
        "kind": "boolean",
    }
    assert await check("seats") == {
        "feature_key": "seats",
        "allowed": True,
        "kind": "limit",
        "limit": "20",
        "remaining": "20",
    }
    never = {"feature_key": "voice-cloning", "allowed": False}  # kind empty: never granted
    assert await check("voice-cloning") == never
    # The contract's own grant (3 a period) over the card's 1,000; usage counted as rated.
    metered = {"feature_key": "hd-images", "allowed": True, "kind": "metered", "limit": "3"}
    assert await check("hd-images") == metered | {"used": "0", "remaining": "3"}
    await image("img-1")
    await image("img-2")
    assert await check("hd-images") == metered | {"used": "2", "remaining": "1"}
    await image("img-3")
    assert await check("hd-images") == metered | {
        "allowed": False,
        "used": "3",
        "remaining": "0",
    }

    # An amendment from now: fine-tuning off, 10 HD images a period; the card's seats stay.
    amend = json_format.ParseDict(
        {
            "contract_id": created.contract.contract_id,
            "request_id": "features-1",
            "terms": {
                "features": {
                    "items": {
                        "fine-tuning": {"kind": "boolean", "enabled": False},
                        "hd-images": {
                            "kind": "metered",
                            "product_key": "image-generation",
                            "limit": "10",
                        },
                    }
                }
            },
        },
        contract_pb2.AmendContractRequest(),
    )
    await contracts.AmendContract(amend, metadata=admin)
    assert await check("fine-tuning") == {
        "feature_key": "fine-tuning",
        "allowed": False,
        "kind": "boolean",
    }
    assert await check("hd-images") == metered | {"limit": "10", "used": "3", "remaining": "7"}
    assert (await check("seats"))["remaining"] == "20"

    empty = rating_pb2.CheckEntitlementRequest(customer_id="entitled")
    code, _, fields = await refusal(rating.CheckEntitlement(empty, metadata=rater))
    assert (code, fields) == ("INVALID_ARGUMENT", {"feature_key"})
    other = rating_pb2.CheckEntitlementRequest(customer_id="entitled", feature_key="seats")
    code, *_ = await refusal(rating.CheckEntitlement(other, metadata=globex.metadata(Role.RATER)))
    assert code == "FAILED_PRECONDITION"  # globex has no customer of that id in force
