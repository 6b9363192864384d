"""Contract administration: customers, contracts, grants, top-ups and manual adjustments.

Requests arrive in their plain-dict form (field names as on the wire), are read and checked by
the pure core (`core.contracts`, `core.ledger`) and against the tenant's
catalog, and are written through `ContractStore`, where every movement of money is a ledger
transfer. Grants, top-ups and adjustments are idempotent on the caller's id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from rating_service.core.auth import Caller
from rating_service.core.contracts.amendments import (
    Amendment,
    Effective,
    effective_moment,
    read_terms,
)
from rating_service.core.contracts.contract import (
    Contract,
    Customer,
    amended,
    amendment_changes,
    billing_period_containing,
    contract_from_dict,
)
from rating_service.core.contracts.pools import CommitmentKind, Pool, pool_to_dict
from rating_service.core.dict_form import DictReader
from rating_service.core.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    ViolationCollector,
)
from rating_service.core.ids import new_id
from rating_service.core.ledger.accounts import pool_account_id
from rating_service.core.ledger.idempotency import (
    IdempotentOutcome,
    payload_fingerprint,
    recall,
)
from rating_service.core.ledger.journal import IDEMPOTENCY_KEY_MISMATCH
from rating_service.core.ledger.posting_rules import (
    adjustment_transfers,
    grant_transfers,
    top_up_transfers,
)
from rating_service.core.ledger.transfers import Transfer
from rating_service.core.money import format_decimal
from rating_service.core.pricing.catalog import Catalog
from rating_service.services.catalog import Catalogs, utc_now
from rating_service.store.contract import (
    ADD_COMMITMENT,
    TOP_UP,
    Commitment,
    ContractPosition,
    ContractStore,
    StoredGrant,
)
from rating_service.store.effects import AuditEntry

CATALOG_MISMATCH = "CATALOG_MISMATCH"
"""InvalidArgument reason: the request names a rate card, product or tag the tenant's catalog
does not have, or a currency its rate card does not price in."""

MAX_NAME_LENGTH = 200

ZERO = Decimal(0)
ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Amended:
    """An amendment's answer: the contract with it, the amendment, whether it is a retry's."""

    contract: Contract
    amendment: Amendment
    replay: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """A write's answer: the commitment, and whether it repeats an earlier identical request."""

    commitment: Commitment
    replay: bool


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """A grant or top-up request, read and checked, before it has a pool id."""

    reference: str
    contract_id: str
    kind: CommitmentKind
    amount: Decimal
    priority: int
    cost_basis: Decimal
    scope: frozenset[str] | None
    starts_at: datetime | None
    expires_at: datetime | None
    memo: str
    action: str

    @property
    def fingerprint(self) -> str:
        """What a retry must repeat: everything asked for (an omitted start stays omitted)."""
        return payload_fingerprint(
            {
                "action": self.action,
                "contract_id": self.contract_id,
                "kind": self.kind,
                "amount": self.amount,
                "priority": self.priority,
                "cost_basis": self.cost_basis,
                "scope": self.scope,
                "starts_at": self.starts_at,
                "expires_at": self.expires_at,
                "memo": self.memo,
            }
        )


