"""The chaos suite's checker: what a journal of attempts and the database say happened.

`bench/chaos_load.py` writes one JSON line per attempt (the full request, the status code, and
for every event in it the answer: code, reason, replay flag, charge, contract). Once the run is
over and every unacknowledged event has been retried until it was answered, `check` reads that
journal and the scenario's database and counts what went wrong:

  lost        an event acknowledged as charged that the database does not have (no rated event,
              or less money moved than its charge), or one that never got a definitive answer;
  duplicated  an event debited twice (more money moved than its charge, or more legs than its
              draws), acknowledged as fresh (not a replay) more than once, or charged although
              every answer the caller got was a refusal;
  drift       money or counters that do not add up: per contract, the acknowledged charges
              against the ledger's usage / overage / credit-back transfers and against the rated
              events; usage counters against the rated events' lines; pending holds against the
              open reservations; invoices' usage lines against the period's rated events;
              `rating ops reconcile` (accounts against their transfers); a stored charge that
              differs from the answer the caller was given.

Invoices are checked on their own (no number issued twice, no gap, no period invoiced twice, no
invoice paid twice), and webhooks are counted per idempotency id (deliveries are at least once by
design, so a second delivery is reported, not failed).

Every check reads the database independently of the code under test (plain SQL), so it can fail;
`doctor_*` make broken copies of a journal or a database for the suite's self-test, which proves
each kind of defect is caught.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

REPO_ROOT = Path(__file__).resolve().parents[1]
ZERO = Decimal(0)

DEFINITIVE = frozenset(
    {
        "OK",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "RESOURCE_EXHAUSTED",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "OUT_OF_RANGE",
    }
)
"""Answers that settle an event: charged, or refused with nothing changed. Anything else
(UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, CANCELLED) leaves it unknown."""

BUGS = frozenset({"INTERNAL", "UNKNOWN"})
"""Status codes that are always a bug (DESIGN.md §7: `INTERNAL` is always a bug)."""

EXAMPLES = 5
"""Examples kept per kind of problem, for the report."""


@dataclass
class EventStory:
    """Everything the callers sent and heard about one event id."""

    payloads: set[str] = field(default_factory=set)
    answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> list[dict[str, Any]]:
        """The OK answers (charged, first time or replay)."""
        return [a for a in self.answers if a["code"] == "OK"]

    @property
    def refusals(self) -> list[dict[str, Any]]:
        """Definitive refusals."""
        return [a for a in self.answers if a["code"] != "OK" and a["code"] in DEFINITIVE]

    @property
    def state(self) -> str:
        """charged, refused or unresolved (never a definitive answer)."""
        if self.ok:
            return "charged"
        return "refused" if self.refusals else "unresolved"


@dataclass
class Journal:
    """A journal file read back: stories per event, attempts, status codes seen."""

    events: dict[str, EventStory]
    attempts: list[dict[str, Any]]
    codes: Counter[str]
    """Every non-OK answer, per status code (an RPC's and each batch item's)."""
    reasons: Counter[str]
    """Non-OK answers per `CODE REASON`."""
    reservations: dict[str, list[str]]
    """reservation id → the codes of its Authorize / Capture / Void attempts."""


def read_journal(path: Path) -> Journal:
    """Read a journal written by bench/chaos_load.py."""
    return journal_of(json.loads(line) for line in path.read_text().splitlines() if line.strip())


def journal_of(records: Iterable[dict[str, Any]]) -> Journal:
    """Fold attempt records into per-event stories."""
    events: dict[str, EventStory] = defaultdict(EventStory)
    attempts: list[dict[str, Any]] = []
    codes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    reservations: dict[str, list[str]] = defaultdict(list)
    for record in records:
        attempts.append(record)
        if record["code"] != "OK":
            codes[record["code"]] += 1
            reasons[f"{record['code']} {record.get('reason') or '-'}"] += 1
        else:
            for answer in record["answers"]:
                if answer["code"] != "OK":  # a batch item refused or failed alone
                    codes[answer["code"]] += 1
                    reasons[f"{answer['code']} {answer.get('reason') or '-'}"] += 1
        if record["op"] in ("authorize", "capture", "void"):
            reservations[record["key"]].append(record["code"])
        for payload in _event_payloads(record):
            events[payload["event_id"]].payloads.add(json.dumps(payload, sort_keys=True))
        for answer in record["answers"]:
            events[answer["event_id"]].answers.append(answer)
    return Journal(dict(events), attempts, codes, reasons, dict(reservations))


def _event_payloads(record: dict[str, Any]) -> list[dict[str, Any]]:
    request = record["request"]
    if record["op"] == "batch":
        return list(request.get("events", []))
    if record["op"] in ("rate", "capture"):
        return [request["event"]]
    return []


@dataclass
class Report:
    """What the checks found: the three headline counts and every problem, with examples."""

    lost: int = 0
    duplicated: int = 0
    drift: int = 0
    invoice_problems: int = 0
    bug_answers: int = 0
    """INTERNAL / UNKNOWN answers seen."""
    counts: Counter[str] = field(default_factory=Counter)
    """Every check's failure count by name (`lost: no rated event`, …)."""
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    facts: dict[str, Any] = field(default_factory=dict)
    """Figures worth printing that are not failures (events charged, invoices, webhooks …)."""

    def add(self, column: str, check: str, example: str, n: int = 1) -> None:
        """Count `n` failures of `check` under a headline column (lost/duplicated/drift/…)."""
        if column == "lost":
            self.lost += n
        elif column == "duplicated":
            self.duplicated += n
        elif column == "drift":
            self.drift += n
        elif column == "invoices":
            self.invoice_problems += n
        self.counts[f"{column}: {check}"] += n
        if len(self.examples[f"{column}: {check}"]) < EXAMPLES:
            self.examples[f"{column}: {check}"].append(example)

    @property
    def failed(self) -> bool:
        """Whether the run must exit non-zero."""
        return bool(self.lost or self.duplicated or self.drift or self.invoice_problems) or bool(
            self.bug_answers
        )

    def lines(self) -> list[str]:
        """Each failed check with its count and examples."""
        out = []
        for name, n in sorted(self.counts.items()):
            out.append(f"    ✗ {name}: {n}")
            out.extend(f"        e.g. {example}" for example in self.examples[name])
        return out


