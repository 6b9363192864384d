"""Alert thresholds and which alerts a change fires, each once per crossing.

A threshold's condition is evaluated on a snapshot of the contract (`AlertState`). An alert
fires when its condition goes from false to true; it fires again only after the condition has
been false in between. Two pure ways to use that, both with the same conditions:

- `crossed_alerts(before, after, thresholds)`: the alerts one change fired, from the states just
  before and just after it (the hot path, once per debit);
- `fire_alerts(state, thresholds, fired)`: when states are not paired (a sweep run on a clock,
  for expiry warnings), the caller persists the keys that have fired and are not yet re-armed.

Conditions, per kind (money in the invoice currency):
- `balance_below`: available (balance − pending) < amount, for one pool (`pool_id`) or summed
  over every drawable pool active at the time (no `pool_id`); subject the pool or the contract.
- `spend_above_cap_percent`: period spend ≥ percent% of the spend cap (never without a cap).
- `spend_above_commit_percent`: what was spent against a commitment ≥ percent% of its amount:
  original − balance for a prepaid commit or credit, the caller's term spend for a postpaid one.
- `pool_expiring_within`: a pool with balance left expires within `days` days (one pool, or
  every drawable pool); subject the pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

from rating_service.core.contracts.pools import CommitmentKind, Pool
from rating_service.core.dict_form import DictReader, utc_timestamp
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import exact_sum, format_decimal
from rating_service.core.pricing.constraints import priced_exactly, under_prefix

ZERO = Decimal(0)
HUNDRED = Decimal(100)


class AlertKind(StrEnum):
    """What an alert watches."""

    BALANCE_BELOW = "balance_below"
    SPEND_ABOVE_CAP_PERCENT = "spend_above_cap_percent"
    SPEND_ABOVE_COMMIT_PERCENT = "spend_above_commit_percent"
    POOL_EXPIRING_WITHIN = "pool_expiring_within"


_NEEDS: Mapping[AlertKind, str] = MappingProxyType(
    {
        AlertKind.BALANCE_BELOW: "amount",
        AlertKind.SPEND_ABOVE_CAP_PERCENT: "percent",
        AlertKind.SPEND_ABOVE_COMMIT_PERCENT: "percent",
        AlertKind.POOL_EXPIRING_WITHIN: "days",
    }
)


@dataclass(frozen=True, slots=True)
class AlertThreshold:
    """One alert a contract asks for: its kind, its limit, and optionally the pool it watches.

    Exactly the limit field its kind needs is set: `amount` for balance_below, `percent` for
    the spend kinds, `days` for pool_expiring_within. `pool_id` is required for
    spend_above_commit_percent and optional (None = every pool / the whole contract) otherwise.
    """

    threshold_id: str
    kind: AlertKind
    amount: Decimal | None = None
    percent: Decimal | None = None
    days: int | None = None
    pool_id: str | None = None

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.threshold_id, str) or not self.threshold_id.strip():
            violations.add("threshold_id", "must be a non-empty string")
        if not isinstance(self.kind, AlertKind):
            violations.add("kind", f"must be one of {', '.join(AlertKind)}")
            violations.raise_if_any("invalid alert threshold")
        needed = _NEEDS[self.kind]
        for name in ("amount", "percent", "days"):
            value = getattr(self, name)
            if name != needed:
                if value is not None:
                    violations.add(name, f"is not a limit of a {self.kind} alert")
                continue
            if value is None:
                violations.add(name, f"is required for a {self.kind} alert")
            elif name == "days":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    violations.add(name, f"must be a whole number of days ≥ 1, got {value!r}")
            elif not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
                violations.add(name, f"must be a finite Decimal > 0, got {value!r}")
        if self.pool_id is not None and (
            not isinstance(self.pool_id, str) or not self.pool_id.strip()
        ):
            violations.add("pool_id", "must be a non-empty string")
        if self.kind is AlertKind.SPEND_ABOVE_COMMIT_PERCENT and self.pool_id is None:
            violations.add("pool_id", "names the commitment whose spend is watched")
        if self.kind is AlertKind.SPEND_ABOVE_CAP_PERCENT and self.pool_id is not None:
            violations.add("pool_id", "the spend cap is the contract's, not a pool's")
        violations.raise_if_any("invalid alert threshold")


@dataclass(frozen=True, slots=True)
class AlertState:
    """A contract's snapshot for alerts: its pools, spend and cap, at one moment.

    `period_spend` is the billing period's rated spend; `commitment_spend` maps each postpaid
    commit's pool id to the spend counted against it over the term so far.
    """

    contract_id: str
    at: datetime
    pools: tuple[Pool, ...]
    period_spend: Decimal = ZERO
    spend_cap: Decimal | None = None
    commitment_spend: Mapping[str, Decimal] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        at = utc_timestamp(self.at, "at", violations)
        violations.raise_if_any("invalid alert state")
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "pools", tuple(self.pools))
        object.__setattr__(self, "commitment_spend", MappingProxyType(dict(self.commitment_spend)))


@dataclass(frozen=True, slots=True, order=True)
class AlertKey:
    """Which alert: a threshold and its subject (a pool id, or the contract id)."""

    threshold_id: str
    subject: str


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert that fired: the threshold, its subject, what was measured and the limit.

    `measured` and `limit` are: available balance and the amount (balance_below); spend and
    the spend that makes the percentage (the spend kinds); the pool's balance at stake and the
    days (pool_expiring_within, with `expires_at`).
    """

    threshold_id: str
    kind: AlertKind
    subject: str
    measured: Decimal
    limit: Decimal
    expires_at: datetime | None = None

    @property
    def key(self) -> AlertKey:
        """The key under which this alert is armed and fired."""
        return AlertKey(self.threshold_id, self.subject)


