"""RateAndDebit's engine: resolve events from memory, rate them in group commits.

Concurrent events are gathered while the previous batch commits and written in one
transaction (DESIGN.md §8): a hot contract costs one lock round per batch instead of one per
event. Each caller is answered only after its batch's commit returned, and synchronous_commit
stays on, so every answer is durable. A refused event changes nothing and does not fail the
others; a batch that fails in the database fails its callers, who retry with the same event_id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from rating_service.background import stop_task
from rating_service.catalogs import Catalogs
from rating_service.contracts.contract import LateUsage, billing_period_containing
from rating_service.contracts.pools import Pool
from rating_service.domain.errors import AlreadyExists, DomainError
from rating_service.ledger.idempotency import payload_fingerprint
from rating_service.ledger.transfers import Transfer
from rating_service.pricing.meter import UsageEvent
from rating_service.rating.books import ContractBooks
from rating_service.rating.rate import PeriodLedger, PreparedEvent, prepare_event, rate_prepared
from rating_service.rating.rated_event import RatedEvent
from rating_service.rating.reservations import Reservations
from rating_service.store.database import Connection
from rating_service.store.rating import (
    BatchWrite,
    RatingStore,
    StoredOutcome,
    pools_with_balances,
)

log = logging.getLogger("rating.engine")

IDEMPOTENCY_KEY_MISMATCH = "IDEMPOTENCY_KEY_MISMATCH"


@dataclass(frozen=True, slots=True)
class Outcome:
    """An event's answer, and whether it is the stored answer of an earlier call."""

    result: RatedEvent
    replay: bool


AUTO_RECHARGE = "auto_recharge"
"""Outbox topic: a contract's prepaid balance crossed below its auto-recharge threshold."""


