"""CheckEntitlement: may a customer use a feature now, and how much is left, from memory.

The feature comes from the contract version in force (its own grants first, then its rate
card's), both read from the caches rating uses (catalog and contract books, kept fresh by
NOTIFY). A metered feature's usage is the period counter rating keeps, read once and kept
in memory until this process commits usage for that contract and period, or for
`freshness_seconds` at most (usage other processes commit shows up within that time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal

from rating_service.core.contracts.contract import billing_period_containing
from rating_service.core.pricing.features import Entitlement, FeatureKind, entitlement
from rating_service.core.rating.rate import contract_in_force
from rating_service.services.catalog import Catalogs, utc_now
from rating_service.store.books import ContractBooks
from rating_service.store.rating import RatingStore

FRESHNESS_SECONDS = 1.0
"""How long a metered feature's usage read from the counters is trusted without a commit here."""

MAX_PERIODS_KEPT = 100_000
"""Contract periods whose usage is kept at most."""

_Usage = dict[str, tuple[Decimal, float]]
"""product key → (quantity counted, monotonic time it stops being trusted)."""


class Entitlements:
    """Answers entitlement checks from the caches, and forgets usage when rating moves it."""

    def __init__(
        self,
        store: RatingStore,
        catalogs: Catalogs,
        books: ContractBooks,
        clock: Callable[[], datetime] = utc_now,
        freshness_seconds: float = FRESHNESS_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._catalogs = catalogs
        self._books = books
        self._clock = clock
        self._freshness = freshness_seconds
        self._monotonic = monotonic
        self._usage: dict[tuple[str, datetime], _Usage] = {}

    async def check(
        self, tenant_id: str, customer_id: str, feature_key: str, at: datetime | None = None
    ) -> Entitlement:
        """The customer's entitlement to a feature at `at` (now), under its contract then."""
        moment = at or self._clock()
        book = await self._books.book(tenant_id, customer_id)
        contract = contract_in_force(book.contracts, moment)
        feature = contract.features.get(feature_key)
        if feature is None:
            catalog = await self._catalogs.catalog(tenant_id)
            history = catalog.rate_cards.get(contract.rate_card_key)
            if history is not None:
                feature = history.in_force_at(moment).features.get(feature_key)
        if feature is None or feature.kind is not FeatureKind.METERED:
            return entitlement(feature_key, feature)
        assert feature.product_key is not None  # a metered feature names its product
        period = billing_period_containing(contract, moment)
        used = await self._used(tenant_id, contract.contract_id, period[0], feature.product_key)
        return entitlement(feature_key, feature, used, period)

    def forget(self, periods: Iterable[tuple[str, datetime]]) -> None:
        """Drop the usage known of these (contract, period start): rating just counted more."""
        for key in periods:
            self._usage.pop(key, None)

    async def _used(
        self, tenant_id: str, contract_id: str, period_start: datetime, product_key: str
    ) -> Decimal:
        known = self._usage.get((contract_id, period_start), {})
        now = self._monotonic()
        found = known.get(product_key)
        if found is not None and now < found[1]:
            return found[0]
        used = await self._store.period_usage(tenant_id, contract_id, period_start, product_key)
        if len(self._usage) >= MAX_PERIODS_KEPT:
            self._usage.clear()  # bounded: a usage read again costs one query
        self._usage.setdefault((contract_id, period_start), {})[product_key] = (
            used,
            now + self._freshness,
        )
        return used
