"""ContractService over real gRPC and PostgreSQL: customers, contracts, grants and the ledger."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import grpc
import pytest
from google.protobuf import json_format
from grpc import aio

from rating_client.errors import decode_rich_status, field_violations
from rating_client.gen.rating.v1 import contract_pb2, contract_pb2_grpc
from rating_service.cli.catalog_file import read_catalog_file
from rating_service.core.auth import Caller, Role
from rating_service.runtime.server import RunningServer
from rating_service.services.catalog import Catalogs
from rating_service.store.catalog import CatalogStore
from rating_service.store.database import asyncpg_dsn
from tests.conftest import TenantKeys, eventually, status_of
from tests.integration.api.test_catalog import EXAMPLE

if TYPE_CHECKING:
    Stub: TypeAlias = contract_pb2_grpc.ContractServiceAsyncStub

TERMS: dict[str, Any] = {
    "customer_id": "acme-corp",
    "term_start": "2026-01-01T00:00:00Z",
    "term_end": "2027-01-01T00:00:00Z",
    "billing_anchor": {"day": 1, "time": "00:00:00"},
    "billing_frequency": "monthly",
    "invoice_currency": "USD",
    "rate_card_key": "list",
    "overage_policy": "arrears",
    "spend_cap": "10000",
    "overrides": [
        {
            "product_key": "llm-tokens",
            "effective_from": "2026-01-01T00:00:00Z",
            "multiplier": "0.8",
        },
        {
            "tag": "media",
            "effective_from": "2026-01-01T00:00:00Z",
            "effective_until": "2026-07-01T00:00:00Z",
            "replace_price": {"model": "per_unit", "unit_price": "0.03"},
        },
        {
            "product_key": "fine-tuning",
            "effective_from": "2026-03-01T00:00:00Z",
            "replace_tiers": [{"up_to": "100", "unit_price": "5.50"}, {"unit_price": "4.50"}],
        },
    ],
    "alert_thresholds": [
        {"threshold_id": "low-balance", "kind": "balance_below", "amount": "100"},
        {"threshold_id": "cap-80", "kind": "spend_above_cap_percent", "percent": "80"},
    ],
}


def contract(**changes: Any) -> contract_pb2.Contract:
    terms = copy.deepcopy(TERMS)
    terms.update(changes)
    return json_format.ParseDict(
        {k: v for k, v in terms.items() if v is not None}, contract_pb2.Contract()
    )


def as_dict(message: Any) -> dict[str, Any]:
    fields: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return fields


async def refusal(call: object) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    code, reason = status_of(refused.value)
    status = decode_rich_status(refused.value.trailing_metadata())
    return code, reason, {} if status is None else field_violations(status)


@pytest.fixture
def stub(channel: aio.Channel) -> Stub:
    return contract_pb2_grpc.ContractServiceStub(channel)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    yield conn
    await conn.close()


async def apply_example_catalog(server: RunningServer, tenant: TenantKeys) -> None:
    caller = Caller(tenant.tenant_id, "test", Role.ADMIN)
    document = read_catalog_file(EXAMPLE)
    await Catalogs(CatalogStore(server.components.engine)).apply(caller, document, dry_run=False)


@pytest.fixture
async def acme_contract(server: RunningServer, stub: Stub, acme: TenantKeys) -> str:
    """Acme with the example catalog, customer `acme-corp` and its 2026 contract's id."""
    await apply_example_catalog(server, acme)
    admin = acme.metadata(Role.ADMIN)
    await stub.CreateCustomer(
        contract_pb2.CreateCustomerRequest(customer_id="acme-corp", name="Acme Corp"),
        metadata=admin,
    )
    created = await stub.CreateContract(
        contract_pb2.CreateContractRequest(contract=contract()), metadata=admin
    )
    return created.contract.contract_id


def grant(**fields: Any) -> contract_pb2.AddCommitmentRequest:
    request = {"grant_id": "g-1", "kind": "prepaid_commit", "amount": "1000", **fields}
    return json_format.ParseDict(request, contract_pb2.AddCommitmentRequest())


