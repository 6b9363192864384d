"""The chaos load: callers with their own ids, every attempt journaled, unanswered calls retried."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from chaos_check import DEFINITIVE
from chaos_options import Options
from chaos_stack import CHANNEL_OPTIONS, Stack
from chaos_tenant import CUSTOMERS, Tenant
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from rating_client.errors import decode_rich_status, error_info
from rating_client.gen.rating.v1 import rating_pb2, rating_pb2_grpc

CALL_TIMEOUT_SECONDS = 3.0


@dataclass
class Unit:
    """One call that must be answered definitively: its RPC, request, and the events in it."""

    op: str
    """rate, batch, authorize, capture or void."""
    key: str
    request: Any
    """The RPC's request message."""
    settled: bool = False
    outcome: str = ""
    """The settling answer's code (for a batch: OK once every item is answered)."""
    response: Any = None


METHODS = {
    "rate": "RateAndDebit",
    "batch": "BatchRateAndDebit",
    "authorize": "Authorize",
    "capture": "Capture",
    "void": "Void",
}
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def answer_of(event_id: str, response: rating_pb2.RateAndDebitResponse) -> dict[str, Any]:
    """The journal's form of a charged event's answer."""
    return {
        "event_id": event_id,
        "code": "OK",
        "reason": "",
        "replay": response.replay,
        "charge": response.charge,
        "contract_id": response.contract_id,
    }


def events_of(unit: Unit) -> list[str]:
    """Event ids in a unit's request."""
    if unit.op == "rate" or unit.op == "capture":
        return [unit.request.event.event_id]
    if unit.op == "batch":
        return [e.event_id for e in unit.request.events]
    return []


