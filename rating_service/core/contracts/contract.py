"""Customers and contracts: terms, billing periods, prices, limits, whether usage is accepted."""

from __future__ import annotations

import calendar
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

from rating_service.core.contracts.alerts import (
    AlertThreshold,
    threshold_from_dict,
    threshold_to_dict,
)
from rating_service.core.contracts.allocation import OveragePolicy
from rating_service.core.contracts.amendments import (
    AMENDABLE_TERMS,
    CONTRACT_NOT_AMENDABLE,
    Amendment,
    check_in_term,
    read_terms,
    write_terms,
)
from rating_service.core.contracts.lifecycle import (
    DEFAULT_DUNNING,
    AutoRecharge,
    Renewal,
    Trial,
    TrialMode,
    auto_recharge_from_dict,
    auto_recharge_to_dict,
    dunning_from_dict,
    dunning_to_dict,
    renewal_from_dict,
    renewal_to_dict,
    trial_from_dict,
    trial_to_dict,
)
from rating_service.core.contracts.overrides import (
    EffectivePrices,
    Override,
    override_from_dict,
    override_to_dict,
)
from rating_service.core.contracts.rate_limits import (
    RateLimit,
    rate_limit_from_dict,
    rate_limit_to_dict,
)
from rating_service.core.dict_form import DictReader, utc_timestamp
from rating_service.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
    ViolationCollector,
)
from rating_service.core.money import Currency, currency_of, format_decimal
from rating_service.core.pricing.constraints import under_prefix
from rating_service.core.pricing.features import (
    Feature,
    features_from_dict,
    features_to_dict,
    no_features,
)

T = TypeVar("T")

CONTRACT_SUSPENDED = "CONTRACT_SUSPENDED"
"""FailedPrecondition reason: the contract is suspended (e.g. after failed dunning)."""

CONTRACT_ENDED = "CONTRACT_ENDED"
"""FailedPrecondition reason: the contract has ended, or the event falls after its term."""

CONTRACT_NOT_STARTED = "CONTRACT_NOT_STARTED"
"""FailedPrecondition reason: the event falls before the contract's term starts."""


@dataclass(frozen=True, slots=True)
class Customer:
    """Who contracts are with; `external_ref` is the tenant's own id for them (a CRM id)."""

    customer_id: str
    tenant_id: str
    name: str
    external_ref: str = ""

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        for name in ("customer_id", "tenant_id", "name"):
            _require_text(violations, name, getattr(self, name))
        if not isinstance(self.external_ref, str):
            violations.add("external_ref", "must be a string")
        violations.raise_if_any("invalid customer")


class BillingFrequency(StrEnum):
    """How long a billing period is."""

    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    ANNUAL = "annual"

    @property
    def months(self) -> int:
        """Calendar months in one period."""
        return {"monthly": 1, "quarterly": 3, "annual": 12}[self.value]


class ContractStatus(StrEnum):
    """Whether a contract accepts usage."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    ENDED = "ended"


class LateUsage(StrEnum):
    """What happens to an event that arrives after its billing period was closed."""

    REFUSE = "refuse"
    """Refused (FAILED_PRECONDITION, PERIOD_CLOSED): the caller must bill it another way."""
    ROLL_FORWARD = "roll_forward"
    """Rated into the period open now, at the prices of the event's own time."""


@dataclass(frozen=True, slots=True)
class BillingAnchor:
    """Where billing periods start: a day of the month (1–31) and a time of day, in UTC.

    A day past the end of a month (31 in April, 29–31 in February) means that month's last
    day. The time is naive and read as UTC (an aware time must be UTC).
    """

    day: int
    time: time = time(0, 0)

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if isinstance(self.day, bool) or not isinstance(self.day, int) or not 1 <= self.day <= 31:
            violations.add("day", f"must be a day of the month from 1 to 31, got {self.day!r}")
        if not isinstance(self.time, time):
            violations.add("time", "must be a time of day")
        elif self.time.tzinfo is not None:
            offset = self.time.utcoffset()
            if offset is None or offset != timedelta(0):
                violations.add("time", "is in UTC: give it without an offset, or with +00:00")
        violations.raise_if_any("invalid billing anchor")
        if isinstance(self.time, time) and self.time.tzinfo is not None:
            object.__setattr__(self, "time", self.time.replace(tzinfo=None))


MIN_BILLING_INTERVAL = timedelta(seconds=1)
"""The shortest fixed billing period a contract may have."""


