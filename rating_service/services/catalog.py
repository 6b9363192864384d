"""The tenants' catalogs: checked changes through one plan, and an in-memory copy per tenant."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from rating_service.core.auth import Caller
from rating_service.core.contracts.contract import (
    Contract,
    billing_period_containing,
    nominal_billing_period,
)
from rating_service.core.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from rating_service.core.pricing.catalog import (
    Catalog,
    CatalogChange,
    catalog_from_document,
    next_rate_card_version,
    plan_changes,
)
from rating_service.core.pricing.meter import Product, product_from_dict
from rating_service.core.pricing.period_price import price_for_period
from rating_service.core.pricing.price_model import PriceModel
from rating_service.core.pricing.quote import Quote, UsageLine, quote
from rating_service.core.pricing.rate_card import RateCard, rate_card_from_dict
from rating_service.store.catalog import CATALOG_CHANNEL, CatalogStore, Planner
from rating_service.store.pg_notify import NotifiedCache


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class Catalogs:
    """Reads catalogs from memory while the change feed is live, writes them through plans."""

    def __init__(
        self,
        store: CatalogStore,
        clock: Callable[[], datetime] = utc_now,
        is_live: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        self._clock = clock
        self.cache: NotifiedCache[str, Catalog] = NotifiedCache(is_live)

    channel = CATALOG_CHANNEL
    """The change feed drops a tenant's cached catalog when this channel names it."""

    async def catalog(self, tenant_id: str) -> Catalog:
        """The tenant's catalog: from memory when the change feed guarantees it is current."""

        async def load() -> Catalog:
            return (await self._store.load(tenant_id))[1]

        return await self.cache.get(tenant_id, load)

    async def create_product(self, caller: Caller, product: Mapping[str, object]) -> Product:
        """Add a product; ALREADY_EXISTS if its key is taken."""
        new = product_from_dict(product, "product")

        def plan(current: Catalog) -> Sequence[CatalogChange]:
            if new.key in current.products:
                raise AlreadyExists(f"product {new.key!r} exists", reason="PRODUCT_EXISTS")
            return plan_changes(current, _with_product(current, new), self._clock())

        await self._change(caller, plan)
        return new

    async def update_product(self, caller: Caller, product: Mapping[str, object]) -> Product:
        """Replace a product's definition; every rate card must still fit it."""
        new = product_from_dict(product, "product")

        def plan(current: Catalog) -> Sequence[CatalogChange]:
            if new.key not in current.products:
                raise NotFound(f"no product {new.key!r}", reason="PRODUCT_NOT_FOUND")
            return plan_changes(current, _with_product(current, new), self._clock())

        await self._change(caller, plan)
        return new

    async def product(self, caller: Caller, key: str) -> Product:
        """One product."""
        found = (await self.catalog(caller.tenant_id)).products.get(key)
        if found is None:
            raise NotFound(f"no product {key!r}", reason="PRODUCT_NOT_FOUND")
        return found

    async def create_rate_card(self, caller: Caller, card: Mapping[str, object]) -> RateCard:
        """Add version 1 of a new rate card; ALREADY_EXISTS if the key is taken."""
        proposed = rate_card_from_dict({**card, "version": 1}, field_path="rate_card")

        def plan(current: Catalog) -> Sequence[CatalogChange]:
            if proposed.key in current.rate_cards:
                raise AlreadyExists(
                    f"rate card {proposed.key!r} exists; UpdateRateCard adds a version",
                    reason="RATE_CARD_EXISTS",
                )
            return plan_changes(current, next_rate_card_version(current, proposed), self._clock())

        await self._change(caller, _naming_request_fields(plan, "rate_card"))
        return proposed

    async def update_rate_card(
        self, caller: Caller, card: Mapping[str, object]
    ) -> tuple[RateCard, RateCard | None]:
        """Add the next version of a rate card; returns it and the version it closed, if any."""
        proposed = rate_card_from_dict({**card, "version": 1}, field_path="rate_card")

        def plan(current: Catalog) -> Sequence[CatalogChange]:
            if proposed.key not in current.rate_cards:
                raise NotFound(f"no rate card {proposed.key!r}", reason="RATE_CARD_NOT_FOUND")
            return plan_changes(current, next_rate_card_version(current, proposed), self._clock())

        changes = await self._change(caller, _naming_request_fields(plan, "rate_card"))
        cards = [rate_card_from_dict(c.after) for c in changes]
        created = max(cards, key=lambda c: c.version)
        closed = next((c for c in cards if c is not created), None)
        return created, closed

    async def rate_card(self, caller: Caller, key: str) -> tuple[RateCard, ...]:
        """Every version of a rate card, earliest first."""
        versions = (await self.catalog(caller.tenant_id)).versions(key)
        if not versions:
            raise NotFound(f"no rate card {key!r}", reason="RATE_CARD_NOT_FOUND")
        return versions

    async def apply(
        self, caller: Caller, document: Mapping[str, object], dry_run: bool
    ) -> list[CatalogChange]:
        """Bring the catalog to what a document declares (idempotent); with dry_run, only plan."""
        desired = catalog_from_document(document)

        def plan(current: Catalog) -> Sequence[CatalogChange]:
            return plan_changes(current, desired, self._clock())

        if dry_run:
            return list(plan((await self._store.load(caller.tenant_id))[1]))
        return await self._change(caller, plan)

    async def quote(
        self,
        caller: Caller,
        rate_card_key: str,
        at: datetime | None,
        lines: Sequence[UsageLine],
        period_to_date: Sequence[UsageLine],
        contract: Contract | None = None,
    ) -> Quote:
        """Price hypothetical usage, at list price or on a contract's terms; nothing is stored."""
        catalog = await self.catalog(caller.tenant_id)
        moment = at or self._clock()
        if contract is None:
            return quote(catalog, rate_card_key, moment, lines, period_to_date)
        if rate_card_key and rate_card_key != contract.rate_card_key:
            raise InvalidArgument.of_field(
                "rate_card_key",
                f"the contract prices on {contract.rate_card_key!r}; leave it empty or use that",
            )

        period = billing_period_containing(contract, moment)
        nominal = nominal_billing_period(contract, moment)

        def on_contract(product: Product, model: PriceModel) -> PriceModel:
            own = contract.prices.price(model, product.key, product.tags, moment)
            # A prorated price quotes as rating prices it: cut to the contract's active share.
            return price_for_period(own, nominal, period)

        return quote(catalog, contract.rate_card_key, moment, lines, period_to_date, on_contract)

    async def _change(self, caller: Caller, plan: Planner) -> list[CatalogChange]:
        changes = await self._store.change(caller.tenant_id, plan, actor=caller.key_id)
        self.cache.forget(caller.tenant_id)
        return changes


def _naming_request_fields(plan: Planner, request_field: str) -> Planner:
    """A plan whose errors name the RPC's field (`rate_card.x`), not the catalog path."""

    def planned(current: Catalog) -> Sequence[CatalogChange]:
        try:
            return plan(current)
        except InvalidArgument as error:
            renamed = [
                FieldViolation(_CATALOG_PATH.sub(request_field, v.field), v.description)
                for v in error.violations
            ]
            raise InvalidArgument(error.message, renamed) from None

    return planned


# `rate_cards[list].versions[2].prices.x` (a catalog document's path) → `rate_card.prices.x`.
_CATALOG_PATH = re.compile(r"^rate_cards\[[^\]]*\](\.versions\[\d+\])?")


def _with_product(current: Catalog, product: Product) -> Catalog:
    return Catalog({**current.products, product.key: product}, {})