class ContractAdmin:
    """Checks admin requests against the pure core and the catalog, then writes them."""

    def __init__(
        self,
        store: ContractStore,
        catalogs: Catalogs,
        clock: Callable[[], datetime] = utc_now,
        changed: Callable[[str, str], None] = lambda tenant_id, customer_id: None,
    ) -> None:
        self._store = store
        self._catalogs = catalogs
        self._clock = clock
        # Told (tenant, customer) after each committed change, so this process's own caches
        # read their writes at once instead of when the NOTIFY arrives.
        self._changed = changed

    async def create_customer(self, caller: Caller, request: Mapping[str, object]) -> Customer:
        """Create a customer under the caller's id for them, or a new `cus_` id."""
        violations = ViolationCollector()
        fields = DictReader(request, "", violations, "a CreateCustomer request")
        customer_id = fields.optional_text("customer_id")
        name = fields.text("name")
        fields.reject_unknown()
        if customer_id is not None and (
            len(customer_id) > MAX_NAME_LENGTH or any(c.isspace() for c in customer_id)
        ):
            violations.add("customer_id", f"must be 1 to {MAX_NAME_LENGTH} characters, no spaces")
        if len(name) > MAX_NAME_LENGTH:
            violations.add("name", f"must be at most {MAX_NAME_LENGTH} characters")
        violations.raise_if_any("invalid customer")
        customer = Customer(customer_id or new_id("cus"), caller.tenant_id, name)
        await self._store.create_customer(customer, caller.key_id)
        return customer

    async def customer(self, caller: Caller, customer_id: str) -> Customer:
        """One customer of the caller's tenant."""
        return await self._store.customer(caller.tenant_id, customer_id)

    async def customers(
        self, caller: Caller, *, after: str | None = None, limit: int | None = None
    ) -> list[Customer]:
        """The caller's tenant's customers by id, from past `after` (at most `limit`)."""
        return await self._store.customers(caller.tenant_id, after=after, limit=limit)

    async def create_contract(self, caller: Caller, terms: Mapping[str, object]) -> Contract:
        """Create an active contract from its terms (the request's `contract` field)."""
        if terms.get("amendments"):
            raise InvalidArgument.of_field(
                "contract.amendments", "are made by AmendContract and SetSeats, not given"
            )
        contract = contract_from_dict(
            {
                **terms,
                "contract_id": new_id("ctr"),
                "tenant_id": caller.tenant_id,
                "status": "active",
            },
            "contract",
        )
        check_against_catalog(contract, await self._catalogs.catalog(caller.tenant_id))
        await self._store.create_contract(contract, caller.key_id)
        self._changed(caller.tenant_id, contract.customer_id)
        return contract

    async def amend_contract(self, caller: Caller, request: Mapping[str, object]) -> Amended:
        """Change a contract's terms from a moment on; idempotent on `request_id`."""
        violations = ViolationCollector()
        fields = DictReader(request, "", violations, "an AmendContract request")
        contract_id = fields.text("contract_id")
        terms = read_terms(fields.raw("terms"), fields.at("terms"), violations)
        if not fields.has("terms"):
            violations.add("terms", "is required: the terms that change")
        return await self._amend(caller, contract_id, terms, fields, violations)

    async def set_seats(self, caller: Caller, request: Mapping[str, object]) -> Amended:
        """Change the seats a per-seat fee charges for, from a moment on (an amendment)."""
        violations = ViolationCollector()
        fields = DictReader(request, "", violations, "a SetSeats request")
        contract_id = fields.text("contract_id")
        seats = fields.integer("seats", 0)
        return await self._amend(caller, contract_id, {"seats": seats}, fields, violations)

    async def _amend(
        self,
        caller: Caller,
        contract_id: str,
        terms: Mapping[str, object],
        fields: DictReader,
        violations: ViolationCollector,
    ) -> Amended:
        request_id = fields.text("request_id")
        effective = fields.choice("effective", Effective, Effective.NOW)
        effective_at = fields.optional_timestamp("effective_at")
        reason = fields.optional_text("reason") or ""
        fields.reject_unknown()
        violations.raise_if_any("invalid amendment")
        assert effective is not None  # a bad choice was recorded as a violation
        fingerprint = payload_fingerprint(
            {"contract_id": contract_id, "terms": _json_safe(terms), "reason": reason}
            | {"effective": effective, "effective_at": effective_at}
        )
        catalog = await self._catalogs.catalog(caller.tenant_id)
        now = self._clock()

        def amend(contract: Contract) -> Contract:
            moment = effective_moment(
                effective, effective_at, now, _next_period_start(contract, now)
            )
            changes = amendment_changes(contract, terms)
            change = Amendment(request_id, moment, now, changes, reason, caller.key_id, fingerprint)
            changed = amended(contract, change)
            check_against_catalog(changed.at(moment), catalog, "terms")
            return changed

        contract, replay = await self._store.amend_contract(
            caller.tenant_id, contract_id, request_id, amend, caller.key_id
        )
        (amendment,) = (a for a in contract.amendments if a.amendment_id == request_id)
        if replay and amendment.fingerprint != fingerprint:
            raise AlreadyExists(
                f"request id {request_id!r} was already used with a different amendment",
                reason=IDEMPOTENCY_KEY_MISMATCH,
                metadata={"request_id": request_id},
            )
        if not replay:
            self._changed(caller.tenant_id, contract.customer_id)
        return Amended(contract, amendment, replay)

    async def contract(self, caller: Caller, contract_id: str) -> tuple[Contract, list[Commitment]]:
        """A contract and its commitments, balances as they are now."""
        contract = await self._store.contract(caller.tenant_id, contract_id)
        return contract, await self._store.commitments(caller.tenant_id, contract_id)

    async def contracts(
        self,
        caller: Caller,
        customer_id: str | None,
        *,
        after: ContractPosition | None = None,
        limit: int | None = None,
    ) -> list[Contract]:
        """The tenant's contracts, or one customer's, from past `after` (at most `limit`)."""
        return await self._store.contracts(caller.tenant_id, customer_id, after=after, limit=limit)

    async def change_payment_method(
        self, caller: Caller, contract_id: str, payment_method: str
    ) -> Contract:
        """Save the gateway token the contract's invoices are charged to from now on."""
        if (
            not payment_method
            or len(payment_method) > MAX_NAME_LENGTH
            or any(c.isspace() for c in payment_method)
        ):
            raise InvalidArgument.of_field(
                "payment_method",
                f"must be a payment-method token: 1 to {MAX_NAME_LENGTH} characters, no spaces",
            )
        changed = await self._store.change_payment_method(
            caller.tenant_id, contract_id, payment_method, caller.key_id
        )
        self._changed(caller.tenant_id, changed.customer_id)
        return changed

    async def add_commitment(self, caller: Caller, request: Mapping[str, object]) -> Outcome:
        """Add a prepaid commit, postpaid commit or credit; idempotent on `grant_id`."""
        return await self._grant(caller, read_commitment_request(request))

    async def top_up(self, caller: Caller, request: Mapping[str, object]) -> Outcome:
        """Add bought credit to a contract; idempotent on `top_up_id`."""
        return await self._grant(caller, read_top_up_request(request))

    async def adjust_balance(self, caller: Caller, request: Mapping[str, object]) -> Outcome:
        """Add to or remove from a pool by hand; idempotent on `adjustment_id`."""
        violations = ViolationCollector()
        fields = DictReader(request, "", violations, "an AdjustBalance request")
        adjustment_id = fields.text("adjustment_id")
        contract_id = fields.text("contract_id")
        pool_id = fields.text("pool_id")
        amount = fields.decimal("amount")
        if amount is not None and not amount:
            violations.add("amount", "must not be 0: positive adds, negative removes")
        reason = fields.text("reason")
        fields.reject_unknown()
        violations.raise_if_any("invalid adjustment")
        assert amount is not None, "a missing amount is a violation"
        reference = f"adjustment:{adjustment_id}"
        transfers = adjustment_transfers(
            reference=reference,
            contract_id=contract_id,
            account_id=pool_account_id(pool_id),
            amount=amount,
            reason=reason,
        )
        tenant_id = caller.tenant_id
        earlier = await self._store.transfers(tenant_id, reference)
        if not earlier:
            contract = await self._store.contract(tenant_id, contract_id)
            adjusted = await self._store.commitment(tenant_id, contract_id, pool_id)
            if adjusted.pool.kind is CommitmentKind.POSTPAID_COMMIT:
                raise InvalidArgument.of_field(
                    "pool_id", "is a postpaid commit: a minimum spend, with no balance to adjust"
                )
            details = {
                "reference": reference,
                "contract_id": contract_id,
                "pool_id": pool_id,
                "amount": format_decimal(amount),
                "reason": reason,
            }
            earlier = await self._store.post_adjustment(
                tenant_id,
                contract.customer_id,
                transfers,
                AuditEntry(caller.key_id, "balance.adjust", pool_id, details),
            )
            self._changed(tenant_id, contract.customer_id)
        if earlier:
            _recall_transfers(reference, earlier, transfers)
        now = await self._store.commitment(tenant_id, contract_id, pool_id)
        return Outcome(now, replay=bool(earlier))

    async def _grant(self, caller: Caller, grant: GrantRequest) -> Outcome:
        tenant_id = caller.tenant_id
        fingerprint = grant.fingerprint
        stored = await self._store.grant(tenant_id, grant.reference)
        if stored is not None:
            return Outcome(_recall_grant(stored, grant.reference, fingerprint), replay=True)
        contract = await self._store.contract(tenant_id, grant.contract_id)
        if grant.scope is not None:
            check_scope(grant.scope, await self._catalogs.catalog(tenant_id))
        pool = new_pool(grant, new_id("pool"), grant.starts_at or self._clock())
        transfers = _funding(grant, pool)
        details = {
            "reference": grant.reference,
            "fingerprint": fingerprint,
            "memo": grant.memo,
            "terms": {
                k: v
                for k, v in pool_to_dict(pool).items()
                if k not in ("created_seq", "balance", "pending")
            },
        }
        created = await self._store.add_commitment(
            tenant_id,
            contract.customer_id,
            contract.invoice_currency.code,
            Commitment(pool, grant.reference),
            transfers,
            AuditEntry(caller.key_id, grant.action, pool.pool_id, details),
        )
        self._changed(tenant_id, contract.customer_id)
        if created.commitment.pool.pool_id != pool.pool_id:
            # A concurrent request with the same id committed first: answer as its replay.
            return Outcome(_recall_grant(created, grant.reference, fingerprint), replay=True)
        return Outcome(created.commitment, replay=False)


