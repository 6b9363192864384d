"""The view, pure functions of `DemoState`: the full screen, the status line, the feed's text."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, Decimal
from typing import Any

from rating_service.cli.demo.state import DemoAccount, DemoState, FeedEntry
from rating_service.outbox.topics import Topic


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
