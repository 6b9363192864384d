"""What the demo has seen: customers' balances and invoices, services' calls, the event feed."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from rating_service.cli.demo.plan import DemoCustomer, DemoPlan

RATE_WINDOW_SECONDS = 5.0
"""Calls per second are counted over this much recent time."""

Note = Callable[[str, str], None]
"""Adds a (kind, text) entry to the event feed as it happens."""


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
