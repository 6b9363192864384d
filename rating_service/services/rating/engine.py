"""RateAndDebit's engine: resolve events from memory, rate them in group commits.

Concurrent events are gathered while the previous batch commits and written in one
transaction (DESIGN.md §8): a hot contract costs one lock round per batch instead of one per
event. Each caller is answered only after its batch's commit returned, and synchronous_commit
stays on, so every answer is durable. A batch shares a commit, never a fate: a refused event
changes nothing and does not fail the others; a batch the database refuses is split until the
event it refuses fails alone and the rest commit; a conflict with another writer is retried
with backoff and, if it persists, answered ABORTED; an outage is answered UNAVAILABLE. Every
one of those answers is safe to retry with the same event_id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from rating_service.background import stop_task
from rating_service.core.contracts.contract import LateUsage, billing_period_containing
from rating_service.core.contracts.pools import Pool
from rating_service.core.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
)
from rating_service.core.ledger.accounts import Account
from rating_service.core.ledger.idempotency import payload_fingerprint
from rating_service.core.ledger.transfers import Transfer
from rating_service.core.pricing.meter import UsageEvent
from rating_service.core.rating.rate import (
    PeriodLedger,
    PreparedEvent,
    prepare_event,
    rate_prepared,
)
from rating_service.core.rating.rated_event import RatedEvent
from rating_service.faults import Failure, classify_failure, shutting_down, unexpected_failure
from rating_service.outbox.topics import Alert, AutoRechargeDue, OutboxPayload, Topic
from rating_service.services.catalog import Catalogs
from rating_service.services.rating.rate_limiter import BucketTable, RateLimiter
from rating_service.services.rating.reservations import RESERVATION_NOT_HELD, Reservations
from rating_service.store.books import ContractBooks
from rating_service.store.database import Connection
from rating_service.store.rating import (
    BatchWrite,
    EntryMark,
    RatingStore,
    StoredOutcome,
    contract_accounts,
    pools_with_balances,
)

log = logging.getLogger("rating.engine")

IDEMPOTENCY_KEY_MISMATCH = "IDEMPOTENCY_KEY_MISMATCH"

CONFLICT_ATTEMPTS = 4
"""Tries of a batch that conflicts with another writer before its events are isolated."""

CONFLICT_BACKOFF_SECONDS = 0.005
"""The first retry's mean pause; each later one doubles it (full jitter)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """An event's answer, and whether it is the stored answer of an earlier call."""

    result: RatedEvent
    replay: bool


@dataclass(eq=False, slots=True)
class _Pending:
    prepared: PreparedEvent
    capture: str | None = None
    """The reservation this event captures: its holds are voided in the same transaction."""
    future: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


Twin = Callable[[], Awaitable[Outcome]]
"""An event whose id is in flight already: called, it waits for that one and answers."""


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
        limiter: RateLimiter | None = None,
        counted: Callable[[Iterable[tuple[str, datetime]]], None] = lambda periods: None,
    ) -> None:
        self._store = store
        self._limiter = limiter or RateLimiter(BucketTable())
        # Told the (contract, period start) of every committed batch: their counters moved.
        self._counted = counted
        self._catalogs = catalogs
        self._books = books
        self._reservations = reservations
        self._max_batch = max_batch
        self._committers = committers
        self._clock = clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._inflight: dict[tuple[str, str], _Pending] = {}
        self._known_accounts: set[str] = set()
        """Revenue and overage accounts known to exist: opened by a committed batch or seen."""
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the committers."""
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name=f"debit-committer-{n}")
            for n in range(self._committers)
        ]

    async def stop(self) -> None:
        """Stop the committers; events not yet answered are told to retry."""
        for task in self._tasks:
            await stop_task(task)
        while not self._queue.empty():
            _tell_to_retry([self._queue.get_nowait()])

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
        if isinstance(ready, Outcome):
            return ready
        if isinstance(ready, _Pending):
            return await self._enqueue(ready)
        return await ready()

    async def rate_in_order(
        self, tenant_id: str, events: list[tuple[str, str, UsageEvent]]
    ) -> list[Outcome | DomainError]:
        """Rate (customer id, event id, event) triples, debited in the order given."""
        ready: list[Outcome | DomainError | _Pending | Twin] = []
        try:
            for customer_id, event_id, event in events:
                try:
                    ready.append(await self._prepare(tenant_id, customer_id, event_id, event))
                except Exception as error:
                    ready.append(_answer_for(error))
        finally:
            # Queued with no await in between, so one committer takes them together, in order;
            # queued even when the caller has gone, so no event id stays in flight for ever.
            waiting = [self._enqueue(r) if isinstance(r, _Pending) else r for r in ready]
        results: list[Outcome | DomainError] = []
        for item in waiting:
            if isinstance(item, Outcome | DomainError):
                results.append(item)
                continue
            try:
                results.append(await (item if isinstance(item, asyncio.Future) else item()))
            except Exception as error:
                results.append(_answer_for(error))
        return results

    async def submit(
        self, tenant_id: str, customer_id: str, event_id: str, event: UsageEvent
    ) -> Awaitable[Outcome]:
        """Queue one event behind every event submitted before it; await the result to answer it.

        For a caller that feeds events one at a time (a stream): each is resolved and queued
        before this returns, so successive submits are debited in the order made, sharing group
        commits, while their answers are awaited elsewhere. A refusal is raised by the awaitable.
        An event whose id is in flight already is answered here, after its twin: rated afresh
        after a refused twin, it is still debited before the events submitted after it.
        """
        try:
            ready = await self._prepare(tenant_id, customer_id, event_id, event)
            if not isinstance(ready, Outcome | _Pending):
                ready = await ready()
        except Exception as error:
            return _settled(_answer_for(error))
        if isinstance(ready, Outcome):
            return _settled(ready)
        return self._enqueue(ready)

    async def _prepare(
        self,
        tenant_id: str,
        customer_id: str,
        event_id: str,
        event: UsageEvent,
        capture: str | None = None,
    ) -> Outcome | _Pending | Twin:
        """Resolve an event against the caches: an answer now, work to queue, or a twin to await."""
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
        retry = functools.partial(self.rate, tenant_id, customer_id, event_id, event, capture)
        inflight = self._inflight.get(key)
        if inflight is not None:
            return functools.partial(_after_twin, inflight, fingerprint, retry)
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
            return functools.partial(_after_twin, inflight, fingerprint, retry)
        # After the twin checks (a twin is one request) and before any database work: a
        # flood over the limit is refused from memory. A retry counts like any request.
        self._limiter.admit(prepared)
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
            try:
                await self._commit(batch)
            finally:
                # Stopped mid-commit, the outcome is unknown: a retry with the same id finds it.
                _tell_to_retry(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        """Commit a batch and answer it; split a refused batch until the culprit fails alone."""
        failure = await self._commit_with_retries(batch)
        if failure is None:
            return
        fault, error = failure
        if fault is Failure.OUTAGE or len(batch) == 1:
            answer = _answer_for(error)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(answer)
            return
        log.info("isolating the events of a refused batch", extra={"events": len(batch)})
        # Halves in order, so the events of one BatchRateAndDebit still debit in its order.
        middle = len(batch) // 2
        await self._commit(batch[:middle])
        await self._commit(batch[middle:])

    async def _commit_with_retries(self, batch: list[_Pending]) -> tuple[Failure, Exception] | None:
        """Commit and answer a batch, retrying conflicts; else why it could not commit."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                answers, opened = await self._commit_once(batch)
            except DomainError as error:
                # A rule one of the events broke outside the per-event checks: isolate it like
                # any refusal, so the others still commit.
                return Failure.BUG, error
            except Exception as error:
                fault = Failure.CONFLICT if _twin_committed(error) else classify_failure(error)
                if fault is Failure.CONFLICT and attempt + 1 < CONFLICT_ATTEMPTS:
                    # Another writer (another server, a reservation sweep) holds what we need.
                    await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS * 2**attempt))
                    continue
                return fault, error
            # Only a committed transaction's accounts exist: remember them now, not before.
            self._known_accounts.update(opened)
            for pending, answer in answers:
                if pending.future.done():
                    continue
                if isinstance(answer, BaseException):
                    pending.future.set_exception(answer)
                else:
                    pending.future.set_result(answer)
            return None
        raise AssertionError("unreachable: the last attempt returns")

    async def _commit_once(
        self, batch: list[_Pending]
    ) -> tuple[list[tuple[_Pending, Outcome | DomainError]], set[str]]:
        """One transaction of five round trips: begin, lock, read, write, commit.

        Returns the batch's answers and the accounts it opened.
        """
        answers: list[tuple[_Pending, Outcome | DomainError]] = []
        opened: set[str] = set()
        tenant_of = _tenants_of(batch)
        async with self._store.connection() as conn, conn.transaction():
            ledgers = await self._store.lock_periods(conn, tenant_of, _periods_of(batch))
            moved = self._roll_forward_late_usage(batch, ledgers)
            if moved:
                # Open periods start after closed ones, so locking them now keeps the lock order.
                ledgers.update(await self._store.lock_periods(conn, tenant_of, moved))
            products: dict[str, set[str]] = {}
            currencies: dict[str, str] = {}
            terms: dict[str, tuple[Pool, ...]] = {}
            for p in batch:
                contract = p.prepared.contract
                products.setdefault(contract.contract_id, set()).update(
                    m.product.key for m in p.prepared.measured
                )
                currencies[contract.contract_id] = contract.invoice_currency.code
                if contract.contract_id not in terms:
                    book = await self._books.book(p.prepared.tenant_id, contract.customer_id)
                    terms[contract.contract_id] = book.pools.get(contract.contract_id, ())
            await self._store.open_contract_accounts(
                conn, tenant_of, products, currencies, self._known_accounts, opened
            )
            keys = [(p.prepared.tenant_id, p.prepared.event_id) for p in batch]
            # Read under the period locks: another server rating the same event (same
            # contract, same period) has committed by now or waits for us, so either way we
            # see its answer.
            stored, accounts = await self._store.read_locked(
                conn,
                tenant_of,
                ledgers,
                keys,
                contract_accounts(tenant_of, products, terms),
                _marks_of(batch),
            )
            fresh: list[_Pending] = []
            for pending, key in zip(batch, keys, strict=True):
                earlier = stored.get(key)
                if earlier is None:
                    fresh.append(pending)
                elif earlier.fingerprint != pending.prepared.fingerprint:
                    answers.append((pending, _mismatch(key[1])))
                else:
                    answers.append((pending, Outcome(earlier.result, replay=True)))
            if fresh:
                answers.extend(await self._rate_fresh(conn, fresh, ledgers, accounts, terms))
        self._counted(ledgers)
        return answers, opened

    def _roll_forward_late_usage(
        self, batch: list[_Pending], ledgers: Mapping[tuple[str, datetime], PeriodLedger]
    ) -> dict[tuple[str, datetime], datetime]:
        """Move late events of closed periods into the open one, where the contract says so.

        Returns the open periods to lock. An event whose contract refuses late usage, or has
        no period open now, stays where it is and is refused as PERIOD_CLOSED.
        """
        moved: dict[tuple[str, datetime], datetime] = {}
        now = self._clock()
        for pending in batch:
            prepared = pending.prepared
            contract = prepared.contract
            ledger = ledgers[(contract.contract_id, prepared.period[0])]
            if ledger.state == "open" or contract.late_usage is not LateUsage.ROLL_FORWARD:
                continue
            if not contract.covers(now):
                continue
            period = billing_period_containing(contract, now)
            pending.prepared = replace(prepared, period=period, invoiced_period=prepared.period)
            if (contract.contract_id, period[0]) not in ledgers:
                moved[(contract.contract_id, period[0])] = period[1]
        return moved

    async def _rate_fresh(
        self,
        conn: Connection,
        fresh: list[_Pending],
        locked: Mapping[tuple[str, datetime], PeriodLedger],
        accounts: dict[str, Account],
        terms: Mapping[str, tuple[Pool, ...]],
    ) -> list[tuple[_Pending, Outcome | DomainError]]:
        periods = _periods_of(fresh)
        ledgers = {key: locked[key] for key in periods}  # replays' periods are not rewritten
        pools: dict[str, dict[str, Pool]] = {}
        answers: list[tuple[_Pending, Outcome | DomainError]] = []
        transfers: dict[str, list[Transfer]] = {}
        captured: list[tuple[str, str]] = []
        rated: list[tuple[str, str, RatedEvent, datetime, Decimal]] = []
        outbox: list[tuple[str, Topic, str, OutboxPayload]] = []
        for p in fresh:
            prepared = p.prepared
            contract_id = prepared.contract.contract_id
            if contract_id not in pools:
                pools[contract_id] = pools_with_balances(terms[contract_id], accounts)
            released: tuple[Transfer, ...] = ()
            available = pools[contract_id]
            try:
                if p.capture is not None:
                    if (prepared.tenant_id, p.capture) in captured:
                        # Its row says "held" until the batch writes: one capture per hold.
                        raise FailedPrecondition(
                            f"reservation {p.capture!r} is being captured by another event",
                            reason=RESERVATION_NOT_HELD,
                        )
                    hold = await self._reservations.held(conn, prepared.tenant_id, p.capture)
                    released, available = hold.release(), hold.released_from(available)
                invoiced = prepared.invoiced_period
                outcome = rate_prepared(
                    prepared,
                    available,
                    ledgers[(contract_id, prepared.period[0])],
                    None if invoiced is None else locked.get((contract_id, invoiced[0])),
                )
            except DomainError as error:
                answers.append((p, error))
                continue
            pools[contract_id] = outcome.pools_after
            transfers.setdefault(prepared.tenant_id, []).extend((*released, *outcome.transfers))
            if p.capture is not None:
                captured.append((prepared.tenant_id, p.capture))
            rated.append(
                (
                    prepared.tenant_id,
                    prepared.fingerprint,
                    outcome.result,
                    prepared.at,
                    outcome.cost,
                )
            )
            outbox.extend(
                (
                    prepared.tenant_id,
                    Topic.ALERT,
                    Topic.ALERT.dedupe_key(prepared.tenant_id, f"{prepared.event_id}:{n}"),
                    Alert(
                        contract_id=contract_id,
                        event_id=prepared.event_id,
                        kind=alert.kind,
                        subject=alert.subject,
                        threshold=str(alert.threshold),
                        value=str(alert.value),
                    ),
                )
                for n, alert in enumerate(outcome.result.alerts)
            )
            if outcome.recharge_due:
                outbox.append(
                    (
                        prepared.tenant_id,
                        Topic.AUTO_RECHARGE,
                        Topic.AUTO_RECHARGE.dedupe_key(prepared.tenant_id, prepared.event_id),
                        AutoRechargeDue(contract_id=contract_id, event_id=prepared.event_id),
                    )
                )
            answers.append((p, Outcome(outcome.result, replay=False)))
        await self._store.write_batch(
            conn,
            BatchWrite(
                transfers, accounts, ledgers, periods, _tenants_of(fresh), rated, outbox, captured
            ),
        )
        return answers


def _periods_of(batch: list[_Pending]) -> dict[tuple[str, datetime], datetime]:
    """(contract id, period start) → period end of the batch's events."""
    return {
        (p.prepared.contract.contract_id, p.prepared.period[0]): p.prepared.period[1] for p in batch
    }


def _marks_of(batch: list[_Pending]) -> list[EntryMark]:
    """Where the batch's events fall among their meters' entries (distinct values, readings)."""
    return [
        (
            p.prepared.tenant_id,
            p.prepared.contract.contract_id,
            p.prepared.period[0],
            m.product.key,
            m.cell,
            m.mark,
        )
        for p in batch
        for m in p.prepared.measured
        if m.mark is not None
    ]


def _tenants_of(batch: list[_Pending]) -> dict[str, str]:
    """contract id → tenant id of the batch's events (the store keys every row by both)."""
    return {p.prepared.contract.contract_id: p.prepared.tenant_id for p in batch}


async def _after_twin(twin: _Pending, fingerprint: str, retry: Twin) -> Outcome:
    """Answer an event whose id is in flight: wait for it, then replay, refuse or rate afresh."""
    try:
        outcome = await asyncio.shield(twin.future)
    except DomainError:
        if twin.prepared.fingerprint == fingerprint:
            raise  # the same request: the same answer
        return await retry()  # another payload was refused and stored nothing: rate this one
    _check_same_payload(twin.prepared.fingerprint, fingerprint, twin.prepared.event_id)
    return Outcome(outcome.result, replay=True)


def _settled(answer: Outcome | DomainError) -> asyncio.Future[Outcome]:
    """An answer known already, as the awaitable `submit` returns."""
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    if isinstance(answer, Outcome):
        future.set_result(answer)
    else:
        future.set_exception(answer)
    return future


def _answer_for(error: Exception) -> DomainError:
    """The answer of an event that failed outside the rules of rating: its own, or retryable."""
    if isinstance(error, DomainError):
        return error
    return unexpected_failure("debit", error)


def _twin_committed(error: Exception) -> bool:
    """Whether another server committed an event of the batch first (on retry it is stored).

    A twin of the same payload waits on the period lock and never gets here; one with another
    payload may rate another contract, so only the event's keys catch it: its usage transfers
    (posted first) or its rated event. A bug that breaks them fails the same way on every try.
    """
    return isinstance(error, asyncpg.UniqueViolationError) and error.constraint_name in (
        "pk_transfers",
        "pk_rated_events",
    )


def _tell_to_retry(batch: list[_Pending]) -> None:
    """Answer the events of a batch still unanswered with a retryable refusal."""
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(shutting_down())


def _check_same_payload(stored: str, offered: str, event_id: str) -> None:
    if stored != offered:
        raise _mismatch(event_id)


def _mismatch(event_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"event {event_id!r} was already rated with a different payload",
        reason=IDEMPOTENCY_KEY_MISMATCH,
        metadata={"event_id": event_id},
    )
