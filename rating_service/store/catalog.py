"""The catalog in PostgreSQL: rows in their document form, written only through a checked plan."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rating_service.core.pricing.catalog import Catalog, CatalogChange, ChangeKind
from rating_service.core.pricing.meter import product_from_dict
from rating_service.core.pricing.rate_card import RateCardHistory, rate_card_from_dict
from rating_service.store.schema import audit_log, catalog_revisions, products, rate_cards

CATALOG_CHANNEL = "rating_catalog"

Planner = Callable[[Catalog], Sequence[CatalogChange]]


class CatalogStore:
    """Loads a tenant's catalog and applies plans to it, one writer per tenant at a time."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def load(self, tenant_id: str) -> tuple[int, Catalog]:
        """The tenant's catalog revision and catalog."""
        async with self._engine.connect() as conn:
            return await _load(conn, tenant_id)

    async def change(self, tenant_id: str, plan: Planner, actor: str) -> list[CatalogChange]:
        """Plan against the current catalog under the tenant's catalog lock, then write the plan.

        The lock makes planning and writing one step, so two writers never both pass the
        overlap checks with versions that overlap each other.
        """
        async with self._engine.begin() as conn:
            await conn.execute(
                pg_insert(catalog_revisions)
                .values(tenant_id=tenant_id, revision=0)
                .on_conflict_do_nothing()
            )
            await conn.execute(
                select(catalog_revisions.c.revision)
                .where(catalog_revisions.c.tenant_id == tenant_id)
                .with_for_update()
            )
            _, current = await _load(conn, tenant_id)
            changes = list(plan(current))
            if not changes:
                return []
            for change in changes:
                await _write(conn, tenant_id, change)
                await conn.execute(
                    insert(audit_log).values(
                        tenant_id=tenant_id,
                        actor=actor,
                        action=f"catalog.{change.kind.value.replace(' ', '_')}",
                        subject=change.key
                        if change.version is None
                        else f"{change.key}@v{change.version}",
                        details={"after": dict(change.after)},
                    )
                )
            await conn.execute(
                update(catalog_revisions)
                .where(catalog_revisions.c.tenant_id == tenant_id)
                .values(revision=catalog_revisions.c.revision + 1)
            )
            # Delivered at commit, so caches never reload a catalog the transaction has not made.
            await conn.execute(
                text("SELECT pg_notify(:channel, :tenant)"),
                {"channel": CATALOG_CHANNEL, "tenant": tenant_id},
            )
        return changes


async def _load(conn: AsyncConnection, tenant_id: str) -> tuple[int, Catalog]:
    revision = await conn.scalar(
        select(catalog_revisions.c.revision).where(catalog_revisions.c.tenant_id == tenant_id)
    )
    product_rows = await conn.execute(
        select(products.c.definition).where(products.c.tenant_id == tenant_id)
    )
    loaded = {p.key: p for p in (product_from_dict(row.definition) for row in product_rows)}
    card_rows = await conn.execute(
        select(rate_cards.c.definition)
        .where(rate_cards.c.tenant_id == tenant_id)
        .order_by(rate_cards.c.key, rate_cards.c.version)
    )
    versions: dict[str, list[Any]] = {}
    for row in card_rows:
        card = rate_card_from_dict(row.definition)
        versions.setdefault(card.key, []).append(card)
    histories = {key: RateCardHistory(cards) for key, cards in versions.items()}
    return int(revision or 0), Catalog(loaded, histories)


async def _write(conn: AsyncConnection, tenant_id: str, change: CatalogChange) -> None:
    after = dict(change.after)
    if change.kind is ChangeKind.CREATE_PRODUCT:
        await conn.execute(
            insert(products).values(tenant_id=tenant_id, key=change.key, definition=after)
        )
    elif change.kind is ChangeKind.UPDATE_PRODUCT:
        await conn.execute(
            update(products)
            .where(products.c.tenant_id == tenant_id, products.c.key == change.key)
            .values(definition=after, updated_at=func.now())
        )
    elif change.kind is ChangeKind.CREATE_RATE_CARD_VERSION:
        card = rate_card_from_dict(after)
        await conn.execute(
            insert(rate_cards).values(
                tenant_id=tenant_id,
                key=card.key,
                version=card.version,
                effective_from=card.effective_from,
                effective_until=card.effective_until,
                definition=after,
            )
        )
    else:
        card = rate_card_from_dict(after)
        await conn.execute(
            update(rate_cards)
            .where(
                rate_cards.c.tenant_id == tenant_id,
                rate_cards.c.key == card.key,
                rate_cards.c.version == card.version,
                rate_cards.c.effective_until.is_(None),
            )
            .values(effective_until=card.effective_until, definition=after)
        )