@dataclass(frozen=True, slots=True)
class Contract:
    """A customer's contract: term, billing cycle, currency, prices and the limits on usage.

    `term_end` None is evergreen. `spend_cap` is per billing period in the invoice currency
    (None = no cap). Overrides change the rate card's prices (see `overrides`); commitments
    and their pools are kept apart (see `pools`), as they change with every debit.
    `billing_interval`, when set, makes periods that fixed length counted from term start
    instead of calendar periods on the anchor (trials, demos, tests with one-minute periods).
    `payment_method` is the saved payment method's token at the gateway ("" = none: invoices
    wait to be paid by other means). `late_usage` says what happens to an event whose period
    was already closed for invoicing. `seats` is how many seats a per-seat fee charges for.
    `amendments` change terms from their own moments on: `at` gives the version in force at a
    moment, and `versions` holds each version from when it takes effect.
    """

    contract_id: str
    customer_id: str
    tenant_id: str
    term_start: datetime
    term_end: datetime | None
    billing_anchor: BillingAnchor
    billing_frequency: BillingFrequency
    invoice_currency: Currency
    rate_card_key: str
    overage_policy: OveragePolicy
    overrides: tuple[Override, ...] = ()
    spend_cap: Decimal | None = None
    alert_thresholds: tuple[AlertThreshold, ...] = ()
    status: ContractStatus = ContractStatus.ACTIVE
    billing_interval: timedelta | None = None
    payment_method: str = ""
    late_usage: LateUsage = LateUsage.REFUSE
    auto_recharge: AutoRecharge | None = None
    renewal: Renewal | None = None
    dunning: tuple[timedelta, ...] = DEFAULT_DUNNING
    seats: int = 0
    rate_limits: tuple[RateLimit, ...] = ()
    features: Mapping[str, Feature] = field(default_factory=no_features, hash=False)
    amendments: tuple[Amendment, ...] = ()
    trial: Trial | None = None
    prices: EffectivePrices = field(init=False, repr=False, compare=False)
    """The rate card's prices changed by `overrides`, built once each (see `EffectivePrices`)."""
    versions: tuple[tuple[datetime, Contract], ...] = field(init=False, repr=False, compare=False)
    """(effective from, version) of an amended contract, the first from term start; else ()."""

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        for name in ("contract_id", "customer_id", "tenant_id", "rate_card_key"):
            _require_text(violations, name, getattr(self, name))
        start = utc_timestamp(self.term_start, "term_start", violations)
        end = (
            None if self.term_end is None else utc_timestamp(self.term_end, "term_end", violations)
        )
        if start is not None and end is not None and end <= start:
            violations.add("term_end", "must be after term_start")
        if not isinstance(self.billing_anchor, BillingAnchor):
            violations.add("billing_anchor", "must be a BillingAnchor")
        if not isinstance(self.billing_frequency, BillingFrequency):
            violations.add("billing_frequency", f"must be one of {', '.join(BillingFrequency)}")
        if not isinstance(self.invoice_currency, Currency):
            violations.add("invoice_currency", "must be a Currency")
        if not isinstance(self.overage_policy, OveragePolicy):
            violations.add("overage_policy", f"must be one of {', '.join(OveragePolicy)}")
        if not isinstance(self.status, ContractStatus):
            violations.add("status", f"must be one of {', '.join(ContractStatus)}")
        interval = self.billing_interval
        if interval is not None and (
            not isinstance(interval, timedelta) or interval < MIN_BILLING_INTERVAL
        ):
            violations.add(
                "billing_interval_seconds",
                f"must be at least {MIN_BILLING_INTERVAL.total_seconds():.0f} seconds",
            )
        if not isinstance(self.payment_method, str):
            violations.add("payment_method", "must be a string")
        if not isinstance(self.late_usage, LateUsage):
            violations.add("late_usage", f"must be one of {', '.join(LateUsage)}")
        if self.auto_recharge is not None and not isinstance(self.auto_recharge, AutoRecharge):
            violations.add("auto_recharge", "must be AutoRecharge settings")
        if self.renewal is not None and not isinstance(self.renewal, Renewal):
            violations.add("renewal", "must be Renewal terms")
        elif self.renewal is not None and self.term_end is None:
            violations.add("renewal", "an evergreen contract (no term_end) has no term to renew")
        object.__setattr__(self, "dunning", tuple(self.dunning))
        if not all(isinstance(step, timedelta) and step > timedelta(0) for step in self.dunning):
            violations.add("dunning_retry_seconds", "must be durations of more than 0 seconds")
        cap = self.spend_cap
        if cap is not None and (not isinstance(cap, Decimal) or not cap.is_finite() or cap < 0):
            violations.add("spend_cap", f"must be a finite Decimal ≥ 0, got {cap!r}")
        object.__setattr__(self, "overrides", tuple(self.overrides))
        for index, override in enumerate(self.overrides):
            if not isinstance(override, Override):
                violations.add(f"overrides[{index}]", "must be an Override")
        object.__setattr__(self, "alert_thresholds", tuple(self.alert_thresholds))
        seen: dict[str, int] = {}
        for index, threshold in enumerate(self.alert_thresholds):
            path = f"alert_thresholds[{index}]"
            if not isinstance(threshold, AlertThreshold):
                violations.add(path, "must be an AlertThreshold")
            elif threshold.threshold_id in seen:
                violations.add(
                    f"{path}.threshold_id",
                    f"{threshold.threshold_id!r} is also alert_thresholds"
                    f"[{seen[threshold.threshold_id]}]",
                )
            else:
                seen[threshold.threshold_id] = index
        if isinstance(self.seats, bool) or not isinstance(self.seats, int) or self.seats < 0:
            violations.add("seats", f"must be a whole number ≥ 0, got {self.seats!r}")
        if not isinstance(self.features, Mapping) or not all(
            isinstance(feature, Feature) for feature in self.features.values()
        ):
            violations.add("features", "must map feature keys to features")
        else:
            object.__setattr__(self, "features", MappingProxyType(dict(self.features)))
        object.__setattr__(self, "rate_limits", tuple(self.rate_limits))
        limit_ids: set[str] = set()
        for index, limit in enumerate(self.rate_limits):
            if not isinstance(limit, RateLimit):
                violations.add(f"rate_limits[{index}]", "must be a RateLimit")
            elif limit.limit_id in limit_ids:
                violations.add(f"rate_limits[{index}].limit_id", "is given twice")
            else:
                limit_ids.add(limit.limit_id)
        object.__setattr__(self, "amendments", tuple(self.amendments))
        amendment_ids: set[str] = set()
        for index, amendment in enumerate(self.amendments):
            if not isinstance(amendment, Amendment):
                violations.add(f"amendments[{index}]", "must be an Amendment")
            elif amendment.amendment_id in amendment_ids:
                violations.add(f"amendments[{index}].amendment_id", "is given twice")
            else:
                amendment_ids.add(amendment.amendment_id)
        if self.trial is not None and start is not None:
            # Last: the period arithmetic needs the other terms valid.
            _check_trial(self, start, violations)
        violations.raise_if_any("invalid contract")
        object.__setattr__(self, "term_start", start)
        object.__setattr__(self, "term_end", end)
        object.__setattr__(self, "prices", EffectivePrices(self.overrides))
        object.__setattr__(
            self,
            "amendments",
            tuple(sorted(self.amendments, key=lambda a: (a.effective_at, a.recorded_at))),
        )
        object.__setattr__(self, "versions", self._versions())

    def _versions(self) -> tuple[tuple[datetime, Contract], ...]:
        if not self.amendments:
            return ()
        current = replace(self, amendments=())
        versions = [(self.term_start, current)]
        for amendment in self.amendments:
            current = replace(current, **dict(amendment.changes))  # type: ignore[arg-type]
            versions.append((amendment.effective_at, current))
        return tuple(versions)

    def covers(self, at: datetime) -> bool:
        """True when `at` is within the term: term_start ≤ at < term_end."""
        return self.term_start <= at and (self.term_end is None or at < self.term_end)

    def at(self, moment: datetime) -> Contract:
        """The version in force at `moment`: itself when never amended."""
        if not self.versions:
            return self
        index = bisect_right(self.versions, moment, key=_effective_from) - 1
        return self.versions[max(index, 0)][1]

    def as_known_at(self, moment: datetime) -> Contract:
        """The contract with only the amendments recorded by `moment` (what was known then)."""
        known = tuple(a for a in self.amendments if a.recorded_at <= moment)
        return self if len(known) == len(self.amendments) else replace(self, amendments=known)


