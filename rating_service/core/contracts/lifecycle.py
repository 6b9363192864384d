"""A contract's lifecycle terms: auto-recharge, renewal and dunning, with their dict forms.

They are read by the lifecycle workflows (auto-recharge, renewal, dunning), never by the hot
path, except the auto-recharge threshold, which the debit engine watches like a balance alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from enum import StrEnum

from rating_service.core.contracts.alerts import AlertKind, AlertThreshold
from rating_service.core.contracts.pools import CommitmentKind
from rating_service.core.dict_form import DictReader, utc_timestamp
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import EXACT_CONTEXT, format_decimal
from rating_service.core.pricing.constraints import under_prefix

ZERO = Decimal(0)
DAY = timedelta(days=1)

AUTO_RECHARGE_THRESHOLD_ID = "auto-recharge"
"""The id of the balance threshold auto-recharge watches (never a tenant's own alert id)."""

DEFAULT_DUNNING = (DAY, 3 * DAY, 5 * DAY, 7 * DAY)
"""Retry a failed invoice payment 1, 3, 5 and 7 days after the failure before giving up."""


@dataclass(frozen=True, slots=True)
class AutoRecharge:
    """Buy `amount` of credit whenever the prepaid balance falls below `threshold`.

    A failed charge is retried `max_attempts` times in all, `retry_after` apart; after the last
    failure auto-recharge switches itself off (the contract says `enabled: false`).
    """

    threshold: Decimal
    amount: Decimal
    enabled: bool = True
    max_attempts: int = 3
    retry_after: timedelta = timedelta(hours=1)
    threshold_alert: AlertThreshold = field(init=False, repr=False, compare=False)
    """The balance alert whose crossing triggers a recharge (built once: read on every debit)."""

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        for name in ("threshold", "amount"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                violations.add(name, f"must be a finite decimal ≥ 0, got {value!r}")
        if isinstance(self.amount, Decimal) and self.amount.is_finite() and self.amount == 0:
            violations.add("amount", "must be more than 0")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            violations.add("max_attempts", "must be an integer")
        elif self.max_attempts < 1:
            violations.add("max_attempts", "must be at least 1")
        if not isinstance(self.retry_after, timedelta) or self.retry_after <= timedelta(0):
            violations.add("retry_seconds", "must be more than 0")
        violations.raise_if_any("invalid auto-recharge")
        alert = AlertThreshold(
            AUTO_RECHARGE_THRESHOLD_ID, AlertKind.BALANCE_BELOW, amount=self.threshold
        )
        object.__setattr__(self, "threshold_alert", alert)


@dataclass(frozen=True, slots=True)
class RenewalCommitment:
    """A commitment the next term starts with: a prepaid commit or credit of `amount`."""

    kind: CommitmentKind
    amount: Decimal
    cost_basis: Decimal = Decimal(1)
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Renewal:
    """How a contract renews: a new term of the same length, its commitments, and rollover.

    Unused prepaid balance rolls over into the new term up to `rollover_percent` of it and at
    most `rollover_cap` (None: no limit on that side); the rest expires. Renewal happens
    `notice` before the term ends. Without `auto_renew`, the contract ends at term end.
    """

    auto_renew: bool = True
    commitments: tuple[RenewalCommitment, ...] = ()
    rollover_percent: Decimal = Decimal(100)
    rollover_cap: Decimal | None = None
    notice: timedelta = 7 * DAY

    def rollover(self, unused: Decimal) -> Decimal:
        """How much of an unused prepaid balance carries into the next term."""
        with localcontext(EXACT_CONTEXT):  # a percent of a decimal always terminates
            carried = unused * self.rollover_percent / 100
        if self.rollover_cap is not None:
            carried = min(carried, self.rollover_cap)
        return max(min(carried, unused), ZERO)


def auto_recharge_from_dict(raw: object, path: str) -> AutoRecharge | None:
    """Read `{"threshold", "amount", "enabled"?, "max_attempts"?, "retry_seconds"?}`, or None."""
    if raw is None:
        return None
    violations = ViolationCollector()
    fields = DictReader(raw, path, violations, "auto-recharge settings")
    threshold = fields.decimal("threshold")
    amount = fields.decimal("amount")
    enabled = fields.raw("enabled")
    attempts = fields.integer("max_attempts", 3)
    retry = fields.integer("retry_seconds", 3600)
    fields.reject_unknown()
    if enabled is not None and not isinstance(enabled, bool):
        violations.add(fields.at("enabled"), "must be true or false")
    violations.raise_if_any("invalid auto-recharge")
    assert threshold is not None and amount is not None and attempts is not None
    assert retry is not None
    try:
        return AutoRecharge(
            threshold, amount, enabled is not False, attempts, timedelta(seconds=retry)
        )
    except InvalidArgument as error:
        raise under_prefix(error, path) from None


def auto_recharge_to_dict(settings: AutoRecharge | None) -> dict[str, object] | None:
    """The dict form of auto-recharge settings."""
    if settings is None:
        return None
    return {
        "threshold": format_decimal(settings.threshold),
        "amount": format_decimal(settings.amount),
        "enabled": settings.enabled,
        "max_attempts": settings.max_attempts,
        "retry_seconds": int(settings.retry_after.total_seconds()),
    }


def renewal_from_dict(raw: object, path: str) -> Renewal | None:
    """Read renewal terms (see `Renewal`), or None when absent."""
    if raw is None:
        return None
    violations = ViolationCollector()
    fields = DictReader(raw, path, violations, "renewal terms")
    auto_renew = fields.raw("auto_renew")
    percent = fields.decimal("rollover_percent", Decimal(100))
    cap = fields.optional_decimal("rollover_cap")
    notice = fields.integer("notice_seconds", int((7 * DAY).total_seconds()))
    commitments = [
        _renewal_commitment(item, fields.at(f"commitments[{index}]"), violations)
        for index, item in enumerate(fields.sequence("commitments"))
    ]
    fields.reject_unknown()
    if auto_renew is not None and not isinstance(auto_renew, bool):
        violations.add(fields.at("auto_renew"), "must be true or false")
    if percent is not None and not ZERO <= percent <= 100:
        violations.add(fields.at("rollover_percent"), "must be between 0 and 100")
    if cap is not None and cap < 0:
        violations.add(fields.at("rollover_cap"), "must be ≥ 0")
    if notice is not None and notice < 0:
        violations.add(fields.at("notice_seconds"), "must be ≥ 0")
    violations.raise_if_any("invalid renewal terms")
    assert percent is not None and notice is not None
    return Renewal(
        auto_renew is not False,
        tuple(c for c in commitments if c is not None),
        percent,
        cap,
        timedelta(seconds=notice),
    )


def _renewal_commitment(
    raw: object, path: str, violations: ViolationCollector
) -> RenewalCommitment | None:
    fields = DictReader(raw, path, violations, "a renewal commitment")
    kind = fields.choice("kind", CommitmentKind)
    amount = fields.decimal("amount")
    cost_basis = fields.decimal("cost_basis", Decimal(1))
    priority = fields.integer("priority", 0)
    fields.reject_unknown()
    if kind is CommitmentKind.POSTPAID_COMMIT:
        violations.add(fields.at("kind"), "renewals grant prepaid commits or credits")
    if amount is not None and amount <= 0:
        violations.add(fields.at("amount"), "must be more than 0")
    if cost_basis is not None and not ZERO <= cost_basis <= 1:
        violations.add(fields.at("cost_basis"), "must be between 0 and 1")
    if kind is None or amount is None or cost_basis is None or priority is None:
        return None
    return RenewalCommitment(kind, amount, cost_basis, priority)


def renewal_to_dict(terms: Renewal | None) -> dict[str, object] | None:
    """The dict form of renewal terms."""
    if terms is None:
        return None
    return {
        "auto_renew": terms.auto_renew,
        "commitments": [
            {
                "kind": str(c.kind),
                "amount": format_decimal(c.amount),
                "cost_basis": format_decimal(c.cost_basis),
                "priority": c.priority,
            }
            for c in terms.commitments
        ],
        "rollover_percent": format_decimal(terms.rollover_percent),
        "rollover_cap": None if terms.rollover_cap is None else format_decimal(terms.rollover_cap),
        "notice_seconds": int(terms.notice.total_seconds()),
    }


def dunning_from_dict(raw: object, path: str) -> tuple[timedelta, ...]:
    """Read a dunning schedule: seconds after each failure before the next retry."""
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise InvalidArgument.of_field(path, "must be a list of seconds")
    violations = ViolationCollector()
    schedule: list[timedelta] = []
    for index, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            violations.add(
                f"{path}[{index}]", f"must be a whole number of seconds > 0, got {value!r}"
            )
        else:
            schedule.append(timedelta(seconds=value))
    violations.raise_if_any("invalid dunning schedule")
    return tuple(schedule)


def dunning_to_dict(schedule: Sequence[timedelta]) -> list[int]:
    """The dict form of a dunning schedule."""
    return [int(step.total_seconds()) for step in schedule]


DEFAULT_TRIAL_NOTICE = timedelta(days=3)
"""`contract.trial_ending` is sent this long before a trial ends, unless the trial says."""


class TrialMode(StrEnum):
    """What a trial gives the customer."""

    FREE_USAGE = "free_usage"
    """Usage is rated and recorded, and the invoice waives it with a `trial` line."""
    TRIAL_CREDIT = "trial_credit"
    """A free credit pool of `credit`, granted at term start, expiring when the trial ends."""


@dataclass(frozen=True, slots=True)
class Trial:
    """A trial at the start of a contract's term, ending at `ends_at` (UTC).

    A `free_usage` trial waives whole billing periods: it ends on a period boundary (checked
    with the contract). `notice` is how long before the end `contract.trial_ending` is sent.
    """

    ends_at: datetime
    mode: TrialMode
    credit: Decimal | None = None
    notice: timedelta = DEFAULT_TRIAL_NOTICE

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        ends_at = utc_timestamp(self.ends_at, "ends_at", violations)
        if not isinstance(self.mode, TrialMode):
            violations.add("mode", f"must be one of {', '.join(TrialMode)}")
        elif self.mode is TrialMode.TRIAL_CREDIT:
            credit = self.credit
            if not isinstance(credit, Decimal) or not credit.is_finite() or credit <= 0:
                violations.add("credit", "a trial_credit trial needs a credit of more than 0")
        elif self.credit is not None:
            violations.add("credit", "is only for a trial_credit trial")
        if not isinstance(self.notice, timedelta) or self.notice < timedelta(0):
            violations.add("notice_seconds", "must be ≥ 0")
        violations.raise_if_any("invalid trial")
        object.__setattr__(self, "ends_at", ends_at)

    def waives(self, moment: datetime) -> bool:
        """Whether a free-usage trial waives a line whose service starts at `moment`."""
        return self.mode is TrialMode.FREE_USAGE and moment < self.ends_at


def trial_from_dict(raw: object, path: str) -> Trial | None:
    """Read a trial (see `Trial`), or None when absent."""
    if raw is None:
        return None
    violations = ViolationCollector()
    fields = DictReader(raw, path, violations, "a trial")
    ends_at = fields.timestamp("ends_at")
    mode = fields.choice("mode", TrialMode)
    credit = fields.optional_decimal("credit")
    notice = fields.integer("notice_seconds", int(DEFAULT_TRIAL_NOTICE.total_seconds()))
    fields.reject_unknown()
    violations.raise_if_any("invalid trial")
    assert ends_at is not None and mode is not None and notice is not None
    try:
        return Trial(ends_at, mode, credit, timedelta(seconds=notice))
    except InvalidArgument as error:
        raise under_prefix(error, path) from None


def trial_to_dict(trial: Trial) -> dict[str, object]:
    """The dict form of a trial."""
    data: dict[str, object] = {
        "ends_at": trial.ends_at.isoformat(),
        "mode": str(trial.mode),
        "notice_seconds": int(trial.notice.total_seconds()),
    }
    if trial.credit is not None:
        data["credit"] = format_decimal(trial.credit)
    return data