async def check(
    database_url: str,
    tenant_id: str,
    journal: Journal,
    webhooks: Mapping[str, int] | None = None,
    *,
    reconcile: bool = True,
) -> Report:
    """Check the journal against the database (which nothing should be writing to any more).

    `reconcile` runs `rating ops reconcile` too (a subprocess, a few seconds).
    """
    report = Report()
    report.bug_answers = sum(n for code, n in journal.codes.items() if code in BUGS)
    conn = await asyncpg.connect(database_url)
    try:
        await _check_events(conn, tenant_id, journal, report)
        await _check_counters(conn, tenant_id, report)
        await _check_holds(conn, tenant_id, report)
        await _check_invoices(conn, tenant_id, report)
    finally:
        await conn.close()
    if reconcile:
        _check_reconcile(database_url, report)
    if webhooks is not None:
        twice = {k: n for k, n in webhooks.items() if n > 1}
        report.facts["webhooks delivered"] = sum(webhooks.values())
        report.facts["webhook ids"] = len(webhooks)
        report.facts["webhook ids delivered more than once"] = len(twice)
        if twice:
            report.facts["webhook duplicates e.g."] = sorted(twice.items())[:EXAMPLES]
    return report


async def _check_events(
    conn: asyncpg.Connection[Any], tenant_id: str, journal: Journal, report: Report
) -> None:
    """Exactly once per event, and the money of each contract."""
    rated = {
        row["event_id"]: row
        for row in await conn.fetch(
            "SELECT event_id, contract_id, charge FROM rated_events WHERE tenant_id = $1",
            tenant_id,
        )
    }
    legs: dict[str, list[asyncpg.Record]] = defaultdict(list)
    per_contract_ledger: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for row in await conn.fetch(
        "SELECT t.reference, t.code, t.amount, r.contract_id FROM transfers t"
        " JOIN accounts r ON r.account_id ="
        "   CASE WHEN t.code = 'credit_back' THEN t.debit_account_id ELSE t.credit_account_id END"
        " WHERE t.tenant_id = $1 AND t.reference LIKE 'event:%'",
        tenant_id,
    ):
        event_id = row["reference"].removeprefix("event:").rsplit(":", 1)[0]
        legs[event_id].append(row)
        per_contract_ledger[row["contract_id"]] += _signed(row)
    per_contract_acked: dict[str, Decimal] = defaultdict(lambda: ZERO)
    per_contract_rated: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for row in rated.values():
        per_contract_rated[row["contract_id"]] += row["charge"]
    states: Counter[str] = Counter()
    for event_id, story in journal.events.items():
        states[story.state] += 1
        if len(story.payloads) > 1:
            report.add("drift", "journal: one event id sent with two payloads", event_id)
        if any(a["code"] == "ALREADY_EXISTS" for a in story.answers):
            report.add("duplicated", "IDEMPOTENCY_KEY_MISMATCH on an identical payload", event_id)
        row = rated.get(event_id)
        moved = sum((_signed(leg) for leg in legs.get(event_id, ())), ZERO)
        if story.state == "unresolved":
            report.add("lost", "never answered definitively, even after retries", event_id)
            continue
        if story.state == "refused":
            if row is not None or event_id in legs:
                codes = sorted({a["code"] + " " + (a.get("reason") or "") for a in story.refusals})
                report.add(
                    "duplicated",
                    "charged although every answer was a refusal",
                    f"{event_id}: told {codes}, rated {row['charge'] if row else '-'}",
                )
            continue
        ok = story.ok
        charge = Decimal(ok[0]["charge"] or "0")
        contract = ok[0]["contract_id"]
        per_contract_acked[contract] += charge
        if len({Decimal(a["charge"] or "0") for a in ok}) > 1:
            report.add("drift", "OK answers disagree on the charge", event_id)
        fresh = [a for a in ok if not a["replay"]]
        if len(fresh) > 1:
            report.add(
                "duplicated",
                "acknowledged as fresh (replay=false) more than once",
                f"{event_id}: {len(fresh)} fresh answers",
            )
        if row is None:
            report.add("lost", "acknowledged but no rated event", f"{event_id} ({charge})")
            continue
        if row["charge"] != charge:
            report.add(
                "drift",
                "stored charge differs from the acknowledged one",
                f"{event_id}: told {charge}, stored {row['charge']}",
            )
        if moved > row["charge"]:
            report.add(
                "duplicated",
                "more money moved than the event's charge (debited twice)",
                f"{event_id}: charge {row['charge']}, transfers {moved}",
            )
        elif moved < row["charge"]:
            report.add(
                "lost",
                "less money moved than the event's charge",
                f"{event_id}: charge {row['charge']}, transfers {moved}",
            )
    for event_id in rated.keys() - journal.events.keys():
        report.add("duplicated", "rated event nobody sent", event_id)
    for contract in sorted(per_contract_acked.keys() | per_contract_ledger.keys()):
        acked = per_contract_acked[contract]
        ledger = per_contract_ledger[contract]
        if acked != ledger:
            report.add(
                "drift",
                "acknowledged charges ≠ pool draws + overage in the ledger",
                f"{contract}: acknowledged {acked}, ledger {ledger}",
            )
        if acked != per_contract_rated[contract]:
            report.add(
                "drift",
                "acknowledged charges ≠ rated events",
                f"{contract}: acknowledged {acked}, rated {per_contract_rated[contract]}",
            )
    report.facts["events charged"] = states["charged"]
    report.facts["events refused"] = states["refused"]
    report.facts["money acknowledged"] = str(sum(per_contract_acked.values(), ZERO))