def _effective_from(version: tuple[datetime, Contract]) -> datetime:
    return version[0]


def amended(contract: Contract, amendment: Amendment) -> Contract:
    """The contract with `amendment` added; refused on an ended contract or outside the term."""
    if contract.status is ContractStatus.ENDED:
        description = "the contract has ended"
        raise FailedPrecondition(
            f"contract {contract.contract_id!r} cannot be amended: {description}",
            reason=CONTRACT_NOT_AMENDABLE,
            violations=[
                PreconditionViolation(
                    "CONTRACT_STATUS", f"contracts/{contract.contract_id}", description
                )
            ],
            metadata={"contract_id": contract.contract_id},
        )
    check_in_term(
        contract.contract_id, contract.term_start, contract.term_end, amendment.effective_at
    )
    return replace(contract, amendments=(*contract.amendments, amendment))


def _check_trial(contract: Contract, start: datetime, violations: ViolationCollector) -> None:
    trial = contract.trial
    if not isinstance(trial, Trial):
        violations.add("trial", "must be a Trial")
        return
    # A trial may outlast the term (a contract cancelled during its trial): it then covers it.
    if not start < trial.ends_at:
        violations.add("trial.ends_at", "must be after term_start")
    elif (
        trial.mode is TrialMode.FREE_USAGE
        and not violations.violations
        and nominal_billing_period(contract, trial.ends_at)[0] != trial.ends_at
    ):
        # Usage counters are per period: a free-usage trial waives whole periods.
        violations.add("trial.ends_at", "a free_usage trial must end where a billing period starts")


