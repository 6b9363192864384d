"""Coupons and discounts: define coupons, apply them to contracts, remove discounts.

Requests arrive in their plain-dict form (field names as on the wire), are read and checked by
the pure core (`core.billing.discounts`), and are written through `DiscountStore`. A discount
starts at the billing period in force when its coupon is applied (the whole period is
discounted, however late in it the coupon came) and lasts the coupon's duration counted in
the contract's billing periods; a removal ends it at the period in force then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime

from rating_service.core.auth import Caller
from rating_service.core.billing.discounts import (
    Coupon,
    Discount,
    coupon_from_dict,
    discount_window,
)
from rating_service.core.contracts.contract import (
    CONTRACT_ENDED,
    Contract,
    ContractStatus,
    nominal_billing_period,
)
from rating_service.core.dict_form import DictReader
from rating_service.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    ViolationCollector,
)
from rating_service.core.ids import new_id
from rating_service.core.ledger.idempotency import payload_fingerprint
from rating_service.core.pricing.catalog import Catalog
from rating_service.services.catalog import Catalogs, utc_now
from rating_service.services.contract import CATALOG_MISMATCH
from rating_service.store.discount import Applied, DiscountStore, StoredCoupon, StoredDiscount

MAX_ID_LENGTH = 200


class DiscountAdmin:
    """Checks coupon and discount requests against the pure core and the catalog, then writes."""

    def __init__(
        self,
        store: DiscountStore,
        catalogs: Catalogs,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._catalogs = catalogs
        self._clock = clock

    async def create_coupon(
        self, caller: Caller, request: Mapping[str, object]
    ) -> tuple[StoredCoupon, bool]:
        """Define a coupon under the caller's id for it; idempotent on that id."""
        violations = ViolationCollector()
        fields = DictReader(request, "", violations, "a CreateCoupon request")
        raw = fields.raw("coupon")
        fields.reject_unknown()
        violations.raise_if_any("invalid coupon")
        if not isinstance(raw, Mapping):
            raise InvalidArgument.of_field("coupon", "is required")
        coupon = coupon_from_dict(raw, "coupon")
        _check_scope(coupon, await self._catalogs.catalog(caller.tenant_id))
        return await self._store.create_coupon(caller.tenant_id, coupon, caller.key_id)

    async def coupon(self, caller: Caller, coupon_id: str) -> StoredCoupon:
        """One coupon of the caller's tenant."""
        _require_id("coupon_id", coupon_id)
        return await self._store.coupon(caller.tenant_id, coupon_id)

    async def coupons(
        self, caller: Caller, *, after: str | None = None, limit: int | None = None
    ) -> list[StoredCoupon]:
        """The caller's tenant's coupons by id, from past `after` (at most `limit`)."""
        return await self._store.coupons(caller.tenant_id, after=after, limit=limit)

    async def archive_coupon(self, caller: Caller, coupon_id: str) -> StoredCoupon:
        """Archive a coupon: it makes no new discounts; those it made run their course."""
        _require_id("coupon_id", coupon_id)
        return await self._store.archive_coupon(
            caller.tenant_id, coupon_id, caller.key_id, self._clock()
        )

    async def apply_coupon(self, caller: Caller, request: Mapping[str, object]) -> Applied:
        """Apply a coupon to a contract: a new discount; idempotent on `request_id`."""
        violations = ViolationCollector()
        fields = DictReader(request, "", violations, "an ApplyCoupon request")
        request_id = fields.text("request_id")
        contract_id = fields.text("contract_id")
        coupon_id = fields.text("coupon_id")
        fields.reject_unknown()
        for name, value in (
            ("request_id", request_id),
            ("contract_id", contract_id),
            ("coupon_id", coupon_id),
        ):
            if value and not _is_id(value):
                violations.add(name, f"must be 1 to {MAX_ID_LENGTH} characters, no spaces")
        violations.raise_if_any("invalid ApplyCoupon request")
        now = self._clock()

        def make(contract: Contract, coupon: Coupon) -> Discount:
            period = _period_in_force(contract, now)
            start, end = discount_window(
                coupon, period, lambda moment: nominal_billing_period(contract, moment)[1]
            )
            return Discount(new_id("dsc"), contract.contract_id, coupon, now, start, end)

        return await self._store.apply_coupon(
            caller.tenant_id,
            request_id=request_id,
            fingerprint=payload_fingerprint({"contract_id": contract_id, "coupon_id": coupon_id}),
            contract_id=contract_id,
            coupon_id=coupon_id,
            make=make,
            actor=caller.key_id,
            at=now,
        )

    async def remove_discount(
        self, caller: Caller, contract_id: str, discount_id: str
    ) -> StoredDiscount:
        """End a discount at the period in force now; removing it again changes nothing."""
        violations = ViolationCollector()
        for name, value in (("contract_id", contract_id), ("discount_id", discount_id)):
            if not _is_id(value):
                violations.add(name, f"must be 1 to {MAX_ID_LENGTH} characters, no spaces")
        violations.raise_if_any("invalid RemoveDiscount request")
        now = self._clock()

        def end(contract: Contract, discount: Discount) -> Discount:
            ends = max(_period_start_in_force(contract, now), discount.starts_at)
            if discount.ends_before is not None:
                ends = min(ends, discount.ends_before)
            return replace(discount, ends_before=ends, removed_at=now)

        return await self._store.remove_discount(
            caller.tenant_id, contract_id, discount_id, end, caller.key_id
        )

    async def discounts(
        self,
        caller: Caller,
        contract_id: str,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[StoredDiscount]:
        """A contract's discounts by id, removed ones too (NOT_FOUND for an unknown contract)."""
        _require_id("contract_id", contract_id)
        if not await self._store.contract_exists(caller.tenant_id, contract_id):
            raise NotFound(
                f"no contract {contract_id!r}",
                reason="CONTRACT_NOT_FOUND",
                metadata={"contract_id": contract_id},
            )
        return await self._store.discounts(caller.tenant_id, contract_id, after=after, limit=limit)


def _period_in_force(contract: Contract, now: datetime) -> tuple[datetime, datetime]:
    """The billing period in force at `now` (the first one before the term starts).

    Refused (FailedPrecondition, CONTRACT_ENDED) once the contract has ended.
    """
    if contract.status is ContractStatus.ENDED or (
        contract.term_end is not None and now >= contract.term_end
    ):
        description = "the contract has ended: it has no period left to discount"
        raise FailedPrecondition(
            f"contract {contract.contract_id!r}: {description}",
            reason=CONTRACT_ENDED,
            violations=[
                PreconditionViolation(
                    "CONTRACT_STATUS", f"contracts/{contract.contract_id}", description
                )
            ],
            metadata={"contract_id": contract.contract_id},
        )
    moment = max(now, contract.term_start)
    start, end = nominal_billing_period(contract, moment)
    return max(start, contract.term_start), end


def _period_start_in_force(contract: Contract, now: datetime) -> datetime:
    moment = max(now, contract.term_start)
    if contract.term_end is not None and moment >= contract.term_end:
        return contract.term_end
    return max(nominal_billing_period(contract, moment)[0], contract.term_start)


def _check_scope(coupon: Coupon, catalog: Catalog) -> None:
    """Refuse product keys and tags the catalog does not have (they would never match)."""
    violations = ViolationCollector()
    for key in sorted(coupon.product_keys):
        if key not in catalog.products:
            violations.add("coupon.product_keys", f"{key!r} is not a product of the catalog")
    tags = {tag for product in catalog.products.values() for tag in product.tags}
    for tag in sorted(coupon.product_tags):
        if tag not in tags:
            violations.add("coupon.product_tags", f"no product of the catalog has tag {tag!r}")
    if violations.violations:
        raise InvalidArgument(
            "the coupon's scope does not fit the catalog",
            violations.violations,
            reason=CATALOG_MISMATCH,
        )


def _is_id(value: str) -> bool:
    return (
        0 < len(value) <= MAX_ID_LENGTH
        and not any(c.isspace() for c in value)
        and value.isprintable()
    )


def _require_id(name: str, value: str) -> None:
    if not _is_id(value):
        raise InvalidArgument.of_field(name, f"must be 1 to {MAX_ID_LENGTH} characters, no spaces")