@dataclass(eq=False, slots=True)
class _Pending:
    prepared: PreparedEvent
    capture: str | None = None
    """The reservation this event captures: its holds are voided in the same transaction."""
    future: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DebitEngine:
    """Rates events against contracts and debits pools, many events per transaction."""

    def __init__(
        self,
        store: RatingStore,
        catalogs: Catalogs,
        books: ContractBooks,
        reservations: Reservations,
        *,
        max_batch: int = 512,
        committers: int = 1,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._catalogs = catalogs
        self._books = books
        self._reservations = reservations
        self._max_batch = max_batch
        self._committers = committers
        self._clock = clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._inflight: dict[tuple[str, str], _Pending] = {}
        self._known_revenue: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the committers."""
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name=f"debit-committer-{n}")
            for n in range(self._committers)
        ]

    async def stop(self) -> None:
        """Stop the committers once their current batch is done."""
        for task in self._tasks:
            await stop_task(task)

    async def rate(
        self,
        tenant_id: str,
        customer_id: str,
        event_id: str,
        event: UsageEvent,
        capture: str | None = None,
    ) -> Outcome:
        """Rate and debit one event (idempotent on tenant × event_id), capturing a hold if given."""
        ready = await self._prepare(tenant_id, customer_id, event_id, event, capture)
        return ready if isinstance(ready, Outcome) else await self._enqueue(ready)

    async def rate_in_order(
        self, tenant_id: str, events: list[tuple[str, str, UsageEvent]]
    ) -> list[Outcome | DomainError]:
        """Rate (customer id, event id, event) triples, debited in the order given."""
        ready: list[Outcome | DomainError | _Pending] = []
        for customer_id, event_id, event in events:
            try:
                ready.append(await self._prepare(tenant_id, customer_id, event_id, event))
            except DomainError as error:
                ready.append(error)
        # Queued with no await in between, so one committer takes them together, in order.
        waiting = [self._enqueue(r) if isinstance(r, _Pending) else r for r in ready]
        results: list[Outcome | DomainError] = []
        for item in waiting:
            try:
                results.append(item if isinstance(item, Outcome | DomainError) else await item)
            except DomainError as error:
                results.append(error)
        return results

    async def _prepare(
        self,
        tenant_id: str,
        customer_id: str,
        event_id: str,
        event: UsageEvent,
        capture: str | None = None,
    ) -> Outcome | _Pending:
        """Resolve an event against the caches: an answer now (a replay), or work to queue."""
        fingerprint = payload_fingerprint(
            {
                "customer_id": customer_id,
                "event_type": event.event_type,
                "timestamp": event.timestamp,
                "properties": dict(event.properties),
                "capture": capture,
            }
        )
        key = (tenant_id, event_id)
        inflight = self._inflight.get(key)
        if inflight is not None:
            _check_same_payload(inflight.prepared.fingerprint, fingerprint, event_id)
            outcome = await asyncio.shield(inflight.future)
            return Outcome(outcome.result, replay=True)
        try:
            catalog = await self._catalogs.catalog(tenant_id)
            book = await self._books.book(tenant_id, customer_id)
            prepared = prepare_event(
                catalog, book.contracts, tenant_id, event_id, fingerprint, event, self._clock()
            )
        except DomainError:
            # An event rated before the catalog or contract changed still replays its answer.
            stored = await self._stored(key)
            if stored is None:
                raise
            _check_same_payload(stored.fingerprint, fingerprint, event_id)
            return Outcome(stored.result, replay=True)
        inflight = self._inflight.get(key)
        if inflight is not None:  # a twin arrived while we were resolving
            _check_same_payload(inflight.prepared.fingerprint, fingerprint, event_id)
            outcome = await asyncio.shield(inflight.future)
            return Outcome(outcome.result, replay=True)
        pending = _Pending(prepared, capture)
        self._inflight[key] = pending
        pending.future.add_done_callback(lambda _: self._inflight.pop(key, None))
        return pending

    def _enqueue(self, pending: _Pending) -> asyncio.Future[Outcome]:
        self._queue.put_nowait(pending)
        return asyncio.shield(pending.future)

    async def _stored(self, key: tuple[str, str]) -> StoredOutcome | None:
        async with self._store.pool.acquire() as conn:
            return (await self._store.stored_outcomes(conn, [key])).get(key)

    async def _commit_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        for attempt in range(3):
            try:
                answers = await self._commit_once(batch)
            except asyncpg.UniqueViolationError:
                # Another server committed one of these events first: on retry it is a replay.
                log.info("batch raced a duplicate; retrying", extra={"attempt": attempt})
                continue
            except asyncpg.DeadlockDetectedError:
                continue
            except Exception as exc:
                log.exception("debit batch failed", extra={"events": len(batch)})
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                return
            for pending, answer in answers:
                if pending.future.done():
                    continue
                if isinstance(answer, BaseException):
                    pending.future.set_exception(answer)
                else:
                    pending.future.set_result(answer)
            return
        error = DomainError("the debit could not be committed; retry with the same event_id")
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    async def _commit_once(
        self, batch: list[_Pending]
    ) -> list[tuple[_Pending, Outcome | DomainError]]:
        answers: list[tuple[_Pending, Outcome | DomainError]] = []
        async with self._store.pool.acquire() as conn, conn.transaction():
            keys = [(p.prepared.tenant_id, p.prepared.event_id) for p in batch]
            stored = await self._store.stored_outcomes(conn, keys)
            fresh: list[_Pending] = []
            for pending, key in zip(batch, keys, strict=True):
                earlier = stored.get(key)
                if earlier is None:
                    fresh.append(pending)
                elif earlier.fingerprint != pending.prepared.fingerprint:
                    answers.append((pending, _mismatch(key[1])))
                else:
                    answers.append((pending, Outcome(earlier.result, replay=True)))
            if not fresh:
                return answers
            answers.extend(await self._rate_fresh(conn, fresh))
        return answers

    def _roll_forward_late_usage(
        self, fresh: list[_Pending], ledgers: Mapping[tuple[str, datetime], PeriodLedger]
    ) -> dict[tuple[str, datetime], datetime]:
        """Move late events of closed periods into the open one, where the contract says so.

        Returns the open periods to lock. An event whose contract refuses late usage, or has
        no period open now, stays where it is and is refused as PERIOD_CLOSED.
        """
        moved: dict[tuple[str, datetime], datetime] = {}
        now = self._clock()
        for pending in fresh:
            prepared = pending.prepared
            contract = prepared.contract
            ledger = ledgers[(contract.contract_id, prepared.period[0])]
            if ledger.state == "open" or contract.late_usage is not LateUsage.ROLL_FORWARD:
                continue
            if not contract.covers(now):
                continue
            period = billing_period_containing(contract, now)
            pending.prepared = replace(prepared, period=period)
            if (contract.contract_id, period[0]) not in ledgers:
                moved[(contract.contract_id, period[0])] = period[1]
        return moved

    async def _rate_fresh(
        self, conn: Connection, fresh: list[_Pending]
    ) -> list[tuple[_Pending, Outcome | DomainError]]:
        periods = {
            (p.prepared.contract.contract_id, p.prepared.period[0]): p.prepared.period[1]
            for p in fresh
        }
        ledgers = await self._store.lock_periods(conn, periods)
        moved = self._roll_forward_late_usage(fresh, ledgers)
        if moved:
            # Open periods start after closed ones, so locking them now keeps the lock order.
            ledgers.update(await self._store.lock_periods(conn, moved))
            periods.update(moved)
        products: dict[str, set[str]] = {}
        tenant_of: dict[str, str] = {}
        currencies: dict[str, str] = {}
        terms: dict[str, tuple[Pool, ...]] = {}
        for p in fresh:
            contract = p.prepared.contract
            products.setdefault(contract.contract_id, set()).update(
                m.product.key for m in p.prepared.measured
            )
            tenant_of[contract.contract_id] = p.prepared.tenant_id
            currencies[contract.contract_id] = contract.invoice_currency.code
            if contract.contract_id not in terms:
                book = await self._books.book(p.prepared.tenant_id, contract.customer_id)
                terms[contract.contract_id] = book.pools.get(contract.contract_id, ())
        accounts = await self._store.lock_contract_accounts(
            conn, tenant_of, products, currencies, self._known_revenue, terms
        )
        pools: dict[str, dict[str, Pool]] = {}
        answers: list[tuple[_Pending, Outcome | DomainError]] = []
        transfers: dict[str, list[Transfer]] = {}
        captured: list[tuple[str, str]] = []
        rated: list[tuple[str, str, RatedEvent, datetime]] = []
        outbox: list[tuple[str, str, str, dict[str, Any]]] = []
        for p in fresh:
            prepared = p.prepared
            contract_id = prepared.contract.contract_id
            if contract_id not in pools:
                pools[contract_id] = pools_with_balances(terms[contract_id], accounts)
            released: tuple[Transfer, ...] = ()
            available = pools[contract_id]
            try:
                if p.capture is not None:
                    hold = await self._reservations.held(conn, prepared.tenant_id, p.capture)
                    released, available = hold.release(), hold.released_from(available)
                outcome = rate_prepared(
                    prepared, available, ledgers[(contract_id, prepared.period[0])]
                )
            except DomainError as error:
                answers.append((p, error))
                continue
            pools[contract_id] = outcome.pools_after
            transfers.setdefault(prepared.tenant_id, []).extend((*released, *outcome.transfers))
            if p.capture is not None:
                captured.append((prepared.tenant_id, p.capture))
            rated.append((prepared.tenant_id, prepared.fingerprint, outcome.result, prepared.at))
            outbox.extend(
                (
                    prepared.tenant_id,
                    "alert",
                    f"alert:{prepared.tenant_id}:{prepared.event_id}:{n}",
                    {
                        "contract_id": contract_id,
                        "event_id": prepared.event_id,
                        "kind": alert.kind,
                        "subject": alert.subject,
                        "threshold": str(alert.threshold),
                        "value": str(alert.value),
                    },
                )
                for n, alert in enumerate(outcome.result.alerts)
            )
            if outcome.recharge_due:
                outbox.append(
                    (
                        prepared.tenant_id,
                        AUTO_RECHARGE,
                        f"{AUTO_RECHARGE}:{prepared.tenant_id}:{prepared.event_id}",
                        {"contract_id": contract_id, "event_id": prepared.event_id},
                    )
                )
            answers.append((p, Outcome(outcome.result, replay=False)))
        await self._store.write_batch(
            conn,
            BatchWrite(transfers, accounts, ledgers, periods, rated, outbox, captured),
        )
        return answers


def _check_same_payload(stored: str, offered: str, event_id: str) -> None:
    if stored != offered:
        raise _mismatch(event_id)


def _mismatch(event_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"event {event_id!r} was already rated with a different payload",
        reason=IDEMPOTENCY_KEY_MISMATCH,
        metadata={"event_id": event_id},
    )
