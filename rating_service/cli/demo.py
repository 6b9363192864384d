"""`rating dev --demo`: simulated services rate usage through the real API, watched live.

Three customers on short billing periods tell the product's story in a few minutes: prepaid
credit drains, a low-balance alert fires, an auto-recharge buys credit, a period closes into
an invoice that is paid, and one invoice fails on a mistyped card token until an operator
fixes the contract and replays it.

The view is made by pure functions of `DemoState` (testable without a terminal). `Demo` does
the I/O around them: the API calls, a webhook receiver for the event feed, and the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import shutil
import sys
import textwrap
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any, TextIO
from urllib.parse import urlsplit

import asyncpg
from google.protobuf import json_format
from temporalio.client import Client

from rating_client import RatingClient, RatingError
from rating_client.gen.rating.v1 import admin_pb2, contract_pb2, invoice_pb2
from rating_service.core.auth import Caller, Role
from rating_service.core.billing.invoice import invoice_id_for
from rating_service.ops.failures import InvoiceRun, failed_invoices
from rating_service.ops.replay import InvoiceReplays
from rating_service.outbox.topics import Topic
from rating_service.runtime.worker import connect_temporal
from rating_service.services.catalog import Catalogs
from rating_service.services.contract import ContractAdmin
from rating_service.services.webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    InvalidSignature,
    Notifications,
    verify_signature,
    webhook_secret_keys,
)
from rating_service.settings import Settings
from rating_service.store.catalog import CatalogStore
from rating_service.store.contract import ContractStore
from rating_service.store.database import asyncpg_dsn, create_engine

ACTOR = "rating dev --demo"
"""Who the demo's operator actions are audited as."""

FIXED_PAYMENT_METHOD = "pm_ok"
"""The token the operator saves in place of the mistyped one."""

WEBHOOK_PATH = "/rating-dev-demo"
"""Path of the demo's local webhook endpoint; earlier runs' endpoints are found by it."""

FEED_TOPICS = (
    Topic.ALERT,
    Topic.INVOICE_ISSUED,
    Topic.PAYMENT_FAILED,
    Topic.RECHARGE_SUCCEEDED,
    Topic.RECHARGE_FAILED,
    Topic.AUTO_RECHARGE_DISABLED,
    Topic.CONTRACT_SUSPENDED,
    Topic.CONTRACT_REINSTATED,
)
"""The notifications the event feed shows."""

RATE_WINDOW_SECONDS = 5.0
"""Calls per second are counted over this much recent time."""

ISSUE_WEBHOOK_WAIT_SECONDS = 10.0
"""How long an invoice seen paid waits for its `invoice.issued` webhook before it is shown paid."""


# --- What the demo does -------------------------------------------------------------------


@dataclass(frozen=True)
class DemoPlan:
    """How the demo runs: period length, the money involved, the pace of traffic."""

    period_seconds: int = 60
    periods: int = 20
    """The contracts' term, in periods: a bounded term stops billing a forgotten demo."""
    starting_credit: Decimal = Decimal("1.00")
    alert_below: Decimal = Decimal("0.40")
    recharge_below: Decimal = Decimal("0.40")
    recharge_amount: Decimal = Decimal("2.00")
    platform_fee: Decimal = Decimal("5.00")
    """Per period, in arrears; the catalog's $500 a month is too much for a minute."""
    traffic_scale: float = 1.0
    """Multiplies every service's requests per second."""
    operator_pause_seconds: float = 5.0
    """How long a failed invoice is on screen before the operator fixes it."""
    refresh_seconds: float = 1.0
    status_every_seconds: float = 5.0
    """Without a terminal: how often a status line is printed."""


@dataclass(frozen=True)
class DemoCustomer:
    """A customer the demo opens, and the part it plays in the story."""

    name: str
    story: str
    payment_method: str
    overage_policy: str
    auto_recharge: bool = False


CUSTOMERS = (
    DemoCustomer("northwind", "prepaid; refused once its credit is gone", "pm_ok", "block"),
    DemoCustomer("globex", "auto-recharge buys credit when low", "pm_ok", "arrears", True),
    # A token the simulated gateway does not know: its first invoice fails at collection.
    DemoCustomer("initech", "card token mistyped (pm_typo)", "pm_typo", "arrears"),
)