def _next_period_start(contract: Contract, now: datetime) -> datetime:
    """Where the period after the one open at `now` starts (the term start before the term)."""
    if now < contract.term_start:
        return contract.term_start
    if not contract.covers(now):
        return now  # amending an ended term is refused with the term named
    return billing_period_containing(contract, now)[1]


def _json_safe(terms: Mapping[str, object]) -> dict[str, object]:
    """Terms as JSON would carry them, so a retry spelled the same way fingerprints the same."""
    safe: dict[str, object] = json.loads(json.dumps(terms, sort_keys=True, default=str))
    return safe


def read_commitment_request(request: Mapping[str, object]) -> GrantRequest:
    """An AddCommitment request, every bad field named; cost basis 0 for credit, 1 for commits."""
    violations = ViolationCollector()
    fields = DictReader(request, "", violations, "an AddCommitment request")
    grant_id = fields.text("grant_id")
    contract_id = fields.text("contract_id")
    kind = fields.choice("kind", CommitmentKind)
    amount = _positive(fields, "amount")
    priority = fields.integer("priority", 0)
    default_cost = ZERO if kind is CommitmentKind.CREDIT else ONE
    cost_basis = fields.decimal("cost_basis", default_cost)
    scope = _scope(fields)
    starts_at = fields.optional_timestamp("starts_at")
    expires_at = fields.optional_timestamp("expires_at")
    memo = _memo(fields)
    fields.reject_unknown()
    violations.raise_if_any("invalid commitment")
    if kind is None or amount is None or priority is None or cost_basis is None:
        raise InvalidArgument.of_field("kind", "is incomplete")  # each recorded a violation
    return GrantRequest(
        f"grant:{grant_id}",
        contract_id,
        kind,
        amount,
        priority,
        cost_basis,
        scope,
        starts_at,
        expires_at,
        memo,
        ADD_COMMITMENT,
    )


