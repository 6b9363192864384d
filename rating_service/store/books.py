"""Customers' contracts and pool terms in memory, dropped when the database says they changed."""

from __future__ import annotations

from collections.abc import Callable

from rating_service.store.effects import CONTRACTS_CHANNEL
from rating_service.store.pg_notify import NotifiedCache
from rating_service.store.rating import CustomerBook, RatingStore


class ContractBooks:
    """Customers' contracts and pool terms, in memory while the change feed is live."""

    channel = CONTRACTS_CHANNEL

    def __init__(
        self, store: RatingStore, is_live: Callable[[], bool], max_customers: int | None = None
    ) -> None:
        self._store = store
        self.cache: NotifiedCache[tuple[str, str], CustomerBook] = NotifiedCache(
            is_live, max_customers
        )

    async def book(self, tenant_id: str, customer_id: str) -> CustomerBook:
        """The customer's book."""
        return await self.cache.get(
            (tenant_id, customer_id), lambda: self._store.customer_book(tenant_id, customer_id)
        )

    def forget_payload(self, payload: str) -> None:
        """Drop the book a NOTIFY payload names."""
        tenant_id, _, customer_id = payload.partition(":")
        self.cache.forget((tenant_id, customer_id))