def _signed(leg: asyncpg.Record) -> Decimal:
    """A usage leg's effect on the event's charge: usage and overage add, a credit back takes."""
    amount: Decimal = leg["amount"]
    return -amount if leg["code"] == "credit_back" else amount


async def _check_counters(conn: asyncpg.Connection[Any], tenant_id: str, report: Report) -> None:
    """Usage counters per contract × period × product equal the sum of the rated events' lines."""
    expected: dict[tuple[str, Any, str], list[Decimal]] = defaultdict(lambda: [ZERO, ZERO, ZERO])
    for row in await conn.fetch(
        "SELECT contract_id, period_start, result FROM rated_events WHERE tenant_id = $1",
        tenant_id,
    ):
        result = json.loads(row["result"]) if isinstance(row["result"], str) else row["result"]
        for line in result["lines"]:
            totals = expected[(row["contract_id"], row["period_start"], line["product_key"])]
            totals[0] += Decimal(line["quantity"])
            totals[1] += Decimal(line["amount_in_invoice_currency"])
            totals[2] += 1
    actual: dict[tuple[str, Any, str], list[Decimal]] = {}
    for row in await conn.fetch(
        "SELECT u.contract_id, u.period_start, u.product_key, sum(u.quantity) AS q,"
        " sum(u.amount) AS a, sum(u.events) AS e FROM usage_counters u"
        " JOIN contracts c USING (contract_id) WHERE c.tenant_id = $1 GROUP BY 1, 2, 3",
        tenant_id,
    ):
        actual[(row["contract_id"], row["period_start"], row["product_key"])] = [
            row["q"],
            row["a"],
            Decimal(row["e"]),
        ]
    for key in sorted(expected.keys() | actual.keys(), key=str):
        want, got = expected.get(key, [ZERO, ZERO, ZERO]), actual.get(key, [ZERO, ZERO, ZERO])
        if want != got:
            report.add(
                "drift",
                "usage counters ≠ sum of rated events",
                f"{key[0]} {key[1]:%H:%M:%S} {key[2]}: counters (q, amount, events) {got},"
                f" rated events {want}",
            )