def read_top_up_request(request: Mapping[str, object]) -> GrantRequest:
    """A TopUp request: bought credit for every product, from now, at face value by default."""
    violations = ViolationCollector()
    fields = DictReader(request, "", violations, "a TopUp request")
    top_up_id = fields.text("top_up_id")
    contract_id = fields.text("contract_id")
    amount = _positive(fields, "amount")
    priority = fields.integer("priority", 0)
    expires_at = fields.optional_timestamp("expires_at")
    cost_basis = fields.decimal("cost_basis", ONE)
    memo = _memo(fields)
    fields.reject_unknown()
    violations.raise_if_any("invalid top-up")
    if amount is None or priority is None or cost_basis is None:
        raise InvalidArgument.of_field("amount", "is incomplete")  # each recorded a violation
    return GrantRequest(
        f"top_up:{top_up_id}",
        contract_id,
        CommitmentKind.CREDIT,
        amount,
        priority,
        cost_basis,
        None,
        None,
        expires_at,
        memo,
        TOP_UP,
    )


def new_pool(grant: GrantRequest, pool_id: str, starts_at: datetime) -> Pool:
    """The pool a grant creates (its creation order is assigned when it is stored)."""
    postpaid = grant.kind is CommitmentKind.POSTPAID_COMMIT
    try:
        return Pool(
            pool_id,
            grant.contract_id,
            grant.kind,
            grant.priority,
            grant.cost_basis,
            grant.scope,
            starts_at,
            grant.expires_at,
            0,
            grant.amount,
            ZERO if postpaid else grant.amount,
        )
    except InvalidArgument as error:
        # The pool calls the granted amount original_amount; the request calls it amount.
        renamed = [
            FieldViolation(_REQUEST_NAMES.get(v.field, v.field), v.description)
            for v in error.violations
        ]
        raise InvalidArgument(error.message, renamed) from None


_REQUEST_NAMES = {"original_amount": "amount", "balance": "amount"}


def check_scope(scope: frozenset[str], catalog: Catalog) -> None:
    """Refuse scope product keys the catalog does not have (they would never match usage)."""
    unknown = sorted(key for key in scope if key not in catalog.products)
    if unknown:
        raise InvalidArgument(
            f"scope names products the catalog does not have: {', '.join(unknown)}",
            [
                FieldViolation("scope", f"{key!r} is not a product of the catalog")
                for key in unknown
            ],
            reason=CATALOG_MISMATCH,
        )