def contract_terms(
    customer: DemoCustomer, customer_id: str, plan: DemoPlan, start: datetime
) -> dict[str, object]:
    """The customer's contract in CreateContract's dict form: short periods, alert, fee."""
    period = timedelta(seconds=plan.period_seconds)
    terms: dict[str, object] = {
        "customer_id": customer_id,
        "term_start": start.isoformat(),
        "term_end": (start + period * plan.periods).isoformat(),
        "billing_anchor": {"day": 1},
        "billing_frequency": "monthly",
        "billing_interval_seconds": plan.period_seconds,
        "invoice_currency": "USD",
        "rate_card_key": "list",
        "overage_policy": customer.overage_policy,
        "payment_method": customer.payment_method,
        "overrides": [
            {
                "product_key": "platform-fee",
                "effective_from": start.isoformat(),
                # In arrears, so the first invoice comes when the first period closes.
                "replace_price": {
                    "model": "flat_fee",
                    "amount": str(plan.platform_fee),
                    "timing": "in_arrears",
                },
            }
        ],
        "alert_thresholds": [
            {
                "threshold_id": "low-balance",
                "kind": "balance_below",
                "amount": str(plan.alert_below),
            }
        ],
    }
    if customer.auto_recharge:
        terms["auto_recharge"] = {
            "threshold": str(plan.recharge_below),
            "amount": str(plan.recharge_amount),
        }
    return terms


@dataclass(frozen=True)
class Usage:
    """One billable event of a request, as the service reports it."""

    event_type: str
    properties: Mapping[str, str]
    part: str
    """Tells the events of one request apart in their ids."""


def chat_completion(rng: random.Random) -> tuple[Usage, ...]:
    """A chat completion: its input tokens, then its output tokens."""
    model = rng.choice(("gpt-4o", "gpt-4o-mini", "gpt-4.1"))
    return (
        Usage(
            "llm.completion",
            {"model": model, "token_type": "input", "tokens": str(rng.randint(300, 3000))},
            "in",
        ),
        Usage(
            "llm.completion",
            {"model": model, "token_type": "output", "tokens": str(rng.randint(50, 800))},
            "out",
        ),
    )


def embedding_batch(rng: random.Random) -> tuple[Usage, ...]:
    """A batch of documents embedded."""
    return (Usage("embedding.created", {"tokens": str(rng.randint(20_000, 200_000))}, "emb"),)


def image_generation(rng: random.Random) -> tuple[Usage, ...]:
    """One image, mostly standard quality."""
    return (
        Usage("image.generated", {"quality": rng.choice(("standard", "standard", "hd"))}, "img"),
    )


@dataclass(frozen=True)
class ServiceProfile:
    """An internal service of the AI company: what one of its requests uses, and how often."""

    name: str
    requests_per_second: float
    usage: Callable[[random.Random], tuple[Usage, ...]]


SERVICES = (
    ServiceProfile("chat-api", 3.0, chat_completion),
    ServiceProfile("embeddings-batch", 1.0, embedding_batch),
    ServiceProfile("image-gen", 1.0, image_generation),
)
"""About eight RateAndDebit calls a second, some $0.07 a second across the customers."""


# --- What the demo has seen ---------------------------------------------------------------


@dataclass
class ServiceStats:
    """One service's calls: rated, refused, and their recent pace."""

    name: str
    rated: int = 0
    refused: int = 0
    charged: Decimal = Decimal(0)
    last_refusal: str = ""
    recent: deque[float] = field(default_factory=deque)

    def record(self, at: float, charge: Decimal | None, refusal: str = "") -> None:
        """Count one call made at `at`: rated for `charge`, or refused with a reason."""
        self.recent.append(at)
        while self.recent and self.recent[0] <= at - RATE_WINDOW_SECONDS:
            self.recent.popleft()
        if charge is None:
            self.refused += 1
            self.last_refusal = refusal
        else:
            self.rated += 1
            self.charged += charge

    def per_second(self, now: float) -> float:
        """Calls per second over the last few seconds."""
        return sum(1 for at in self.recent if at > now - RATE_WINDOW_SECONDS) / RATE_WINDOW_SECONDS