def alerts_in_effect(state: AlertState, thresholds: Sequence[AlertThreshold]) -> tuple[Alert, ...]:
    """Every alert whose condition holds in this state, in threshold order."""
    found: list[Alert] = []
    for threshold in thresholds:
        found.extend(_conditions(state, threshold))
    return tuple(found)


def crossed_alerts(
    before: AlertState, after: AlertState, thresholds: Sequence[AlertThreshold]
) -> list[Alert]:
    """The alerts a change fired: conditions true after it that were false before it."""
    held_before = {alert.key for alert in alerts_in_effect(before, thresholds)}
    return [alert for alert in alerts_in_effect(after, thresholds) if alert.key not in held_before]


def fire_alerts(
    state: AlertState, thresholds: Sequence[AlertThreshold], fired: Iterable[AlertKey]
) -> tuple[list[Alert], frozenset[AlertKey]]:
    """The alerts to send now, and the keys to persist as fired (re-armed keys are dropped).

    An alert is sent when its condition holds and its key is not in `fired`; a key whose
    condition no longer holds leaves the fired set, so the next crossing fires again.
    """
    already = frozenset(fired)
    holding = alerts_in_effect(state, thresholds)
    new = [alert for alert in holding if alert.key not in already]
    return new, frozenset(alert.key for alert in holding)


def _conditions(state: AlertState, threshold: AlertThreshold) -> list[Alert]:
    kind = threshold.kind
    if kind is AlertKind.BALANCE_BELOW:
        return _balance_below(state, threshold)
    if kind is AlertKind.SPEND_ABOVE_CAP_PERCENT:
        return _spend_above_cap(state, threshold)
    if kind is AlertKind.SPEND_ABOVE_COMMIT_PERCENT:
        return _spend_above_commit(state, threshold)
    return _expiring(state, threshold)


def _watched(state: AlertState, threshold: AlertThreshold) -> list[Pool]:
    return [
        pool
        for pool in state.pools
        if pool.is_drawable
        and pool.is_active_at(state.at)
        and (threshold.pool_id is None or pool.pool_id == threshold.pool_id)
    ]