def check_against_catalog(contract: Contract, catalog: Catalog, path: str = "contract") -> None:
    """Refuse a contract whose rate card, override targets or currency the catalog lacks.

    `path` is where the request holds the terms (`contract`, or an amendment's `terms`).
    """
    violations = ViolationCollector()
    versions = catalog.versions(contract.rate_card_key)
    if not versions:
        violations.add(
            f"{path}.rate_card_key",
            f"{contract.rate_card_key!r} is not a rate card of the catalog",
        )
    for card in versions:
        overlaps_term = (contract.term_end is None or card.effective_from < contract.term_end) and (
            card.effective_until is None or card.effective_until > contract.term_start
        )
        currency = card.pricing_unit.invoice_currency
        if overlaps_term and currency != contract.invoice_currency:
            violations.add(
                f"{path}.invoice_currency",
                f"rate card {card.key!r} v{card.version} converts to {currency.code}, not"
                f" {contract.invoice_currency.code} (there are no exchange rates)",
            )
            break
    tags = {tag for product in catalog.products.values() for tag in product.tags}
    for index, override in enumerate(contract.overrides):
        at = f"{path}.overrides[{index}]"
        if override.product_key is not None and override.product_key not in catalog.products:
            violations.add(
                f"{at}.product_key", f"{override.product_key!r} is not a product of the catalog"
            )
        if override.tag is not None and override.tag not in tags:
            violations.add(f"{at}.tag", f"no product of the catalog has tag {override.tag!r}")
    if violations.violations:
        details = "; ".join(f"{v.field}: {v.description}" for v in violations.violations)
        raise InvalidArgument(
            f"the contract does not fit the catalog: {details}",
            violations.violations,
            reason=CATALOG_MISMATCH,
        )


def _funding(grant: GrantRequest, pool: Pool) -> tuple[Transfer, ...]:
    """The transfers that fund a new pool (none for a postpaid commit: it has no balance)."""
    if grant.kind is CommitmentKind.POSTPAID_COMMIT:
        return ()
    rule = top_up_transfers if grant.action == TOP_UP else grant_transfers
    transfers = rule(
        reference=grant.reference,
        contract_id=grant.contract_id,
        pool_id=pool.pool_id,
        amount=grant.amount,
        cost_basis=grant.cost_basis,
    )
    return tuple(replace(t, memo=grant.memo) for t in transfers)


def _recall_grant(stored: StoredGrant, reference: str, fingerprint: str) -> Commitment:
    """The stored commitment if the request repeats the one that made it, else refused."""
    previous = IdempotentOutcome(reference, stored.fingerprint, stored.commitment)
    recalled = recall(previous, reference, fingerprint)
    assert recalled is not None, "a stored outcome is recalled or refused"
    return recalled


def _recall_transfers(
    reference: str, stored: list[Transfer], requested: tuple[Transfer, ...]
) -> None:
    """Refuse a retried adjustment whose transfers differ from the ones it made the first time."""
    previous = IdempotentOutcome(reference, _transfers_fingerprint(stored), None)
    recall(previous, reference, _transfers_fingerprint(requested))


def _transfers_fingerprint(transfers: list[Transfer] | tuple[Transfer, ...]) -> str:
    return payload_fingerprint(
        {
            "transfers": [
                (t.transfer_id, t.debit_account_id, t.credit_account_id, t.amount, t.memo)
                for t in sorted(transfers, key=lambda t: t.transfer_id)
            ]
        }
    )


def _positive(fields: DictReader, key: str) -> Decimal | None:
    amount = fields.decimal(key)
    if amount is not None and amount <= 0:
        fields.violations.add(fields.at(key), "must be greater than 0")
        return None
    return amount


def _scope(fields: DictReader) -> frozenset[str] | None:
    keys: set[str] = set()
    for index, key in enumerate(fields.sequence("scope")):
        if isinstance(key, str) and key.strip():
            keys.add(key)
        else:
            fields.violations.add(fields.at(f"scope[{index}]"), "must be a product key")
    # An empty list on the wire is the same as none: every product.
    return frozenset(keys) or None


def _memo(fields: DictReader) -> str:
    memo = fields.raw("memo")
    if memo is None:
        return ""
    if not isinstance(memo, str) or len(memo) > 1000:
        fields.violations.add(fields.at("memo"), "must be a string of at most 1000 characters")
        return ""
    return memo