@dataclass(frozen=True)
class PoolLine:
    """One credit pool, as GetBalances shows it."""

    label: str
    remaining: Decimal
    original: Decimal


@dataclass(frozen=True)
class InvoiceSeen:
    """An issued invoice of a demo contract, as ListInvoices last showed it."""

    invoice_id: str
    number: str
    state: str
    total: Decimal


@dataclass
class DemoAccount:
    """A demo customer's contract, with its balances and invoices as last read."""

    customer: DemoCustomer
    customer_id: str
    contract_id: str
    payment_method: str
    pools: tuple[PoolLine, ...] = ()
    available: Decimal = Decimal(0)
    overage: Decimal = Decimal(0)
    recharges: int = 0
    invoices: dict[str, InvoiceSeen] = field(default_factory=dict)
    issued_notified: set[str] = field(default_factory=set)
    """Invoices whose `invoice.issued` webhook has arrived."""
    paid_shown: set[str] = field(default_factory=set)

    def latest_invoice(self) -> InvoiceSeen | None:
        """The invoice issued last (numbers grow with time)."""
        return max(self.invoices.values(), key=lambda i: i.number, default=None)


@dataclass(frozen=True)
class FeedEntry:
    """Something that happened, `at` seconds into the demo."""

    at: float
    kind: str
    text: str


@dataclass
class FailedInvoice:
    """The failing invoice, and what the operator did about it."""

    workflow_id: str
    invoice_id: str
    number: str
    step: str
    error: str
    outcome: str = ""
    paid: bool = False
    charges: int = 0


@dataclass
class DemoState:
    """Everything the view shows; the demo's I/O updates it, the pure functions read it."""

    plan: DemoPlan
    started: float
    banner: str = ""
    accounts: list[DemoAccount] = field(default_factory=list)
    services: dict[str, ServiceStats] = field(default_factory=dict)
    feed: list[FeedEntry] = field(default_factory=list)
    webhooks: int = 0
    failed_invoices: list[FailedInvoice] = field(default_factory=list)

    def note(self, now: float, kind: str, text: str) -> FeedEntry:
        """Add an entry to the event feed."""
        entry = FeedEntry(now - self.started, kind, text)
        self.feed.append(entry)
        return entry

    def account(self, contract_id: str) -> DemoAccount | None:
        """The demo account of a contract; None for any other contract of the tenant."""
        return next((a for a in self.accounts if a.contract_id == contract_id), None)


# --- The view (pure) ----------------------------------------------------------------------


def money(amount: Decimal, places: int = 2) -> str:
    """Dollars to a fixed number of places, cut rather than rounded: `$0.4123`."""
    # Cut, so a balance just under a threshold never reads as the threshold itself.
    return f"${amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)}"


def elapsed(seconds: float) -> str:
    """Time into the demo: `+01:05`."""
    whole = int(seconds)
    return f"+{whole // 60:02d}:{whole % 60:02d}"


def pool_label(kind: str, cost_basis: Decimal) -> str:
    """What a pool is to the customer: free credit, bought credit or a commit."""
    if kind == "credit":
        return "bought credit" if cost_basis > 0 else "free credit"
    return kind.replace("_", " ")


def balance_bar(remaining: Decimal, original: Decimal, width: int = 12) -> str:
    """A gauge of what is left of a pool."""
    filled = 0 if original <= 0 else int(width * min(remaining / original, Decimal(1)))
    return "█" * filled + "·" * (width - filled)