async def _check_holds(conn: asyncpg.Connection[Any], tenant_id: str, report: Report) -> None:
    """Pending amounts on pools equal the holds of reservations still held."""
    pending = await conn.fetchval(
        "SELECT coalesce(sum(debits_pending), 0) FROM accounts"
        " WHERE tenant_id = $1 AND kind = 'pool'",
        tenant_id,
    )
    held = ZERO
    for row in await conn.fetch(
        "SELECT holds FROM reservations WHERE tenant_id = $1 AND state = 'held'", tenant_id
    ):
        holds = json.loads(row["holds"]) if isinstance(row["holds"], str) else row["holds"]
        held += sum((Decimal(amount) for _, amount in holds), ZERO)
    if pending != held:
        report.add(
            "drift",
            "pending on pools ≠ holds of open reservations",
            f"pending {pending}, held {held}",
        )
    states = await conn.fetch(
        "SELECT state, count(*) AS n FROM reservations WHERE tenant_id = $1 GROUP BY 1", tenant_id
    )
    report.facts["reservations"] = {row["state"]: row["n"] for row in states}


async def _check_invoices(conn: asyncpg.Connection[Any], tenant_id: str, report: Report) -> None:
    """Numbers unique and gapless, one live invoice per period, paid once, usage as rated."""
    rows = await conn.fetch(
        "SELECT invoice_id, contract_id, billing_date, period_start, period_end, state, number,"
        " document FROM invoices WHERE tenant_id = $1",
        tenant_id,
    )
    numbers = Counter(row["number"] for row in rows if row["number"])
    for number, n in numbers.items():
        if n > 1:
            report.add("invoices", "invoice number issued twice", f"{number} × {n}")
    issued = sorted(int(n.rpartition("-")[2]) for n in numbers if n.rpartition("-")[2].isdigit())
    if issued and issued != list(range(issued[0], issued[0] + len(issued))):
        missing = sorted(set(range(issued[0], issued[-1] + 1)) - set(issued))
        report.add("invoices", "gap in invoice numbers", f"missing {missing[:10]}")
    live = Counter(
        (row["contract_id"], row["billing_date"]) for row in rows if row["state"] != "void"
    )
    for (contract, billing_date), n in live.items():
        if n > 1:
            report.add("invoices", "period invoiced twice", f"{contract} {billing_date} × {n}")
    for row in await conn.fetch(
        "SELECT invoice_id, count(*) AS n FROM payment_attempts"
        " WHERE tenant_id = $1 AND status = 'succeeded' GROUP BY 1 HAVING count(*) > 1",
        tenant_id,
    ):
        report.add("invoices", "invoice paid twice", f"{row['invoice_id']} × {row['n']}")
    rated = {
        (row["contract_id"], row["period_start"]): (row["charge"], row["n"])
        for row in await conn.fetch(
            "SELECT contract_id, period_start, sum(charge) AS charge, count(*) AS n"
            " FROM rated_events WHERE tenant_id = $1 GROUP BY 1, 2",
            tenant_id,
        )
    }
    arrears = 0
    for row in rows:
        if row["state"] in ("void", "draft") or row["billing_date"] != row["period_end"]:
            continue  # only a period's own (arrears) invoice carries its usage
        arrears += 1
        document = row["document"]
        document = json.loads(document) if isinstance(document, str) else document
        billed = sum(
            (
                Decimal(line["exact_amount"])
                for line in document["lines"]
                if line["kind"] == "usage"
            ),
            ZERO,
        )
        charge, _ = rated.get((row["contract_id"], row["period_start"]), (ZERO, 0))
        if billed != charge:
            report.add(
                "drift",
                "invoice usage ≠ the period's rated events",
                f"{row['number']} {row['contract_id']}: billed {billed}, rated {charge}",
            )
    states = Counter(row["state"] for row in rows)
    report.facts["invoices"] = dict(states)
    report.facts["period invoices checked against usage"] = arrears


def _check_reconcile(database_url: str, report: Report) -> None:
    """`rating ops reconcile`: every account's totals against its transfers."""
    env = {**os.environ, "RATING_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "rating_service.cli", "ops", "reconcile"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    drifts = [
        line for line in done.stdout.splitlines() if line.startswith(("DRIFT", "UNREPLAYABLE"))
    ]
    for line in drifts:
        report.add("drift", "rating ops reconcile", line)
    if done.returncode != 0 and not drifts:
        report.add("drift", "rating ops reconcile failed", (done.stderr or done.stdout)[-300:])
    report.facts["reconcile"] = (done.stdout.strip().splitlines() or ["?"])[-1]