def check_contract_accepts_usage(contract: Contract, at: datetime) -> None:
    """Refuse usage on a suspended or ended contract, or outside its term (FailedPrecondition).

    Reasons: CONTRACT_SUSPENDED, CONTRACT_ENDED (status ended, or `at` on or after term_end),
    CONTRACT_NOT_STARTED (`at` before term_start).
    """
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise InvalidArgument.of_field("at", "must be a timezone-aware datetime")
    subject = f"contracts/{contract.contract_id}"
    if contract.status is ContractStatus.SUSPENDED:
        reason, description = CONTRACT_SUSPENDED, "the contract is suspended"
    elif contract.status is ContractStatus.ENDED:
        reason, description = CONTRACT_ENDED, "the contract has ended"
    elif at < contract.term_start:
        reason = CONTRACT_NOT_STARTED
        description = f"the contract's term starts at {contract.term_start.isoformat()}"
    elif contract.term_end is not None and at >= contract.term_end:
        reason = CONTRACT_ENDED
        description = f"the contract's term ended at {contract.term_end.isoformat()}"
    else:
        return
    raise FailedPrecondition(
        f"contract {contract.contract_id!r} does not accept usage at {at.isoformat()}:"
        f" {description}",
        reason=reason,
        violations=[PreconditionViolation("CONTRACT_STATUS", subject, description)],
        metadata={"contract_id": contract.contract_id},
    )


def cancelled(contract: Contract, at: datetime) -> Contract | None:
    """The contract cancelled at `at`: its term ends then; None when it ends by then already.

    Refused (FailedPrecondition, CONTRACT_NOT_STARTED) unless `at` is after the term's start.
    """
    if contract.term_end is not None and contract.term_end <= at:
        return None
    if at <= contract.term_start:
        description = f"the term starts at {contract.term_start.isoformat()}"
        raise FailedPrecondition(
            f"contract {contract.contract_id!r} cannot end at {at.isoformat()}: {description}",
            reason=CONTRACT_NOT_STARTED,
            violations=[
                PreconditionViolation(
                    "CONTRACT_TERM", f"contracts/{contract.contract_id}", description
                )
            ],
        )
    return replace(contract, term_end=at)


def billing_period_containing(contract: Contract, at: datetime) -> tuple[datetime, datetime]:
    """The billing period [start, end) that holds `at`, in UTC, clipped to the contract's term.

    Period boundaries fall on the anchor day (clamped to the month's last day) at the anchor
    time, every 1, 3 or 12 months counted from the month the term starts in. The first and
    last periods are cut to the term: a contract starting on the 15th with anchor day 1 has a
    first period from the 15th to the 1st. With a `billing_interval`, periods are that long,
    counted from term start.
    """
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise InvalidArgument.of_field("at", "must be a timezone-aware datetime")
    moment = at.astimezone(UTC)
    if not contract.covers(moment):
        raise InvalidArgument.of_field("at", f"{moment.isoformat()} is outside the contract's term")
    start, end = nominal_billing_period(contract, moment)
    start = max(start, contract.term_start)
    if contract.term_end is not None:
        end = min(end, contract.term_end)
    return start, end