def describe_notification(
    topic: str, data: Mapping[str, Any], accounts: Sequence[DemoAccount]
) -> tuple[str, str] | None:
    """The feed's (kind, text) for a webhook; None when it is not about a demo contract."""
    account = next((a for a in accounts if a.contract_id == data.get("contract_id")), None)
    if account is None:
        return None
    name = account.customer.name
    if topic == Topic.ALERT:
        if data.get("kind") == "balance_below":
            value, threshold = Decimal(data["value"]), Decimal(data["threshold"])
            return "alert", f"{name}: balance {money(value, 4)} fell below {money(threshold)}"
        return "alert", f"{name}: {data.get('kind')} alert at {data.get('value')}"
    if topic == Topic.INVOICE_ISSUED:
        total = Decimal(data["total"])
        return "invoice", f"{name}: period closed, {data['number']} issued for {money(total)}"
    if topic == Topic.PAYMENT_FAILED:
        code = data.get("decline_code") or "failed"
        return "payment", f"{name}: payment of {data['invoice_id']} declined ({code})"
    if topic == Topic.RECHARGE_SUCCEEDED:
        amount = Decimal(data["amount"])
        return "recharge", f"{name}: auto-recharge charged {money(amount)}, credit granted"
    if topic == Topic.RECHARGE_FAILED:
        return "recharge", f"{name}: auto-recharge charge declined"
    if topic == Topic.AUTO_RECHARGE_DISABLED:
        return "recharge", f"{name}: auto-recharge switched off after its last failed charge"
    if topic in (Topic.CONTRACT_SUSPENDED, Topic.CONTRACT_REINSTATED):
        return "contract", f"{name}: contract {topic.partition('.')[2]}"
    return None


def feed_line(entry: FeedEntry) -> str:
    """One event of the feed, on one line."""
    return f"{elapsed(entry.at)}  {entry.kind:<9} {entry.text}"


def wrapped_feed_line(entry: FeedEntry, width: int) -> list[str]:
    """One event of the feed, its text wrapped under itself to fit `width`."""
    head = f"{elapsed(entry.at)}  {entry.kind:<9} "
    text = textwrap.wrap(entry.text, max(width - len(head), 20), break_on_hyphens=False)
    return [head + text[0], *(" " * len(head) + more for more in text[1:])] if text else [head]


def render_screen(state: DemoState, now: float, *, width: int = 100, events: int = 12) -> list[str]:
    """The full-screen view: customers and their pools, services, the latest events."""
    plan = state.plan
    lines = [
        f"rating dev --demo  {elapsed(now - state.started)}   "
        f"{plan.period_seconds}-second billing periods   Ctrl-C to stop",
    ]
    if state.banner:
        lines.append(state.banner)
    lines += ["", f"{'CUSTOMER':<10} {'POOL':<14} {'LEFT':<12} {'BALANCE':>19}   INVOICES"]
    for account in state.accounts:
        lines += _account_lines(account)
    lines += [
        "",
        f"{'SERVICE':<17} {'CALLS/S':>7} {'RATED':>7} {'REFUSED':>7} {'CHARGED':>9}   LAST REFUSAL",
    ]
    for stats in state.services.values():
        lines.append(
            f"{stats.name:<17} {stats.per_second(now):>7.1f} {stats.rated:>7} "
            f"{stats.refused:>7} {money(stats.charged):>9}   {stats.last_refusal}"
        )
    lines += ["", f"EVENTS   (webhooks received, signatures verified: {state.webhooks})"]
    for entry in state.feed[-events:]:
        lines += wrapped_feed_line(entry, width)
    return lines


def _account_lines(account: DemoAccount) -> list[str]:
    """A customer's pools, one per line, its story and latest invoice beside the first."""
    invoice = account.latest_invoice()
    summary = (
        f"{len(account.invoices)} issued; {invoice.number} {invoice.state} {money(invoice.total)}"
        if invoice is not None
        else "none yet"
    )
    rows = [
        (pool.label, balance_bar(pool.remaining, pool.original), pool.remaining, pool.original)
        for pool in account.pools
    ] or [("no pools", balance_bar(Decimal(0), Decimal(0)), Decimal(0), Decimal(0))]
    lines = []
    for n, (label, bar, remaining, original) in enumerate(rows):
        name = account.customer.name if n == 0 else ""
        balance = f"{money(remaining, 4)} / {money(original)}"
        side = summary if n == 0 else ""
        lines.append(f"{name:<10} {label:<14} {bar:<12} {balance:>19}   {side}".rstrip())
    details = [account.customer.story, f"pays with {account.payment_method}"]
    if account.overage:
        details.append(f"overage {money(account.overage, 4)}")
    if account.recharges:
        details.append(f"{account.recharges} recharge(s)")
    lines.append(f"{'':<10} {', '.join(details)}")
    return lines