# ---------------------------------------------------------------------------------------------
# Doctored copies, for the self-test: each must make a check fail.


def doctor_journal_fresh_twice(journal: Journal) -> tuple[Journal, str]:
    """A charged event acknowledged as fresh a second time (what a double debit looks like)."""
    event_id, story = next((k, s) for k, s in journal.events.items() if s.state == "charged")
    answer = {**story.ok[0], "replay": False}
    record = {
        "op": "rate",
        "key": event_id,
        "code": "OK",
        "request": {"event": json.loads(next(iter(story.payloads)))},
        "answers": [answer],
    }
    return journal_of([*journal.attempts, record]), event_id


def doctor_journal_refused(journal: Journal) -> tuple[Journal, str]:
    """A charged event whose caller was told it was refused (a phantom charge)."""
    event_id = next(
        k for k, s in journal.events.items() if s.state == "charged" and Decimal(s.ok[0]["charge"])
    )
    records = []
    for record in journal.attempts:
        answers = [
            {**a, "code": "FAILED_PRECONDITION", "reason": "DOCTORED", "replay": False}
            if a["event_id"] == event_id
            else a
            for a in record["answers"]
        ]
        records.append({**record, "answers": answers})
    return journal_of(records), event_id


DB_DOCTORS: dict[str, tuple[str, str]] = {
    # name: (SQL, the headline column that must go non-zero)
    "a charged event debited twice (a second usage transfer, accounts kept consistent)": (
        """
        WITH victim AS (
            SELECT t.* FROM transfers t JOIN accounts a ON a.account_id = t.debit_account_id
            WHERE t.tenant_id = $1 AND t.code = 'usage'
              -- a pool that can pay it again: its CHECK would refuse the doctoring otherwise
              AND a.credits_posted - a.debits_posted - a.debits_pending >= t.amount
            ORDER BY t.seq LIMIT 1
        ), copy AS (
            INSERT INTO transfers (tenant_id, transfer_id, debit_account_id, credit_account_id,
                amount, flags, code, reference, memo)
            SELECT tenant_id, transfer_id || ':twice', debit_account_id, credit_account_id,
                amount, flags, code, reference, 'doctored' FROM victim
            RETURNING debit_account_id, credit_account_id, amount
        ), debited AS (
            UPDATE accounts a SET debits_posted = debits_posted + c.amount
            FROM copy c WHERE a.account_id = c.debit_account_id RETURNING 1
        )
        UPDATE accounts a SET credits_posted = credits_posted + c.amount
        FROM copy c WHERE a.account_id = c.credit_account_id
        """,
        "duplicated",
    ),
    "an acknowledged event's rated event deleted": (
        """
        DELETE FROM rated_events WHERE (tenant_id, event_id) IN (
            SELECT tenant_id, event_id FROM rated_events WHERE tenant_id = $1
            ORDER BY created_at LIMIT 1)
        """,
        "lost",
    ),
    "a usage counter off by one": (
        """
        UPDATE usage_counters SET quantity = quantity + 1 WHERE (contract_id, period_start,
            product_key, cell) IN (SELECT u.contract_id, u.period_start, u.product_key, u.cell
            FROM usage_counters u JOIN contracts c USING (contract_id)
            WHERE c.tenant_id = $1 LIMIT 1)
        """,
        "drift",
    ),
    "a pool account's total changed without a transfer": (
        """
        UPDATE accounts SET credits_posted = credits_posted + 1 WHERE account_id IN (
            SELECT account_id FROM accounts WHERE tenant_id = $1 AND kind = 'pool' LIMIT 1)
        """,
        "drift",
    ),
    "an invoice number issued twice": (
        """
        UPDATE invoices SET number = (
            SELECT min(number) FROM invoices WHERE tenant_id = $1 AND number IS NOT NULL)
        WHERE invoice_id = (
            SELECT invoice_id FROM invoices WHERE tenant_id = $1 AND number IS NOT NULL
            ORDER BY number DESC LIMIT 1)
        """,
        "invoices",
    ),
}
"""Each doctor runs on its own copy of the scenario's database."""

DROP_BEFORE = {
    "an invoice number issued twice": "ALTER TABLE invoices DROP CONSTRAINT uq_invoices_number",
}


def column_of(report: Report, column: str) -> int:
    """A headline count of a report by column name."""
    return {
        "lost": report.lost,
        "duplicated": report.duplicated,
        "drift": report.drift,
        "invoices": report.invoice_problems,
    }[column]