def nominal_billing_period(contract: Contract, moment: datetime) -> tuple[datetime, datetime]:
    """The whole billing period holding `moment`, not cut to the term (proration divides by it)."""
    interval = contract.billing_interval
    if interval is not None:
        start = contract.term_start + interval * ((moment - contract.term_start) // interval)
        return start, start + interval
    step = contract.billing_frequency.months
    first_month = _month_index(contract.term_start)
    k = (_month_index(moment) - first_month) // step
    start = _boundary(contract.billing_anchor, first_month + k * step)
    if start > moment:
        k -= 1
        start = _boundary(contract.billing_anchor, first_month + k * step)
    return start, _boundary(contract.billing_anchor, first_month + (k + 1) * step)


def _month_index(moment: datetime) -> int:
    return moment.year * 12 + moment.month - 1


def _boundary(anchor: BillingAnchor, month_index: int) -> datetime:
    year, month0 = divmod(month_index, 12)
    month = month0 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return datetime.combine(datetime(year, month, day, tzinfo=UTC).date(), anchor.time, tzinfo=UTC)


def _require_text(violations: ViolationCollector, path: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        violations.add(path, "must be a non-empty string")


def customer_from_dict(data: Mapping[str, object], field_path: str = "") -> Customer:
    """Build a customer from `{"customer_id", "tenant_id", "name", "external_ref"?}`."""
    violations = ViolationCollector()
    fields = DictReader(data, field_path, violations, "a customer")
    customer_id = fields.text("customer_id")
    tenant_id = fields.text("tenant_id")
    name = fields.text("name")
    external_ref = fields.optional_text("external_ref") or ""
    fields.reject_unknown()
    violations.raise_if_any("invalid customer")
    return Customer(customer_id, tenant_id, name, external_ref)


def customer_to_dict(customer: Customer) -> dict[str, object]:
    """The plain-dict form of a customer."""
    data: dict[str, object] = {
        "customer_id": customer.customer_id,
        "tenant_id": customer.tenant_id,
        "name": customer.name,
    }
    if customer.external_ref:
        data["external_ref"] = customer.external_ref
    return data


def contract_from_dict(data: Mapping[str, object], field_path: str = "") -> Contract:
    """Build a contract from its plain-dict form, or raise naming every bad field.

    Timestamps are ISO-8601 with an offset; `billing_anchor` is `{"day": 1..31, "time":
    "HH:MM[:SS]"}` (UTC); `invoice_currency` an ISO 4217 code; `spend_cap` a decimal string or
    null; `overrides` and `alert_thresholds` lists in their own dict forms.
    """
    violations = ViolationCollector()
    fields = DictReader(data, field_path, violations, "a contract")
    contract_id = fields.text("contract_id")
    customer_id = fields.text("customer_id")
    tenant_id = fields.text("tenant_id")
    term_start = fields.timestamp("term_start")
    term_end = fields.optional_timestamp("term_end")
    anchor = _anchor_from_dict(
        fields.raw("billing_anchor"), fields.at("billing_anchor"), violations
    )
    frequency = fields.choice("billing_frequency", BillingFrequency)
    currency = _currency(fields)
    rate_card_key = fields.text("rate_card_key")
    overage_policy = fields.choice("overage_policy", OveragePolicy)
    spend_cap = fields.optional_decimal("spend_cap")
    status = fields.choice("status", ContractStatus, ContractStatus.ACTIVE)
    overrides = _each(fields, "overrides", override_from_dict, violations)
    thresholds = _each(fields, "alert_thresholds", threshold_from_dict, violations)
    interval_seconds = fields.optional_integer("billing_interval_seconds")
    payment_method = fields.optional_text("payment_method") or ""
    late_usage = fields.choice("late_usage", LateUsage, LateUsage.REFUSE)
    auto_recharge = _part(auto_recharge_from_dict, fields, "auto_recharge", violations)
    renewal = _part(renewal_from_dict, fields, "renewal", violations)
    dunning = (
        _part(dunning_from_dict, fields, "dunning_retry_seconds", violations)
        if fields.has("dunning_retry_seconds")
        else DEFAULT_DUNNING
    )
    seats = fields.optional_integer("seats") or 0
    rate_limits = _each(fields, "rate_limits", rate_limit_from_dict, violations)
    features: dict[str, Feature] = {}
    try:
        features = features_from_dict(fields.raw("features"), fields.at("features"))
    except InvalidArgument as error:
        violations.violations.extend(error.violations)
    raw_amendments = fields.sequence("amendments")
    trial = _part(trial_from_dict, fields, "trial", violations)
    fields.reject_unknown()
    violations.raise_if_any("invalid contract")
    if (
        term_start is None
        or anchor is None
        or frequency is None
        or currency is None
        or overage_policy is None
        or status is None
        or late_usage is None
    ):  # each recorded a violation already
        raise InvalidArgument.of_field(field_path or "contract", "is incomplete")
    try:
        contract = Contract(
            contract_id,
            customer_id,
            tenant_id,
            term_start,
            term_end,
            anchor,
            frequency,
            currency,
            rate_card_key,
            overage_policy,
            tuple(overrides),
            spend_cap,
            tuple(thresholds),
            status,
            None if not interval_seconds else timedelta(seconds=interval_seconds),
            payment_method,
            late_usage,
            auto_recharge,
            renewal,
            dunning or (),
            seats,
            tuple(rate_limits),
            features,
            trial=trial,
        )
        if not raw_amendments:
            return contract
        return replace(
            contract,
            amendments=tuple(
                amendment_from_dict(raw, contract, fields.at(f"amendments[{index}]"))
                for index, raw in enumerate(raw_amendments)
            ),
        )
    except InvalidArgument as error:
        raise under_prefix(error, field_path) from None


def amendment_from_dict(data: object, contract: Contract, field_path: str = "") -> Amendment:
    """Read an amendment's dict form, its terms typed and checked as `contract`'s own are."""
    violations = ViolationCollector()
    fields = DictReader(data, field_path, violations, "an amendment")
    amendment_id = fields.text("amendment_id")
    effective_at = fields.timestamp("effective_at")
    recorded_at = fields.timestamp("recorded_at")
    reason = fields.optional_text("reason") or ""
    actor = fields.optional_text("actor") or ""
    fingerprint = fields.optional_text("fingerprint") or ""
    terms = read_terms(fields.raw("terms"), fields.at("terms"), violations)
    ended = [str(pool_id) for pool_id in fields.sequence("ended_commitments")]
    fields.reject_unknown()
    violations.raise_if_any("invalid amendment")
    assert effective_at is not None and recorded_at is not None  # else a violation was raised
    changes = amendment_changes(contract, terms, fields.at("terms")) if terms else ()
    return Amendment(
        amendment_id,
        effective_at,
        recorded_at,
        changes,
        reason,
        actor,
        fingerprint,
        tuple(ended),
    )


def amendment_changes(
    contract: Contract, terms: Mapping[str, object], field_path: str = "terms"
) -> tuple[tuple[str, object], ...]:
    """Terms in the contract's dict form as its typed values, checked as a contract checks them."""
    base = contract_to_dict(contract)
    base.pop("amendments", None)
    changed = contract_from_dict({**base, **terms}, field_path)
    return tuple((name, getattr(changed, name)) for name in AMENDABLE_TERMS if name in terms)


def amendment_to_dict(amendment: Amendment) -> dict[str, object]:
    """The plain-dict form of an amendment; `amendment_from_dict` reads it back."""
    terms = {name: _term_to_dict(name, value) for name, value in amendment.changes}
    data: dict[str, object] = {
        "amendment_id": amendment.amendment_id,
        "effective_at": amendment.effective_at.isoformat(),
        "recorded_at": amendment.recorded_at.isoformat(),
        "terms": write_terms(terms),
    }
    for name in ("reason", "actor", "fingerprint"):
        if getattr(amendment, name):
            data[name] = getattr(amendment, name)
    if amendment.ended_commitments:
        data["ended_commitments"] = list(amendment.ended_commitments)
    return data


_TERM_FORMS: Mapping[str, Callable[[Any], object]] = {
    "rate_card_key": str,
    "overage_policy": str,
    "spend_cap": lambda cap: None if cap is None else format_decimal(cap),
    "overrides": lambda overrides: [override_to_dict(o) for o in overrides],
    "alert_thresholds": lambda thresholds: [threshold_to_dict(t) for t in thresholds],
    "seats": int,
    "rate_limits": lambda limits: [rate_limit_to_dict(limit) for limit in limits],
    "features": features_to_dict,
}
"""The dict form of each amendable term: a contract's and its amendments' share it."""

_ALWAYS_WRITTEN = frozenset(
    {"rate_card_key", "overage_policy", "spend_cap", "overrides", "alert_thresholds"}
)
"""Terms every contract document holds; the others are written only when set."""


def _term_to_dict(name: str, value: object) -> object:
    return _TERM_FORMS[name](value)


def _part(
    read: Callable[[Any, str], T], fields: DictReader, key: str, violations: ViolationCollector
) -> T | None:
    """Read one nested part of the contract, gathering its violations with the others."""
    try:
        return read(fields.raw(key), fields.at(key))
    except InvalidArgument as error:
        violations.violations.extend(error.violations)
        return None


def _currency(fields: DictReader) -> Currency | None:
    code = fields.raw("invoice_currency")
    try:
        return currency_of(code if isinstance(code, str) else "", fields.at("invoice_currency"))
    except InvalidArgument as error:
        fields.violations.violations.extend(error.violations)
        return None


def _anchor_from_dict(
    raw: object, path: str, violations: ViolationCollector
) -> BillingAnchor | None:
    fields = DictReader(raw, path, violations, "a billing anchor")
    day = fields.integer("day")
    raw_time = fields.raw("time")
    at = time(0, 0)
    if isinstance(raw_time, time):
        at = raw_time
    elif isinstance(raw_time, str):
        try:
            at = time.fromisoformat(raw_time)
        except ValueError:
            violations.add(fields.at("time"), f"{raw_time!r} is not a time of day (HH:MM:SS)")
            return None
    elif raw_time is not None:
        violations.add(fields.at("time"), "must be a time of day (HH:MM:SS), in UTC")
        return None
    fields.reject_unknown()
    if day is None:
        return None
    try:
        return BillingAnchor(day, at)
    except InvalidArgument as error:
        violations.violations.extend(under_prefix(error, path).violations)
        return None


def _each(
    fields: DictReader,
    key: str,
    build: Callable[[Mapping[str, object], str], T],
    violations: ViolationCollector,
) -> list[T]:
    """Build every item of a list field, gathering all their violations."""
    built: list[T] = []
    for index, raw in enumerate(fields.sequence(key)):
        path = fields.at(f"{key}[{index}]")
        if not isinstance(raw, Mapping):
            violations.add(path, f"must be a mapping, got {type(raw).__name__}")
            continue
        try:
            built.append(build(raw, path))
        except InvalidArgument as error:
            violations.violations.extend(error.violations)
    return built


def contract_to_dict(contract: Contract) -> dict[str, object]:
    """The plain-dict form of a contract; `contract_from_dict` reads it back to an equal one."""
    data: dict[str, object] = {
        "contract_id": contract.contract_id,
        "customer_id": contract.customer_id,
        "tenant_id": contract.tenant_id,
        "term_start": contract.term_start.isoformat(),
        "term_end": None if contract.term_end is None else contract.term_end.isoformat(),
        "billing_anchor": {
            "day": contract.billing_anchor.day,
            "time": contract.billing_anchor.time.isoformat(),
        },
        "billing_frequency": str(contract.billing_frequency),
        "invoice_currency": contract.invoice_currency.code,
        "status": str(contract.status),
    }
    # Optional terms are written only when set, so older documents read back unchanged.
    for name in AMENDABLE_TERMS:
        value = getattr(contract, name)
        if name in _ALWAYS_WRITTEN or value:
            data[name] = _term_to_dict(name, value)
    if contract.billing_interval is not None:
        data["billing_interval_seconds"] = int(contract.billing_interval.total_seconds())
    if contract.payment_method:
        data["payment_method"] = contract.payment_method
    if contract.late_usage is not LateUsage.REFUSE:
        data["late_usage"] = str(contract.late_usage)
    if contract.auto_recharge is not None:
        data["auto_recharge"] = auto_recharge_to_dict(contract.auto_recharge)
    if contract.renewal is not None:
        data["renewal"] = renewal_to_dict(contract.renewal)
    if contract.dunning != DEFAULT_DUNNING:
        data["dunning_retry_seconds"] = dunning_to_dict(contract.dunning)
    if contract.amendments:
        data["amendments"] = [amendment_to_dict(a) for a in contract.amendments]
    if contract.trial is not None:
        data["trial"] = trial_to_dict(contract.trial)
    return data