def _balance_below(state: AlertState, threshold: AlertThreshold) -> list[Alert]:
    limit = threshold.amount if threshold.amount is not None else ZERO
    pools = _watched(state, threshold)
    if threshold.pool_id is None:
        available = exact_sum(pool.available for pool in pools)
        subject = state.contract_id
    elif pools:
        available, subject = pools[0].available, pools[0].pool_id
    else:
        return []  # the pool is gone, expired or not started: nothing to warn about
    if available >= limit:
        return []
    return [Alert(threshold.threshold_id, threshold.kind, subject, available, limit)]


def _percent_of(base: Decimal, percent: Decimal) -> Decimal:
    # Dividing by 100 only shifts the point, so percent% of an amount stays exact.
    return priced_exactly(lambda: (base * percent).scaleb(-2), "percent")


def _spend_above_cap(state: AlertState, threshold: AlertThreshold) -> list[Alert]:
    if state.spend_cap is None or threshold.percent is None:
        return []
    limit = _percent_of(state.spend_cap, threshold.percent)
    if state.period_spend < limit:
        return []
    return [
        Alert(threshold.threshold_id, threshold.kind, state.contract_id, state.period_spend, limit)
    ]


def _spend_above_commit(state: AlertState, threshold: AlertThreshold) -> list[Alert]:
    pool = next((pool for pool in state.pools if pool.pool_id == threshold.pool_id), None)
    if pool is None or threshold.percent is None or not pool.original_amount:
        return []
    if pool.kind is CommitmentKind.POSTPAID_COMMIT:
        spent = state.commitment_spend.get(pool.pool_id, ZERO)
    else:
        spent = priced_exactly(lambda: pool.original_amount - pool.balance, "balance")
    limit = _percent_of(pool.original_amount, threshold.percent)
    if spent < limit:
        return []
    return [Alert(threshold.threshold_id, threshold.kind, pool.pool_id, spent, limit)]


def _expiring(state: AlertState, threshold: AlertThreshold) -> list[Alert]:
    days = threshold.days if threshold.days is not None else 0
    window = timedelta(days=days)
    return [
        Alert(
            threshold.threshold_id,
            threshold.kind,
            pool.pool_id,
            pool.balance,
            Decimal(days),
            pool.expires_at,
        )
        for pool in _watched(state, threshold)
        if pool.expires_at is not None and pool.balance > 0 and pool.expires_at - state.at <= window
    ]


def threshold_from_dict(data: Mapping[str, object], field_path: str = "") -> AlertThreshold:
    """Build an alert threshold from its plain-dict form, or raise naming every bad field.

    Shape: `{"threshold_id", "kind", and the kind's limit: "amount" | "percent" | "days",
    optionally "pool_id"}`; amounts and percents are decimal strings, days an integer.
    """
    violations = ViolationCollector()
    fields = DictReader(data, field_path, violations, "an alert threshold")
    threshold_id = fields.text("threshold_id")
    kind = fields.choice("kind", AlertKind)
    amount = fields.optional_decimal("amount")
    percent = fields.optional_decimal("percent")
    days = fields.optional_integer("days")
    pool_id = fields.optional_text("pool_id")
    fields.reject_unknown()
    violations.raise_if_any("invalid alert threshold")
    if kind is None:  # recorded a violation already
        raise InvalidArgument.of_field(field_path or "kind", "is required")
    try:
        return AlertThreshold(threshold_id, kind, amount, percent, days, pool_id)
    except InvalidArgument as error:
        raise under_prefix(error, field_path) from None


def threshold_to_dict(threshold: AlertThreshold) -> dict[str, object]:
    """The plain-dict form of a threshold; `threshold_from_dict` reads it back to an equal one."""
    data: dict[str, object] = {"threshold_id": threshold.threshold_id, "kind": str(threshold.kind)}
    if threshold.amount is not None:
        data["amount"] = format_decimal(threshold.amount)
    if threshold.percent is not None:
        data["percent"] = format_decimal(threshold.percent)
    if threshold.days is not None:
        data["days"] = threshold.days
    if threshold.pool_id is not None:
        data["pool_id"] = threshold.pool_id
    return data