def status_line(state: DemoState, now: float) -> str:
    """One plain line of the demo's state, for logs and CI."""
    rated = sum(s.rated for s in state.services.values())
    refused = sum(s.refused for s in state.services.values())
    pace = sum(s.per_second(now) for s in state.services.values())
    parts = [f"{elapsed(now - state.started)} rated {rated}, refused {refused} ({pace:.1f}/s)"]
    for account in state.accounts:
        part = f"{account.customer.name} {money(account.available, 4)}"
        if account.overage:
            part += f" +overage {money(account.overage, 4)}"
        part += f", {len(account.invoices)} invoice(s)"
        parts.append(part)
    parts.append(f"webhooks {state.webhooks}")
    return " | ".join(parts)


# --- The demo's I/O -----------------------------------------------------------------------


class NotificationReceiver:
    """A local webhook endpoint: checks each delivery's signature, passes each event on once."""

    def __init__(self, deliver: Callable[[str, dict[str, Any]], None]) -> None:
        self._deliver = deliver
        self._seen: set[str] = set()
        self._server: asyncio.Server | None = None
        self.secret = ""
        """Set once the endpoint is registered; until then deliveries are refused (retried)."""

    async def start(self) -> str:
        """Listen on a free local port; the endpoint's URL."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}{WEBHOOK_PATH}"

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status = await self._answer(reader)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a broken request: the sender retries it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> str:
        """Read one HTTP/1.1 request; the status line to answer it with."""
        _, path, _ = (await reader.readline()).decode().split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if path != WEBHOOK_PATH:
            return "404 Not Found"
        if not self.secret:
            return "503 Service Unavailable"
        try:
            verify_signature(self.secret, headers.get(SIGNATURE_HEADER.lower(), ""), body)
        except InvalidSignature:
            return "401 Unauthorized"
        event_id = headers.get(EVENT_ID_HEADER.lower(), "")
        if event_id not in self._seen:  # deliveries are at least once
            self._seen.add(event_id)
            envelope = json.loads(body)
            self._deliver(str(envelope["topic"]), dict(envelope["data"]))
        return "204 No Content"


class Demo:
    """Opens the demo customers, drives the services' traffic, watches, replays, and draws."""

    def __init__(
        self,
        settings: Settings,
        target: str,
        api_key: str,
        plan: DemoPlan | None = None,
        *,
        banner: str = "",
        out: TextIO = sys.stdout,
        interactive: bool | None = None,
    ) -> None:
        if not settings.database_url or not settings.temporal_address:
            raise ValueError("the demo needs the stack's database URL and Temporal address")
        self._settings = settings
        self._database_url = settings.database_url
        self._target = target
        self._api_key = api_key
        self._out = out
        self._interactive = out.isatty() if interactive is None else interactive
        self._first_seen: dict[str, float] = {}
        # Fresh ids on every run, so a second demo on the same data starts clean.
        self._run_id = datetime.now(UTC).strftime("%m%d-%H%M%S")
        self.state = DemoState(plan or DemoPlan(), time.monotonic(), banner)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the demo until `stop` is set; a loop that fails ends it with its error."""
        pool = await asyncpg.create_pool(asyncpg_dsn(self._database_url), min_size=1, max_size=3)
        engine = create_engine(self._database_url, pool_size=1)
        receiver = NotificationReceiver(self._on_notification)
        try:
            async with RatingClient(self._target, self._api_key, timeout_seconds=10) as client:
                who = await client.call(client.admin.WhoAmI, admin_pb2.WhoAmIRequest())
                tenant_id = who.tenant.tenant_id
                temporal = await connect_temporal(self._settings)
                notifications = Notifications(pool, webhook_secret_keys(self._settings))
                endpoint_id = await self._listen(notifications, tenant_id, receiver)
                try:
                    await self._open_accounts(client)
                    operator = _Operator(
                        tenant_id,
                        ContractAdmin(ContractStore(pool), Catalogs(CatalogStore(engine))),
                        temporal,
                        pool,
                        self._settings.temporal_task_queue,
                    )
                    await self._run_loops(client, operator, stop)
                finally:
                    # The next run listens elsewhere: nothing should be sent here any more.
                    await notifications.disable_endpoint(tenant_id, endpoint_id, ACTOR)
        finally:
            await receiver.close()
            await engine.dispose()
            await pool.close()

    async def _run_loops(
        self, client: RatingClient, operator: _Operator, stop: asyncio.Event
    ) -> None:
        """The services, the watchers, the operator and the screen, until `stop` or a failure."""
        loops = [
            *(self._drive(client, profile) for profile in SERVICES),
            self._watch_balances(client),
            self._watch_invoices(client),
            self._fix_failed_invoice(client, operator),
            self._draw(),
        ]
        tasks = [asyncio.create_task(loop) for loop in loops]
        stopped = asyncio.create_task(stop.wait())
        running = {*tasks, stopped}
        try:
            # The operator's work ends once done; the demo goes on until stopped or broken.
            while stopped in running:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                if any(not task.cancelled() and task.exception() for task in done):
                    break
        finally:
            for task in [*tasks, stopped]:
                task.cancel()
            await asyncio.gather(*tasks, stopped, return_exceptions=True)
            self._draw_last()
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _listen(
        self, notifications: Notifications, tenant_id: str, receiver: NotificationReceiver
    ) -> str:
        """Start the webhook receiver and register it for the feed's topics; its endpoint id."""
        for endpoint in await notifications.endpoints(tenant_id):
            # An earlier run that was killed left its endpoint behind; nobody listens there.
            if endpoint.enabled and urlsplit(endpoint.url).path == WEBHOOK_PATH:
                await notifications.disable_endpoint(tenant_id, endpoint.endpoint_id, ACTOR)
        url = await receiver.start()
        added = await notifications.add_endpoint(tenant_id, url, FEED_TOPICS, ACTOR)
        receiver.secret = added.secret
        return added.endpoint.endpoint_id

    async def _open_accounts(self, client: RatingClient) -> None:
        """Open each demo customer's contract with a free credit, through the API."""
        plan = self.state.plan
        start = datetime.now(UTC).replace(microsecond=0)
        for customer in CUSTOMERS:
            customer_id = f"{customer.name}-{self._run_id}"
            await client.call(
                client.contracts.CreateCustomer,
                contract_pb2.CreateCustomerRequest(
                    customer_id=customer_id, name=f"{customer.name.title()} (demo)"
                ),
            )
            terms = contract_terms(customer, customer_id, plan, start)
            reply = await client.call(
                client.contracts.CreateContract,
                contract_pb2.CreateContractRequest(
                    contract=json_format.ParseDict(terms, contract_pb2.Contract())
                ),
            )
            contract_id = reply.contract.contract_id
            await client.idempotent(
                client.contracts.AddCommitment,
                contract_pb2.AddCommitmentRequest(
                    grant_id=f"welcome-{customer_id}",
                    contract_id=contract_id,
                    kind="credit",
                    amount=str(plan.starting_credit),
                    memo="rating dev --demo: welcome credit",
                ),
            )
            self.state.accounts.append(
                DemoAccount(customer, customer_id, contract_id, customer.payment_method)
            )
            self._note(
                "contract",
                f"{customer.name}: contract {contract_id} opened, "
                f"{money(plan.starting_credit)} free credit, pays with {customer.payment_method}",
            )
        for profile in SERVICES:
            self.state.services[profile.name] = ServiceStats(profile.name)

    async def _drive(self, client: RatingClient, profile: ServiceProfile) -> None:
        """One service's traffic: requests at random moments, each for a random customer."""
        rng = random.Random()
        stats = self.state.services[profile.name]
        pace = profile.requests_per_second * self.state.plan.traffic_scale
        for n in itertools.count(1):
            await asyncio.sleep(rng.expovariate(pace))
            account = rng.choice(self.state.accounts)
            for usage in profile.usage(rng):
                try:
                    answer = await client.rate_and_debit(
                        event_id=f"{profile.name}-{self._run_id}-{n}-{usage.part}",
                        customer_id=account.customer_id,
                        event_type=usage.event_type,
                        properties=usage.properties,
                    )
                except RatingError as refused:
                    reason = refused.reason or refused.code.name
                    stats.record(time.monotonic(), None, f"{account.customer.name}: {reason}")
                    break  # the rest of a refused request is not sent
                stats.record(time.monotonic(), Decimal(answer.charge or "0"))

    async def _watch_balances(self, client: RatingClient) -> None:
        """Read each customer's pools through GetBalances, about once a refresh."""
        while True:
            for account in self.state.accounts:
                with contextlib.suppress(RatingError):  # shown stale for a moment, not fatal
                    balances = await client.balances(account.customer_id)
                    account.pools = tuple(
                        PoolLine(
                            pool_label(pool.kind, Decimal(pool.cost_basis or "0")),
                            Decimal(pool.remaining),
                            Decimal(pool.original),
                        )
                        for pool in balances.pools
                    )
                    account.available = Decimal(balances.available or "0")
                    account.overage = Decimal(balances.overage or "0")
            await asyncio.sleep(self.state.plan.refresh_seconds)

    async def _watch_invoices(self, client: RatingClient) -> None:
        """Follow each contract's invoices through ListInvoices; announce each one paid."""
        while True:
            for account in self.state.accounts:
                with contextlib.suppress(RatingError):
                    listed = await client.invoices(contract_id=account.contract_id)
                    for invoice in listed.invoices:
                        if invoice.state != "draft":
                            self._saw_invoice(account, invoice)
            await asyncio.sleep(max(self.state.plan.refresh_seconds, 1.0))

    def _saw_invoice(self, account: DemoAccount, invoice: invoice_pb2.Invoice) -> None:
        """Keep the invoice as listed; announce it paid once (after its issue, as it happened)."""
        seen = InvoiceSeen(
            invoice.invoice_id, invoice.number, invoice.state, Decimal(invoice.total)
        )
        account.invoices[seen.invoice_id] = seen
        first_seen = self._first_seen.setdefault(seen.invoice_id, time.monotonic())
        # The issue arrives by webhook, often after the poll has seen the invoice paid.
        issue_shown = seen.invoice_id in account.issued_notified or (
            time.monotonic() - first_seen >= ISSUE_WEBHOOK_WAIT_SECONDS
        )
        if seen.state == "paid" and issue_shown and seen.invoice_id not in account.paid_shown:
            account.paid_shown.add(seen.invoice_id)
            self._note(
                "payment",
                f"{account.customer.name}: {seen.number} paid, {money(seen.total)} "
                f"charged to {account.payment_method}",
            )

    async def _fix_failed_invoice(self, client: RatingClient, operator: _Operator) -> None:
        """Once the mistyped card's invoice fails, fix the payment method and replay it."""
        account = next(a for a in self.state.accounts if a.customer.payment_method == "pm_typo")
        while True:
            runs = await operator.failed_invoices(account.contract_id)
            if runs:
                break
            await asyncio.sleep(1.0)
        for run in reversed(runs):  # oldest first
            await self._saw_failure(client, account, run)
        await asyncio.sleep(self.state.plan.operator_pause_seconds)
        await operator.change_payment_method(account.contract_id, FIXED_PAYMENT_METHOD)
        account.payment_method = FIXED_PAYMENT_METHOD
        self._note(
            "operator",
            f"{account.customer.name}: payment method {account.customer.payment_method} → "
            f"{FIXED_PAYMENT_METHOD} (as `rating contracts payment-method` does)",
        )
        # Listed again: with short periods another invoice may have failed meanwhile.
        for run in reversed(await operator.failed_invoices(account.contract_id)):
            failed = await self._saw_failure(client, account, run)
            self._note("operator", f"replaying {run.workflow_id}")
            failed.outcome = await operator.replay(run.workflow_id)
            self._note("replay", f"{failed.number}: replay {failed.outcome}")
            while True:
                invoice = await client.invoice(failed.invoice_id)
                if invoice.state == "paid":
                    break
                await asyncio.sleep(1.0)
            attempts = await client.payment_attempts(failed.invoice_id)
            failed.charges = sum(1 for attempt in attempts if attempt.status == "succeeded")
            failed.paid = True
            self._note(
                "replay",
                f"{failed.number} paid after the replay: {failed.charges} charge of "
                f"{money(Decimal(invoice.total))}, {len(attempts)} payment attempt(s) on record",
            )

    async def _saw_failure(
        self, client: RatingClient, account: DemoAccount, run: InvoiceRun
    ) -> FailedInvoice:
        """The failed invoice of this run, announced the first time it is seen."""
        known = next(
            (f for f in self.state.failed_invoices if f.workflow_id == run.workflow_id), None
        )
        if known is not None:
            return known
        invoice_id = invoice_id_for(
            run.key.contract_id, datetime.fromisoformat(run.key.billing_date), run.key.revision
        )
        number = (await client.invoice(invoice_id)).number or invoice_id
        step = run.failing_step
        failed = FailedInvoice(
            run.workflow_id,
            invoice_id,
            number,
            "" if step is None else step.step,
            (step.error if step is not None and step.error else run.error),
        )
        self.state.failed_invoices.append(failed)
        self._note(
            "failure",
            f"{account.customer.name}: {number}'s workflow failed at {failed.step}: {failed.error}",
        )
        return failed

    def _on_notification(self, topic: str, data: dict[str, Any]) -> None:
        """A verified webhook: count it, and put it in the feed if it is about a demo contract."""
        self.state.webhooks += 1
        described = describe_notification(topic, data, self.state.accounts)
        if described is None:
            return
        account = self.state.account(str(data.get("contract_id")))
        if account is not None and topic == Topic.RECHARGE_SUCCEEDED:
            account.recharges += 1
        if account is not None and topic == Topic.INVOICE_ISSUED:
            account.issued_notified.add(str(data.get("invoice_id")))
        self._note(*described)

    def _note(self, kind: str, text: str) -> None:
        entry = self.state.note(time.monotonic(), kind, text)
        if not self._interactive:  # a log gets each event as a line of its own
            print(feed_line(entry), file=self._out, flush=True)

    async def _draw(self) -> None:
        """Redraw the screen every refresh (a terminal), or print a status line now and then."""
        plan = self.state.plan
        next_status = time.monotonic() + plan.status_every_seconds
        if self._interactive:
            self._out.write(HIDE_CURSOR)
        while True:
            now = time.monotonic()
            if self._interactive:
                self._out.write(HOME + self._frame(now) + CLEAR_BELOW)
                self._out.flush()
            elif now >= next_status:
                print(status_line(self.state, now), file=self._out, flush=True)
                next_status = now + plan.status_every_seconds
            await asyncio.sleep(plan.refresh_seconds)

    def _draw_last(self) -> None:
        """Leave the last view on the screen (a terminal) or the last status (a log)."""
        now = time.monotonic()
        if self._interactive:
            self._out.write(HOME + self._frame(now) + CLEAR_BELOW + SHOW_CURSOR)
        else:
            print(status_line(self.state, now), file=self._out)
        self._out.flush()

    def _frame(self, now: float) -> str:
        """The screen, each line cut to the terminal's width (a wrapped line would scroll it)."""
        width = shutil.get_terminal_size().columns
        screen = render_screen(self.state, now, width=width)
        return "".join(line[:width] + CLEAR_LINE + "\n" for line in screen)


