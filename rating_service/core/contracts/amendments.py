"""Amendments: a contract's terms changed from a moment on, and when each change takes effect.

A contract keeps the terms it was created with and, in `Contract.amendments`, every change
recorded since, each effective from its own moment: now, a future date or the next period
start, never the past. The version in force at a moment is the creation terms with every
amendment effective by then applied in order (by effective time, then by when each was
recorded). Rating prices an event by the version in force at its timestamp, late events
included. An invoice is composed from the amendments known on its billing date, so what it
charged in advance stays explained when a later amendment changes it: the next invoice credits
the unused part of the old fee and charges the new one for the rest of the period.

Seats are a term like the others: `SetSeats` is an amendment that changes only `seats`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rating_service.core.dict_form import DictReader, utc_timestamp
from rating_service.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
    ViolationCollector,
)

AMENDABLE_TERMS = (
    "rate_card_key",
    "overage_policy",
    "spend_cap",
    "overrides",
    "alert_thresholds",
    "seats",
    "rate_limits",
    "features",
)
"""The terms an amendment may change, in the order they are listed and shown."""

LISTED_TERMS = ("overrides", "alert_thresholds", "rate_limits")
"""Terms that are lists, replaced whole by an amendment."""

AMENDMENT_OUTSIDE_TERM = "AMENDMENT_OUTSIDE_TERM"
"""FailedPrecondition reason: the amendment would take effect outside the contract's term."""

CONTRACT_NOT_AMENDABLE = "CONTRACT_NOT_AMENDABLE"
"""FailedPrecondition reason: the contract has ended; its terms no longer change."""

CLOCK_SKEW = timedelta(seconds=5)
"""How far before the server's now an amendment's effective time may be (client clocks lag)."""


class Effective(StrEnum):
    """When an amendment takes effect."""

    NOW = "now"
    AT = "at"
    """At the request's `effective_at`, which must not be in the past."""
    NEXT_PERIOD_START = "next_period_start"


@dataclass(frozen=True, slots=True)
class Amendment:
    """Terms changed from `effective_at` on, recorded at `recorded_at` by `actor`.

    `changes` are (term, value) pairs in `AMENDABLE_TERMS` order, each value typed as the
    contract's own field (a tuple of overrides, a Decimal cap or None, an int of seats).
    `fingerprint` identifies the request that made it (its id is the request id), so a
    retry is answered with this amendment and another request under the same id is refused.
    """

    amendment_id: str
    effective_at: datetime
    recorded_at: datetime
    changes: tuple[tuple[str, object], ...]
    reason: str = ""
    actor: str = ""
    fingerprint: str = ""

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.amendment_id, str) or not self.amendment_id.strip():
            violations.add("amendment_id", "must be a non-empty string")
        effective = utc_timestamp(self.effective_at, "effective_at", violations)
        recorded = utc_timestamp(self.recorded_at, "recorded_at", violations)
        names = [name for name, _ in self.changes]
        if not names:
            violations.add("terms", "must change at least one term")
        for name in names:
            if name not in AMENDABLE_TERMS:
                violations.add(f"terms.{name}", "is not a term an amendment can change")
        if names != sorted(names, key=_term_order) or len(set(names)) != len(names):
            violations.add("terms", "must name each term once, in AMENDABLE_TERMS order")
        violations.raise_if_any("invalid amendment")
        object.__setattr__(self, "effective_at", effective)
        object.__setattr__(self, "recorded_at", recorded)

    @property
    def terms(self) -> tuple[str, ...]:
        """The names of the terms it changes."""
        return tuple(name for name, _ in self.changes)


def effective_moment(
    effective: Effective,
    at: datetime | None,
    now: datetime,
    next_period_start: datetime,
) -> datetime:
    """When an amendment asked to take effect `effective` (at `at`) does, given the clock.

    Refused (InvalidArgument on `effective_at`) when `at` is missing for AT or in the past:
    the past was rated and perhaps invoiced, so it changes only by credit notes.
    """
    if effective is Effective.NOW:
        return now
    if effective is Effective.NEXT_PERIOD_START:
        return next_period_start
    if at is None:
        raise InvalidArgument.of_field("effective_at", "is required when effective is 'at'")
    if at < now - CLOCK_SKEW:
        raise InvalidArgument.of_field(
            "effective_at",
            f"{at.isoformat()} is in the past: amendments take effect now or later",
        )
    return max(at, now)


def check_in_term(
    contract_id: str, term_start: datetime, term_end: datetime | None, at: datetime
) -> None:
    """Refuse an amendment taking effect outside [term_start, term_end) (FailedPrecondition)."""
    if term_start <= at and (term_end is None or at < term_end):
        return
    description = (
        f"the term runs from {term_start.isoformat()}"
        f" to {'no end' if term_end is None else term_end.isoformat()}"
    )
    raise FailedPrecondition(
        f"contract {contract_id!r} cannot be amended at {at.isoformat()}: {description}",
        reason=AMENDMENT_OUTSIDE_TERM,
        violations=[
            PreconditionViolation("CONTRACT_TERM", f"contracts/{contract_id}", description)
        ],
        metadata={"contract_id": contract_id},
    )


def read_terms(raw: object, path: str, violations: ViolationCollector) -> dict[str, object]:
    """The changed terms of an amendment's wire form, in the contract's own dict form.

    The wire form gives each term only when it changes: `spend_cap` as `{"amount": "…"}`
    (no amount: no cap), `overrides`, `alert_thresholds` and `rate_limits` as
    `{"items": [...]}` (no items: none), `features` as `{"items": {key: feature}}` (the
    contract's own grants, over its rate card's), the others as plain values.
    """
    fields = DictReader(raw, path, violations, "contract terms")
    terms: dict[str, object] = {}
    for name in ("rate_card_key", "overage_policy"):
        if fields.has(name):
            terms[name] = fields.raw(name)
    if fields.has("seats"):
        terms["seats"] = fields.raw("seats")
    if fields.has("spend_cap"):
        cap = DictReader(fields.raw("spend_cap"), fields.at("spend_cap"), violations, "a cap")
        terms["spend_cap"] = cap.raw("amount")
        cap.reject_unknown()
    for name in LISTED_TERMS:
        if fields.has(name):
            listed = DictReader(fields.raw(name), fields.at(name), violations, "a list")
            terms[name] = listed.sequence("items")
            listed.reject_unknown()
    if fields.has("features"):
        granted = DictReader(fields.raw("features"), fields.at("features"), violations, "features")
        terms["features"] = granted.raw("items") or {}
        granted.reject_unknown()
    fields.reject_unknown()
    return terms


def write_terms(terms: Mapping[str, object]) -> dict[str, object]:
    """The wire form of changed terms given in the contract's dict form (see `read_terms`)."""
    wire: dict[str, object] = {}
    for name, value in terms.items():
        if name == "spend_cap":
            wire[name] = {} if value is None else {"amount": value}
        elif name in LISTED_TERMS or name == "features":
            wire[name] = {"items": value} if value else {}
        else:
            wire[name] = value
    return wire


def _term_order(name: str) -> int:
    return AMENDABLE_TERMS.index(name) if name in AMENDABLE_TERMS else len(AMENDABLE_TERMS)
