"""The chaos tenant: keys, example catalog, a contract per kind of customer, a webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chaos_options import Options
from chaos_stack import CHANNEL_OPTIONS, WEBHOOK_SECRET_KEYS, Stack
from google.protobuf import json_format
from grpc import aio

from rating_client.gen.rating.v1 import contract_pb2, contract_pb2_grpc

TENANT = "chaos"


@dataclass(frozen=True)
class Customer:
    """A chaos customer: its contract terms and pools, and its share of the traffic."""

    name: str
    weight: float
    overage_policy: str
    pools: tuple[dict[str, Any], ...]
    extra: dict[str, Any] = field(default_factory=dict)


CUSTOMERS = (
    Customer(
        "hot",
        0.55,
        "block",
        ({"kind": "prepaid_commit", "amount": "1000000"},),
        {"late_usage": "roll_forward"},
    ),
    Customer("arrears", 0.12, "arrears", ({"kind": "credit", "amount": "0.50"},)),
    Customer("block", 0.12, "block", ({"kind": "credit", "amount": "1.00"},)),
    Customer(
        "split",
        0.11,
        "arrears",
        (
            {"kind": "credit", "amount": "0.30", "priority": 0},
            {"kind": "prepaid_commit", "amount": "100", "priority": 1},
        ),
        {"spend_cap": "0.40"},
    ),
    Customer(
        "recharge",
        0.10,
        "block",
        ({"kind": "credit", "amount": "0.30"},),
        {"auto_recharge": {"threshold": "0.20", "amount": "0.50"}},
    ),
)


@dataclass
class Tenant:
    """What the load needs: keys, customer ids, contracts, billing times."""

    tenant_id: str
    admin_token: str
    rater_token: str
    customers: dict[str, str]
    """customer name → customer id."""
    contracts: dict[str, str]
    """customer name → contract id."""
    term_start: datetime
    webhook_secret: str = ""


async def prepare_tenant(stack: Stack, opts: Options, webhook_url: str) -> Tenant:
    """Tenant and keys (bootstrap), example catalog, webhook endpoint, then contracts by API."""
    from rating_service.cli.catalog_file import read_catalog_file
    from rating_service.cli.dev import EXAMPLE_CATALOG
    from rating_service.core.auth import Caller, Role, issue_key
    from rating_service.outbox.topics import NOTIFICATION_TOPICS
    from rating_service.runtime.bootstrap import bootstrap
    from rating_service.settings import Settings

    settings = Settings(database_url=stack.database_url, webhook_secret_keys=WEBHOOK_SECRET_KEYS)
    async with bootstrap(settings) as built:
        store = built.tenants
        tenant = await store.create_tenant(TENANT, actor="rating chaos")
        now = datetime.now(UTC)
        admin = issue_key(tenant.tenant_id, Role.ADMIN, "chaos admin", now)
        rater = issue_key(tenant.tenant_id, Role.RATER, "chaos callers", now)
        await store.add_key(admin.key, actor="rating chaos")
        await store.add_key(rater.key, actor="rating chaos")
        caller = Caller(tenant.tenant_id, "rating chaos", Role.ADMIN)
        await built.catalogs.apply(caller, read_catalog_file(EXAMPLE_CATALOG), dry_run=False)
        added = await built.webhooks.add_endpoint(
            tenant.tenant_id, webhook_url, NOTIFICATION_TOPICS, "rating chaos"
        )
    start = datetime.now(UTC).replace(microsecond=0)
    customers, contracts = {}, {}
    metadata = (("authorization", f"Bearer {admin.token}"),)
    async with aio.insecure_channel(stack.addresses[0], options=CHANNEL_OPTIONS) as channel:
        api = contract_pb2_grpc.ContractServiceStub(channel)
        for customer in CUSTOMERS:
            customer_id = f"{customer.name}-{secrets.token_hex(3)}"
            await api.CreateCustomer(
                contract_pb2.CreateCustomerRequest(customer_id=customer_id, name=customer.name),
                metadata=metadata,
                timeout=10,
            )
            terms: dict[str, Any] = {
                "customer_id": customer_id,
                "term_start": start.isoformat(),
                "billing_anchor": {"day": 1},
                "billing_frequency": "monthly",
                "billing_interval_seconds": opts.period_seconds,
                "invoice_currency": "USD",
                "rate_card_key": "list",
                "overage_policy": customer.overage_policy,
                "payment_method": "pm_ok",
                "overrides": [
                    {
                        "product_key": "platform-fee",
                        "effective_from": start.isoformat(),
                        # In arrears and small: each period's invoice carries a fee and usage.
                        "replace_price": {
                            "model": "flat_fee",
                            "amount": "1",
                            "timing": "in_arrears",
                        },
                    }
                ],
                "alert_thresholds": [
                    {"threshold_id": "low", "kind": "balance_below", "amount": "0.25"}
                ],
                **customer.extra,
            }
            reply = await api.CreateContract(
                contract_pb2.CreateContractRequest(
                    contract=json_format.ParseDict(terms, contract_pb2.Contract())
                ),
                metadata=metadata,
                timeout=10,
            )
            contract_id = reply.contract.contract_id
            for n, terms_of_pool in enumerate(customer.pools):
                request = json_format.ParseDict(
                    {
                        "grant_id": f"{customer_id}-pool-{n}",
                        "contract_id": contract_id,
                        **terms_of_pool,
                    },
                    contract_pb2.AddCommitmentRequest(),
                )
                await api.AddCommitment(request, metadata=metadata, timeout=10)
            customers[customer.name] = customer_id
            contracts[customer.name] = contract_id
    return Tenant(
        tenant.tenant_id, admin.token, rater.token, customers, contracts, start, added.secret
    )


class WebhookReceiver:
    """A local endpoint that verifies each delivery and counts 2xx answers per idempotency id."""

    def __init__(self) -> None:
        self.secret = ""
        self.delivered: Counter[str] = Counter()
        self.refused = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen on a free port; the URL."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/chaos"

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from rating_service.services.webhook import (
            EVENT_ID_HEADER,
            SIGNATURE_HEADER,
            InvalidSignature,
            verify_signature,
        )

        status = "400 Bad Request"
        try:
            await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if not self.secret:
                status = "503 Service Unavailable"
            else:
                try:
                    verify_signature(self.secret, headers.get(SIGNATURE_HEADER.lower(), ""), body)
                    self.delivered[headers.get(EVENT_ID_HEADER.lower(), "")] += 1
                    status = "204 No Content"
                except InvalidSignature:
                    self.refused += 1
                    status = "401 Unauthorized"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