HOME = "\x1b[H"
CLEAR_LINE = "\x1b[K"
CLEAR_BELOW = "\x1b[J"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"


@dataclass(frozen=True)
class _Operator:
    """What an operator does about a failed invoice: find it, fix the contract, replay it."""

    tenant_id: str
    admin: ContractAdmin
    temporal: Client
    pool: asyncpg.Pool
    task_queue: str

    async def failed_invoices(self, contract_id: str) -> list[InvoiceRun]:
        """The contract's failed invoice workflows, latest first."""
        return await failed_invoices(self.temporal, self.tenant_id, contract_id=contract_id)

    async def change_payment_method(self, contract_id: str, token: str) -> None:
        """Save a new payment method, as `rating contracts payment-method` does (audited)."""
        caller = Caller(self.tenant_id, ACTOR, Role.ADMIN)
        await self.admin.change_payment_method(caller, contract_id, token)

    async def replay(self, workflow_id: str) -> str:
        """Replay a failed invoice workflow (logged, audited); how it ended, and the detail."""
        replays = InvoiceReplays(self.temporal, self.pool, self.task_queue)
        record = await replays.replay(
            self.tenant_id, workflow_id, reason="demo: payment method fixed", actor=ACTOR
        )
        return f"{record.outcome} ({record.detail})" if record.detail else record.outcome


async def run_demo(
    settings: Settings, target: str, api_key: str, stop: asyncio.Event, banner: str = ""
) -> None:
    """`rating dev --demo`: run the demo against the stack at `target` until `stop` is set."""
    await Demo(settings, target, api_key, banner=banner).run(stop)