class Load:
    """The callers, the journal, and what the status line shows."""

    def __init__(self, stack: Stack, tenant: Tenant, opts: Options, journal: Path) -> None:
        self.stack = stack
        self.tenant = tenant
        self.opts = opts
        self.clock = stack.clock
        self.rng = random.Random(opts.seed)
        self.channels = [aio.insecure_channel(a, options=CHANNEL_OPTIONS) for a in stack.addresses]
        self.stubs = [rating_pb2_grpc.RatingServiceStub(c) for c in self.channels]
        self.metadata = (("authorization", f"Bearer {tenant.rater_token}"),)
        self._journal = journal.open("a")
        self.stop = asyncio.Event()
        self.pending: list[Unit] = []
        """Units left unanswered after their attempts; retried after the load."""
        self.open_reservations: dict[str, Unit] = {}
        """Authorized reservations not yet captured or voided."""
        self.attempts = 0
        self.ok = 0
        self.codes: Counter[str] = Counter()
        self.last_ok: dict[int, float] = {}
        self._ids = 0
        self._names = [c.name for c in CUSTOMERS]
        self._weights = [c.weight for c in CUSTOMERS]

    async def close(self) -> None:
        """Close the channels and the journal."""
        for channel in self.channels:
            await channel.close(grace=None)
        self._journal.close()

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{self.clock.name}-{prefix}-{self._ids:06d}"

    # --- what is sent ----------------------------------------------------------------------

    def usage_event(self, customer: str | None = None) -> rating_pb2.UsageEvent:
        """A usage event of a random kind for a customer drawn by traffic weight."""
        rng = self.rng
        name = customer or rng.choices(self._names, self._weights)[0]
        roll = rng.random()
        if roll < 0.75:
            event_type = "llm.completion"
            properties = {
                "model": rng.choice(("gpt-4o", "gpt-4o-mini")),
                "token_type": rng.choice(("input", "output", "cached_input")),
                "tokens": str(rng.randint(100, 3000)),
            }
        elif roll < 0.9:
            event_type, properties = "embedding.created", {"tokens": str(rng.randint(1000, 200000))}
        else:
            event_type = "image.generated"
            properties = {"quality": rng.choice(("standard", "standard", "hd"))}
        return rating_pb2.UsageEvent(
            event_id=self._next_id("ev"),
            customer_id=self.tenant.customers[name],
            event_type=event_type,
            timestamp=_timestamp(datetime.now(UTC)),
            properties=properties,
        )

    # --- one attempt -----------------------------------------------------------------------

    async def attempt(self, unit: Unit, server: int, caller: int, phase: str) -> bool:
        """Send a unit once to a server; journal it; whether it is now settled."""
        sent = self.clock.now()
        code, reason, message, response = "OK", "", "", None
        try:
            method = getattr(self.stubs[server], METHODS[unit.op])
            response = await method(
                unit.request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS
            )
        except aio.AioRpcError as error:
            code, message = error.code().name, (error.details() or "")[:200]
            status = decode_rich_status(error.trailing_metadata())
            info = None if status is None else error_info(status)
            reason = "" if info is None else info.reason
        answers = self._answers(unit, code, reason, response)
        if unit.op == "batch" and code == "OK":
            settled = all(a["code"] in DEFINITIVE for a in answers)
        else:
            settled = code in DEFINITIVE
        record = {
            "t": round(self.clock.now(), 4),
            "sent": round(sent, 4),
            "phase": phase,
            "caller": caller,
            "server": server,
            "op": unit.op,
            "key": unit.key,
            "request": json_format.MessageToDict(unit.request, preserving_proto_field_name=True),
            "code": code,
            "reason": reason,
            "message": message,
            "answers": answers,
        }
        if response is not None and unit.op in ("authorize", "void"):
            record["result"] = {"replay": response.replay}
        self._journal.write(json.dumps(record) + "\n")
        self.attempts += 1
        if code == "OK":
            self.ok += 1
            self.last_ok[server] = self.clock.now()
        else:
            self.codes[code] += 1
        for a in answers if code == "OK" else ():
            if a["code"] != "OK":
                self.codes[a["code"]] += 1
        if settled and not unit.settled:
            unit.settled, unit.outcome, unit.response = True, code, response
        return settled

    def _answers(self, unit: Unit, code: str, reason: str, response: Any) -> list[dict[str, Any]]:
        if code != "OK":
            return [{"event_id": e, "code": code, "reason": reason} for e in events_of(unit)]
        if unit.op == "rate":
            return [answer_of(unit.key, response)]
        if unit.op == "capture":
            return [answer_of(unit.request.event.event_id, response.debit)]
        if unit.op == "batch":
            answers = []
            for event, item in zip(unit.request.events, response.results, strict=False):
                if item.WhichOneof("result") == "response":
                    answers.append(answer_of(event.event_id, item.response))
                else:
                    answers.append(
                        {
                            "event_id": event.event_id,
                            "code": CODE_NAMES.get(item.error.code, str(item.error.code)),
                            "reason": item.error.reason,
                        }
                    )
            return answers
        return []

    async def settle(
        self, unit: Unit, caller: int, attempts: int | None, race: bool, phase: str = "load"
    ) -> bool:
        """Attempt a unit until definitively answered or out of attempts (None: no limit)."""
        n = 0
        deadline = time.monotonic() + self.opts.settle_seconds
        while not unit.settled:
            if attempts is not None and n >= attempts:
                return False
            if attempts is None and time.monotonic() > deadline:
                return False
            if race and n == 0 and len(self.stubs) > 1:
                await asyncio.gather(
                    *(self.attempt(unit, s, caller, phase) for s in range(len(self.stubs)))
                )
            else:
                await self.attempt(unit, self.rng.randrange(len(self.stubs)), caller, phase)
            n += 1
            if not unit.settled:
                await asyncio.sleep(min(0.05 * 2**n, 1.0) * self.rng.uniform(0.5, 1.5))
        return True

    # --- callers ---------------------------------------------------------------------------

    async def caller(self, n: int) -> None:
        """One internal service: calls in a loop until the load stops."""
        rng = self.rng
        while not self.stop.is_set():
            roll = rng.random()
            race = rng.random() < self.opts.race_fraction
            if roll < 0.6:
                event = self.usage_event()
                unit = Unit("rate", event.event_id, rating_pb2.RateAndDebitRequest(event=event))
                await self._settle_or_defer(unit, n, race)
            elif roll < 0.8:
                customer = rng.choices(self._names, self._weights)[0]
                events = [self.usage_event(customer) for _ in range(rng.randint(2, 6))]
                unit = Unit(
                    "batch", events[0].event_id, rating_pb2.BatchRateAndDebitRequest(events=events)
                )
                await self._settle_or_defer(unit, n, race)
            else:
                await self.reservation(n, race)
            await asyncio.sleep(rng.uniform(0.0, 0.04))

    async def reservation(self, n: int, race: bool) -> None:
        """Authorize, stream for a moment (holds open across faults), then capture or void."""
        rng = self.rng
        name = rng.choice(("hot", "hot", "arrears", "split"))
        reservation_id = self._next_id("rsv")
        authorize = Unit(
            "authorize",
            reservation_id,
            rating_pb2.AuthorizeRequest(
                reservation_id=reservation_id,
                customer_id=self.tenant.customers[name],
                product_key="llm-tokens",
                amount=str(Decimal(rng.randint(5, 40)) / 1000),
                timestamp=_timestamp(datetime.now(UTC)),
                ttl_seconds=30,
            ),
        )
        self.open_reservations[reservation_id] = authorize
        if not await self._settle_or_defer(authorize, n, False):
            return
        if authorize.outcome != "OK":
            self.open_reservations.pop(reservation_id, None)
            return
        await asyncio.sleep(rng.uniform(0.5, 4.0))  # the streamed completion
        if rng.random() < 0.75:
            event = self.usage_event(name)
            event.event_type = "llm.completion"
            event.properties.clear()
            event.properties.update(
                {"model": "gpt-4o", "token_type": "output", "tokens": str(rng.randint(100, 3000))}
            )
            unit = Unit(
                "capture",
                reservation_id,
                rating_pb2.CaptureRequest(reservation_id=reservation_id, event=event),
            )
        else:
            unit = Unit(
                "void", reservation_id, rating_pb2.VoidRequest(reservation_id=reservation_id)
            )
        if await self._settle_or_defer(unit, n, race and unit.op == "capture"):
            self.open_reservations.pop(reservation_id, None)

    async def _settle_or_defer(self, unit: Unit, n: int, race: bool) -> bool:
        if await self.settle(unit, n, self.opts.attempts, race):
            return True
        self.pending.append(unit)
        if unit.op in ("capture", "void"):
            # Its capture or void is retried later; voiding it as well would race that.
            self.open_reservations.pop(unit.key, None)
        return False

    # --- afterwards ------------------------------------------------------------------------

    async def settle_all(self) -> tuple[int, int]:
        """Retry every unanswered unit until answered; void reservations left open.

        Returns (units retried, still unanswered).
        """
        units = list(self.pending)
        for reservation_id, authorize in list(self.open_reservations.items()):
            units.append(
                Unit("void", reservation_id, rating_pb2.VoidRequest(reservation_id=reservation_id))
            )
            if authorize in self.pending:
                # Its Authorize is answered first (it may hold), then the void releases it.
                units.remove(authorize)
                units.insert(0, authorize)
        slots = asyncio.Semaphore(8)

        async def one(unit: Unit) -> None:
            async with slots:
                await self.settle(unit, -1, None, False, phase="settle")

        authorizes = [u for u in units if u.op == "authorize"]
        await asyncio.gather(*(one(u) for u in authorizes))
        await asyncio.gather(*(one(u) for u in units if u.op != "authorize"))
        return len(units), sum(1 for u in units if not u.settled)