async def account(db: asyncpg.Connection, account_id: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM accounts WHERE account_id = $1", account_id)
    assert row is not None, account_id
    return row


async def assert_ledger_balances(db: asyncpg.Connection, tenant_id: str) -> None:
    """Σ debits = Σ credits over the tenant's accounts, and each total is its transfers' sum."""
    totals = await db.fetchrow(
        "SELECT coalesce(sum(debits_posted), 0) AS debits,"
        " coalesce(sum(credits_posted), 0) AS credits FROM accounts WHERE tenant_id = $1",
        tenant_id,
    )
    assert totals is not None
    assert totals["debits"] == totals["credits"] > 0
    drift = await db.fetch(
        "SELECT a.account_id FROM accounts a WHERE a.tenant_id = $1 AND ("
        " a.debits_posted <> (SELECT coalesce(sum(amount), 0) FROM transfers t"
        "   WHERE t.debit_account_id = a.account_id)"
        " OR a.credits_posted <> (SELECT coalesce(sum(amount), 0) FROM transfers t"
        "   WHERE t.credit_account_id = a.account_id))",
        tenant_id,
    )
    assert drift == []


async def test_customers_and_a_contract_round_trip_with_its_accounts(
    stub: Stub, acme: TenantKeys, acme_contract: str, db: asyncpg.Connection
) -> None:
    admin = acme.metadata(Role.ADMIN)
    got = await stub.GetCustomer(
        contract_pb2.GetCustomerRequest(customer_id="acme-corp"), metadata=admin
    )
    assert (got.customer.customer_id, got.customer.name) == ("acme-corp", "Acme Corp")
    generated = await stub.CreateCustomer(
        contract_pb2.CreateCustomerRequest(name="Initech"), metadata=admin
    )
    assert generated.customer.customer_id.startswith("cus_")
    listed = await stub.ListCustomers(contract_pb2.ListCustomersRequest(), metadata=admin)
    assert sorted(c.customer_id for c in listed.customers) == sorted(
        ["acme-corp", generated.customer.customer_id]
    )
    code, reason, _ = await refusal(
        stub.CreateCustomer(
            contract_pb2.CreateCustomerRequest(customer_id="acme-corp", name="Again"),
            metadata=admin,
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "CUSTOMER_EXISTS")

    fetched = await stub.GetContract(
        contract_pb2.GetContractRequest(contract_id=acme_contract), metadata=admin
    )
    assert acme_contract.startswith("ctr_")
    assert as_dict(fetched.contract) == {
        **TERMS,
        "contract_id": acme_contract,
        "status": "active",
    }
    assert list(fetched.commitments) == []
    listed_contracts = await stub.ListContracts(
        contract_pb2.ListContractsRequest(customer_id="acme-corp"), metadata=admin
    )
    assert [c.contract_id for c in listed_contracts.contracts] == [acme_contract]
    kinds = await db.fetch(
        "SELECT kind, currency FROM accounts WHERE contract_id = $1 ORDER BY kind", acme_contract
    )
    assert [(k["kind"], k["currency"]) for k in kinds] == [
        ("adjustments", "USD"),
        ("breakage", "USD"),
        ("overage_receivable", "USD"),
        ("payments_clearing", "USD"),
        ("promotions", "USD"),
    ]
    row = await db.fetchrow(
        "SELECT status, term_start, term_end FROM contracts WHERE contract_id = $1", acme_contract
    )
    assert row is not None
    assert row["status"] == "active"
    assert row["term_start"].isoformat() == "2026-01-01T00:00:00+00:00"
    audited = await db.fetch(
        "SELECT actor, action, subject FROM audit_log WHERE tenant_id = $1"
        " AND action LIKE 'c%.create' ORDER BY audit_id",
        acme.tenant_id,
    )
    admin_key = acme.tokens[Role.ADMIN].split(".")[0]
    assert [(a["actor"], a["action"], a["subject"]) for a in audited] == [
        (admin_key, "customer.create", "acme-corp"),
        (admin_key, "contract.create", acme_contract),
        (admin_key, "customer.create", generated.customer.customer_id),
    ]


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"spend_cap": "-1"}, "contract.spend_cap", "INVALID_ARGUMENT"),
        ({"spend_cap": "ten"}, "contract.spend_cap", "INVALID_ARGUMENT"),
        ({"billing_frequency": "weekly"}, "contract.billing_frequency", "INVALID_ARGUMENT"),
        ({"term_end": "2025-01-01T00:00:00Z"}, "contract.term_end", "INVALID_ARGUMENT"),
        ({"term_start": None}, "contract.term_start", "INVALID_ARGUMENT"),
        ({"invoice_currency": "XYZ"}, "contract.invoice_currency", "INVALID_ARGUMENT"),
        ({"billing_anchor": {"day": 32}}, "contract.billing_anchor.day", "INVALID_ARGUMENT"),
        (
            {
                "overrides": [
                    {
                        "product_key": "fine-tuning",
                        "effective_from": "2026-01-01T00:00:00Z",
                        "replace_tiers": [{"up_to": "100", "unit_price": "5"}, {"up_to": "50"}],
                    }
                ]
            },
            "contract.overrides[0].replace_tiers[1].unit_price",
            "INVALID_ARGUMENT",
        ),
        (
            {
                "overrides": [
                    {
                        "product_key": "llm-tokens",
                        "effective_from": "2026-01-01T00:00:00Z",
                        "multiplier": "0.8",
                        "replace_price": {"model": "per_unit", "unit_price": "1"},
                    }
                ]
            },
            "contract.overrides[0].multiplier",
            "INVALID_ARGUMENT",
        ),
        (
            {"alert_thresholds": [{"threshold_id": "low", "kind": "balance_below"}]},
            "contract.alert_thresholds[0].amount",
            "INVALID_ARGUMENT",
        ),
        ({"rate_card_key": "nope"}, "contract.rate_card_key", "CATALOG_MISMATCH"),
        ({"invoice_currency": "EUR"}, "contract.invoice_currency", "CATALOG_MISMATCH"),
        (
            {
                "overrides": [
                    {
                        "product_key": "gpu-minutes",
                        "effective_from": "2026-01-01T00:00:00Z",
                        "multiplier": "0.5",
                    }
                ]
            },
            "contract.overrides[0].product_key",
            "CATALOG_MISMATCH",
        ),
    ],
)
async def test_invalid_contracts_name_the_field_and_change_nothing(
    server: RunningServer,
    stub: Stub,
    acme: TenantKeys,
    db: asyncpg.Connection,
    changes: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    await apply_example_catalog(server, acme)
    admin = acme.metadata(Role.ADMIN)
    await stub.CreateCustomer(
        contract_pb2.CreateCustomerRequest(customer_id="acme-corp", name="Acme Corp"),
        metadata=admin,
    )
    code, got_reason, fields = await refusal(
        stub.CreateContract(
            contract_pb2.CreateContractRequest(contract=contract(**changes)), metadata=admin
        )
    )
    assert (code, got_reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert field in fields, fields
    assert await db.fetchval("SELECT count(*) FROM contracts") == 0
    assert await db.fetchval("SELECT count(*) FROM accounts") == 0


async def test_a_contract_needs_an_existing_customer_and_a_term_of_its_own(
    stub: Stub, acme: TenantKeys, acme_contract: str, db: asyncpg.Connection
) -> None:
    admin = acme.metadata(Role.ADMIN)
    code, reason, _ = await refusal(
        stub.CreateContract(
            contract_pb2.CreateContractRequest(contract=contract(customer_id="nobody")),
            metadata=admin,
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    for start, end in [
        ("2026-06-01T00:00:00Z", None),  # evergreen from inside the term
        ("2025-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),  # one second into it
        ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),  # wholly inside it
    ]:
        code, reason, _ = await refusal(
            stub.CreateContract(
                contract_pb2.CreateContractRequest(
                    contract=contract(term_start=start, term_end=end)
                ),
                metadata=admin,
            )
        )
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONTRACT_OVERLAP")
    assert await db.fetchval("SELECT count(*) FROM contracts") == 1
    # Terms are [start, end): the next contract may start the instant this one ends.
    renewal = await stub.CreateContract(
        contract_pb2.CreateContractRequest(
            contract=contract(term_start="2027-01-01T00:00:00Z", term_end=None)
        ),
        metadata=admin,
    )
    assert not renewal.contract.HasField("term_end")
    await stub.CreateCustomer(
        contract_pb2.CreateCustomerRequest(customer_id="globo", name="Globo"), metadata=admin
    )
    await stub.CreateContract(
        contract_pb2.CreateContractRequest(contract=contract(customer_id="globo")),
        metadata=admin,
    )
    listed = await stub.ListContracts(contract_pb2.ListContractsRequest(), metadata=admin)
    assert [(c.customer_id, c.term_start.ToJsonString()) for c in listed.contracts] == [
        ("acme-corp", "2026-01-01T00:00:00Z"),
        ("acme-corp", "2027-01-01T00:00:00Z"),
        ("globo", "2026-01-01T00:00:00Z"),
    ]


async def test_each_kind_of_commitment_funds_its_pool_from_the_right_account(
    stub: Stub, acme: TenantKeys, acme_contract: str, db: asyncpg.Connection
) -> None:
    admin = acme.metadata(Role.ADMIN)
    prepaid = await stub.AddCommitment(
        grant(grant_id="prepaid", contract_id=acme_contract, kind="prepaid_commit", amount="1000"),
        metadata=admin,
    )
    free = await stub.AddCommitment(
        grant(
            grant_id="promo",
            contract_id=acme_contract,
            kind="credit",
            amount="50",
            priority=1,
            scope=["llm-tokens", "embeddings"],
            starts_at="2026-01-01T00:00:00Z",
            expires_at="2026-04-01T00:00:00Z",
            memo="launch promotion",
        ),
        metadata=admin,
    )
    discounted = await stub.AddCommitment(
        grant(
            grant_id="bought",
            contract_id=acme_contract,
            kind="credit",
            amount="100",
            cost_basis="0.8",
        ),
        metadata=admin,
    )
    postpaid = await stub.AddCommitment(
        grant(grant_id="minimum", contract_id=acme_contract, kind="postpaid_commit", amount="5000"),
        metadata=admin,
    )
    assert not any(r.replay for r in (prepaid, free, discounted, postpaid))
    assert (prepaid.commitment.reference, prepaid.commitment.cost_basis) == ("grant:prepaid", "1")
    assert (free.commitment.cost_basis, list(free.commitment.scope)) == (
        "0",
        ["embeddings", "llm-tokens"],
    )
    assert free.commitment.expires_at.ToJsonString() == "2026-04-01T00:00:00Z"

    pools = {
        c.commitment.pool_id: Decimal(c.commitment.amount) for c in (prepaid, free, discounted)
    }
    for pool_id, amount in pools.items():
        pool_account = await account(db, f"pool:{pool_id}")
        assert (pool_account["credits_posted"], pool_account["debits_posted"]) == (amount, 0)
        assert pool_account["flags"] == 1  # debits_must_not_exceed_credits
    # Paid 1000 + 80 (100 at 0.8) from payments clearing, free 50 + 20 from promotions.
    payments = await account(db, f"payments:{acme_contract}")
    promotions = await account(db, f"promotions:{acme_contract}")
    assert payments["debits_posted"] == Decimal("1080")
    assert promotions["debits_posted"] == Decimal("70")
    memo = await db.fetchval(
        "SELECT memo FROM transfers WHERE reference = 'grant:promo' AND tenant_id = $1",
        acme.tenant_id,
    )
    assert memo == "launch promotion"
    assert await db.fetchval(
        "SELECT account_id IS NULL FROM pools WHERE pool_id = $1", postpaid.commitment.pool_id
    )
    assert postpaid.commitment.balance == "0"
    await assert_ledger_balances(db, acme.tenant_id)

    seen = await stub.GetContract(
        contract_pb2.GetContractRequest(contract_id=acme_contract),
        metadata=acme.metadata(Role.RATER),
    )
    # Exact decimals keep their scale: 80.0 paid + 20.0 free is a balance of 100.0.
    assert [(c.kind, c.amount, c.balance, c.pending) for c in seen.commitments] == [
        ("prepaid_commit", "1000", "1000", "0"),
        ("credit", "50", "50", "0"),
        ("credit", "100", "100.0", "0"),
        ("postpaid_commit", "5000", "0", "0"),
    ]
    created_seq = await db.fetch(
        "SELECT created_seq, (definition ->> 'created_seq')::bigint AS stored FROM pools"
        " ORDER BY created_seq"
    )
    assert all(row["created_seq"] == row["stored"] for row in created_seq)


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"amount": "0"}, "amount", "INVALID_ARGUMENT"),
        ({"amount": "-5"}, "amount", "INVALID_ARGUMENT"),
        ({"kind": "gift"}, "kind", "INVALID_ARGUMENT"),
        ({"cost_basis": "1.5"}, "cost_basis", "INVALID_ARGUMENT"),
        ({"grant_id": ""}, "grant_id", "INVALID_ARGUMENT"),
        (
            {"starts_at": "2026-05-01T00:00:00Z", "expires_at": "2026-04-01T00:00:00Z"},
            "expires_at",
            "INVALID_ARGUMENT",
        ),
        ({"scope": ["llm-tokens", "gpu-minutes"]}, "scope", "CATALOG_MISMATCH"),
    ],
)
async def test_invalid_commitments_name_the_field_and_change_nothing(
    stub: Stub,
    acme: TenantKeys,
    acme_contract: str,
    db: asyncpg.Connection,
    fields: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    code, got_reason, violations = await refusal(
        stub.AddCommitment(
            grant(contract_id=acme_contract, **fields), metadata=acme.metadata(Role.ADMIN)
        )
    )
    assert (code, got_reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert field in violations, violations
    assert await db.fetchval("SELECT count(*) FROM pools") == 0
    assert await db.fetchval("SELECT count(*) FROM transfers") == 0


async def test_a_grant_retried_sequentially_or_concurrently_creates_one_pool(
    stub: Stub, acme: TenantKeys, acme_contract: str, db: asyncpg.Connection
) -> None:
    admin = acme.metadata(Role.ADMIN)
    request = grant(grant_id="sequential", contract_id=acme_contract, kind="credit", amount="25")
    answers = [await stub.AddCommitment(request, metadata=admin) for _ in range(20)]
    assert [a.replay for a in answers] == [False] + [True] * 19
    assert len({a.commitment.SerializeToString() for a in answers}) == 1

    burst = grant(grant_id="burst", contract_id=acme_contract, kind="credit", amount="75")
    concurrent = await asyncio.gather(
        *(stub.AddCommitment(burst, metadata=admin) for _ in range(20))
    )
    assert sorted(a.replay for a in concurrent) == [False] + [True] * 19
    assert len({a.commitment.SerializeToString() for a in concurrent}) == 1

    # The same amount spelled differently is the same request.
    respelled = await stub.AddCommitment(
        grant(grant_id="burst", contract_id=acme_contract, kind="credit", amount="75.00"),
        metadata=admin,
    )
    assert respelled.replay
    assert respelled.commitment == concurrent[0].commitment

    code, reason, _ = await refusal(
        stub.AddCommitment(
            grant(grant_id="burst", contract_id=acme_contract, kind="credit", amount="76"),
            metadata=admin,
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_MISMATCH")

    counts = await db.fetch(
        "SELECT grant_id, count(*) AS n FROM pools GROUP BY grant_id ORDER BY grant_id"
    )
    assert [(r["grant_id"], r["n"]) for r in counts] == [
        ("grant:burst", 1),
        ("grant:sequential", 1),
    ]
    burst_account = await account(db, f"pool:{concurrent[0].commitment.pool_id}")
    assert burst_account["credits_posted"] == Decimal("75")
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE kind = 'pool'") == 2
    await assert_ledger_balances(db, acme.tenant_id)


async def test_top_up_buys_credit_at_face_value_idempotently(
    stub: Stub, acme: TenantKeys, acme_contract: str, db: asyncpg.Connection
) -> None:
    admin = acme.metadata(Role.ADMIN)
    request = contract_pb2.TopUpRequest(
        top_up_id="tu-1", contract_id=acme_contract, amount="200", memo="card ending 4242"
    )
    first = await stub.TopUp(request, metadata=admin)
    again = await stub.TopUp(request, metadata=admin)
    assert (first.replay, again.replay) == (False, True)
    assert first.commitment == again.commitment
    pool = first.commitment
    assert (pool.kind, pool.cost_basis, pool.reference, list(pool.scope)) == (
        "credit",
        "1",
        "top_up:tu-1",
        [],
    )
    payments = await account(db, f"payments:{acme_contract}")
    assert payments["debits_posted"] == Decimal("200")
    codes = await db.fetch("SELECT DISTINCT code FROM transfers WHERE reference = 'top_up:tu-1'")
    assert [r["code"] for r in codes] == ["top_up"]
    code, reason, _ = await refusal(
        stub.TopUp(
            contract_pb2.TopUpRequest(top_up_id="tu-1", contract_id=acme_contract, amount="300"),
            metadata=admin,
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_MISMATCH")
    # A top-up and a grant may share an id: each is its own operation.
    granted = await stub.AddCommitment(
        grant(grant_id="tu-1", contract_id=acme_contract, kind="credit", amount="5"),
        metadata=admin,
    )
    assert not granted.replay
    await assert_ledger_balances(db, acme.tenant_id)


async def test_adjustments_add_and_remove_never_overdraw_and_are_idempotent(
    stub: Stub, acme: TenantKeys, acme_contract: str, db: asyncpg.Connection
) -> None:
    admin = acme.metadata(Role.ADMIN)
    created = await stub.AddCommitment(
        grant(grant_id="prepaid", contract_id=acme_contract), metadata=admin
    )
    pool_id = created.commitment.pool_id

    def adjust(adjustment_id: str, amount: str, reason: str = "goodwill") -> Any:
        return stub.AdjustBalance(
            contract_pb2.AdjustBalanceRequest(
                adjustment_id=adjustment_id,
                contract_id=acme_contract,
                pool_id=pool_id,
                amount=amount,
                reason=reason,
            ),
            metadata=admin,
        )

    added = await adjust("adj-1", "25.50")
    assert (added.replay, added.commitment.balance) == (False, "1025.50")
    removed = await adjust("adj-2", "-100", "duplicate invoice credit")
    assert (removed.replay, removed.commitment.balance) == (False, "925.50")
    retried = await adjust("adj-1", "25.5")
    assert (retried.replay, retried.commitment.balance) == (True, "925.50")

    code, reason, _ = await refusal(adjust("adj-3", "-925.51"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDIT")
    code, reason, _ = await refusal(adjust("adj-1", "30"))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_MISMATCH")
    code, _, fields = await refusal(adjust("adj-4", "5", reason=""))
    assert (code, list(fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["reason"])
    code, _, fields = await refusal(adjust("adj-4", "0"))
    assert (code, list(fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["amount"])

    pool_account = await account(db, f"pool:{pool_id}")
    assert pool_account["credits_posted"] - pool_account["debits_posted"] == Decimal("925.50")
    adjustments = await account(db, f"adjustments:{acme_contract}")
    assert (adjustments["debits_posted"], adjustments["credits_posted"]) == (
        Decimal("25.50"),
        Decimal("100"),
    )
    memos = await db.fetch(
        "SELECT reference, memo FROM transfers WHERE code = 'adjustment' ORDER BY reference"
    )
    assert [(m["reference"], m["memo"]) for m in memos] == [
        ("adjustment:adj-1", "goodwill"),
        ("adjustment:adj-2", "duplicate invoice credit"),
    ]
    await assert_ledger_balances(db, acme.tenant_id)

    minimum = await stub.AddCommitment(
        grant(grant_id="minimum", contract_id=acme_contract, kind="postpaid_commit"),
        metadata=admin,
    )
    code, _, fields = await refusal(
        stub.AdjustBalance(
            contract_pb2.AdjustBalanceRequest(
                adjustment_id="adj-5",
                contract_id=acme_contract,
                pool_id=minimum.commitment.pool_id,
                amount="10",
                reason="no balance to adjust",
            ),
            metadata=admin,
        )
    )
    assert (code, list(fields)) == (grpc.StatusCode.INVALID_ARGUMENT, ["pool_id"])


async def test_writes_need_admin_and_tenants_never_see_each_other(
    stub: Stub, acme: TenantKeys, globex: TenantKeys, acme_contract: str, db: asyncpg.Connection
) -> None:
    for role in (Role.RATER, Role.OPS):
        code, reason, _ = await refusal(
            stub.CreateCustomer(
                contract_pb2.CreateCustomerRequest(name="Nope"), metadata=acme.metadata(role)
            )
        )
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
        read = await stub.GetContract(
            contract_pb2.GetContractRequest(contract_id=acme_contract),
            metadata=acme.metadata(role),
        )
        assert read.contract.contract_id == acme_contract
    code, reason, _ = await refusal(
        stub.AddCommitment(grant(contract_id=acme_contract), metadata=acme.metadata(Role.RATER))
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")

    other = globex.metadata(Role.ADMIN)
    code, reason, _ = await refusal(
        stub.GetContract(contract_pb2.GetContractRequest(contract_id=acme_contract), metadata=other)
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONTRACT_NOT_FOUND")
    code, reason, _ = await refusal(
        stub.GetCustomer(contract_pb2.GetCustomerRequest(customer_id="acme-corp"), metadata=other)
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    code, reason, _ = await refusal(
        stub.AddCommitment(grant(contract_id=acme_contract), metadata=other)
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONTRACT_NOT_FOUND")
    code, reason, _ = await refusal(
        stub.TopUp(
            contract_pb2.TopUpRequest(top_up_id="x", contract_id=acme_contract, amount="1"),
            metadata=other,
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONTRACT_NOT_FOUND")
    listed = await stub.ListContracts(contract_pb2.ListContractsRequest(), metadata=other)
    assert list(listed.contracts) == []
    customers = await stub.ListCustomers(contract_pb2.ListCustomersRequest(), metadata=other)
    assert list(customers.customers) == []
    # The same customer id is free in another tenant.
    await stub.CreateCustomer(
        contract_pb2.CreateCustomerRequest(customer_id="acme-corp", name="Globex's Acme"),
        metadata=other,
    )

    pool = await stub.AddCommitment(
        grant(contract_id=acme_contract), metadata=acme.metadata(Role.ADMIN)
    )
    code, reason, _ = await refusal(
        stub.AdjustBalance(
            contract_pb2.AdjustBalanceRequest(
                adjustment_id="steal",
                contract_id=acme_contract,
                pool_id=pool.commitment.pool_id,
                amount="-1000",
                reason="cross-tenant",
            ),
            metadata=other,
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONTRACT_NOT_FOUND")
    assert (
        await db.fetchval("SELECT count(*) FROM transfers WHERE tenant_id = $1", globex.tenant_id)
        == 0
    )
    pool_account = await account(db, f"pool:{pool.commitment.pool_id}")
    assert pool_account["debits_posted"] == 0


async def test_every_write_tells_the_rating_caches_which_customer_changed(
    stub: Stub, acme: TenantKeys, acme_contract: str, database_url: str
) -> None:
    listener = await asyncpg.connect(asyncpg_dsn(database_url))
    payloads: list[str] = []
    try:
        await listener.add_listener(
            "rating_contracts", lambda _conn, _pid, _channel, payload: payloads.append(payload)
        )
        admin = acme.metadata(Role.ADMIN)
        created = await stub.AddCommitment(grant(contract_id=acme_contract), metadata=admin)
        expected = f"{acme.tenant_id}:acme-corp"
        await eventually(lambda: payloads == [expected])
        await stub.AdjustBalance(
            contract_pb2.AdjustBalanceRequest(
                adjustment_id="a",
                contract_id=acme_contract,
                pool_id=created.commitment.pool_id,
                amount="1",
                reason="notify",
            ),
            metadata=admin,
        )
        await stub.CreateCustomer(
            contract_pb2.CreateCustomerRequest(customer_id="newco", name="NewCo"), metadata=admin
        )
        await eventually(lambda: payloads == [expected, expected, f"{acme.tenant_id}:newco"])
        # A replay changes nothing, so it tells nobody.
        await stub.AddCommitment(grant(contract_id=acme_contract), metadata=admin)
        await stub.CreateCustomer(
            contract_pb2.CreateCustomerRequest(customer_id="last", name="Last"), metadata=admin
        )
        await eventually(lambda: payloads[-1] == f"{acme.tenant_id}:last")
        assert len(payloads) == 4
    finally:
        await listener.close()
