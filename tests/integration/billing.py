"""Test setup for rating: a small catalog, a customer and a contract with pools, via the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from rating_client import RatingClient, usage_event
from rating_client.gen.rating.v1 import contract_pb2, rating_pb2
from rating_service.core.auth import Caller, Role
from rating_service.services.catalog import Catalogs
from rating_service.store.catalog import CatalogStore
from rating_service.store.database import create_engine

# A catalog whose arithmetic is easy to follow: `calls` cost 1 each (count meter), `tokens`
# are priced per model, `embeddings` have volume tiers (so a charge can be negative).
CATALOG = {
    "products": [
        {"key": "calls", "tags": ["api"], "meter": {"event_type": "api.call"}},
        {
            "key": "tokens",
            "tags": ["llm"],
            "meter": {
                "event_type": "llm.completion",
                "quantity_property": "tokens",
                "dimensions": ["model"],
            },
        },
        {
            "key": "embeddings",
            "meter": {"event_type": "embedding.created", "quantity_property": "tokens"},
        },
    ],
    "rate_cards": [
        {
            "key": "list",
            "version": 1,
            "effective_from": "2020-01-01T00:00:00+00:00",
            "effective_until": None,
            "pricing_unit": "USD",
            "prices": {
                "calls": {"model": "per_unit", "unit_price": "1"},
                "tokens": {
                    "model": "matrix",
                    "dimensions": ["model"],
                    "cells": [
                        {
                            "match": {"model": "small"},
                            "price": {"model": "per_unit", "unit_price": "0.001"},
                        },
                        {
                            "match": {"model": "large"},
                            "price": {"model": "per_unit", "unit_price": "0.01"},
                        },
                    ],
                },
                "embeddings": {
                    "model": "volume",
                    "tiers": [
                        {"up_to": "100", "unit_price": "0.10"},
                        {"up_to": None, "unit_price": "0.05"},
                    ],
                },
            },
        }
    ],
}


def ts(at: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(at)
    return message


async def load_catalog(database_url: str, tenant_id: str) -> None:
    """Apply the test catalog to a tenant."""
    engine = create_engine(database_url, pool_size=1)
    try:
        caller = Caller(tenant_id, "test", Role.ADMIN)
        await Catalogs(CatalogStore(engine)).apply(caller, CATALOG, dry_run=False)
    finally:
        await engine.dispose()


@dataclass
class Account:
    """A customer with a contract in force, and a client to rate with."""

    client: RatingClient
    customer_id: str
    contract_id: str

    async def grant(
        self,
        amount: str,
        *,
        grant_id: str,
        priority: int = 0,
        cost_basis: str | None = None,
        scope: tuple[str, ...] = (),
        starts_at: datetime | None = None,
        expires_at: datetime | None = None,
        kind: str = "credit",
    ) -> str:
        """Add a pool; its id."""
        request = contract_pb2.AddCommitmentRequest(
            grant_id=grant_id,
            contract_id=self.contract_id,
            kind=kind,
            amount=amount,
            priority=priority,
            scope=list(scope),
        )
        if cost_basis is not None:
            request.cost_basis = cost_basis
        if starts_at is not None:
            request.starts_at.CopyFrom(ts(starts_at))
        if expires_at is not None:
            request.expires_at.CopyFrom(ts(expires_at))
        reply = await self.client.call(self.client.contracts.AddCommitment, request)
        return reply.commitment.pool_id

    async def call(
        self, event_id: str, at: datetime | None = None, **properties: str
    ) -> rating_pb2.RateAndDebitResponse:
        """Rate one `api.call` (costs 1) at `at` (default now)."""
        return await self.client.rate_and_debit(
            event_id=event_id,
            customer_id=self.customer_id,
            event_type="api.call",
            properties=properties,
            timestamp=at,
        )

    def event(self, event_id: str, event_type: str, **properties: str) -> rating_pb2.UsageEvent:
        """A usage event of this customer, stamped now."""
        return usage_event(event_id, self.customer_id, event_type, properties)

    async def balances(self) -> dict[str, Decimal]:
        """pool id → remaining."""
        reply = await self.client.balances(self.customer_id)
        return {p.pool_id: Decimal(p.remaining) for p in reply.pools}


async def open_account(
    client: RatingClient,
    customer_id: str,
    *,
    overage_policy: str = "block",
    spend_cap: str | None = None,
    alert_thresholds: list[dict[str, object]] | None = None,
    overrides: list[dict[str, object]] | None = None,
    rate_limits: list[dict[str, object]] | None = None,
) -> Account:
    """Create a customer and a monthly contract in force since yesterday."""
    await client.call(
        client.contracts.CreateCustomer,
        contract_pb2.CreateCustomerRequest(customer_id=customer_id, name=customer_id),
    )
    terms: dict[str, object] = {
        "customer_id": customer_id,
        "term_start": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "billing_anchor": {"day": 1},
        "billing_frequency": "monthly",
        "invoice_currency": "USD",
        "rate_card_key": "list",
        "overage_policy": overage_policy,
        "alert_thresholds": alert_thresholds or [],
        "overrides": overrides or [],
        "rate_limits": rate_limits or [],
    }
    if spend_cap is not None:
        terms["spend_cap"] = spend_cap
    contract = json_format.ParseDict(terms, contract_pb2.Contract())
    reply = await client.call(
        client.contracts.CreateContract, contract_pb2.CreateContractRequest(contract=contract)
    )
    return Account(client, customer_id, reply.contract.contract_id)
