"""A price model with per-period terms: free allowances, spend bounds, proration, fee at zero.

The terms make a new period price T(q) from the model's P(q), in this order:
1. free units: the model sees q' = max(q − free_units, 0);
2. first tier's fee at zero (graduated, volume): P(0) is the first tier's flat fee;
3. free amount: max(P − free_amount, 0);
4. maximum spend: min(…, maximum_spend).
T is a function of the period-to-date quantity, so an event of x on c is still charged
T(c + x) − T(c) exactly. T(0) (the first tier's fee, when owed at zero) is billed once per
period on the invoice, never by an event. The minimum spend is not part of T: the invoice tops
the period's spend up to it (`spend_limits.minimum_top_up`).

A percentage price takes only `minimum_spend` here: its own free events and free value belong
to the model (`Percentage`), and a period maximum or free amount would need every event's
price before the bound, which a percentage's period counters do not keep.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TypeAlias

from rating_service.core.errors import ViolationCollector
from rating_service.core.pricing.breakdown import NOTHING, ZERO, LineItem, PricedAmount, PriceLine
from rating_service.core.pricing.constraints import check_price, priced_exactly, require_quantity
from rating_service.core.pricing.first_tier_fee import first_tier_fee, price_at_zero_convention
from rating_service.core.pricing.free_allowance import after_free_amount, billable_units
from rating_service.core.pricing.graduated import Graduated
from rating_service.core.pricing.package import Package
from rating_service.core.pricing.per_unit import PerUnit
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.prorated_tiers import prorated_quantity
from rating_service.core.pricing.spend_limits import capped_at
from rating_service.core.pricing.volume import Volume

TermedModel: TypeAlias = PerUnit | Graduated | Volume | Package | Percentage
"""The price models that take period terms (a flat fee and a matrix do not; a matrix's cells do)."""

# Each term, and the models it does not fit, with the reason (shown to whoever wrote it).
_PERCENTAGE_HINT = "a percentage price takes free_events, free_value and minimum_spend"
_DOES_NOT_FIT: dict[str, tuple[tuple[type, ...], str]] = {
    "free_units": ((Package, Percentage), "use the model's own free_units / free_value"),
    "free_amount": ((Percentage,), _PERCENTAGE_HINT),
    "maximum_spend": ((Percentage,), _PERCENTAGE_HINT + " (its maximum is per event)"),
    "prorated": ((Percentage,), "a percentage price has no per-period quantities to prorate"),
    "first_tier_fee_at_zero": (
        (PerUnit, Package, Percentage),
        "only a graduated or volume price has a first tier",
    ),
}


@dataclass(frozen=True, slots=True)
class PeriodTerms:
    """What a price gives free and how it is bounded, each billing period."""

    free_units: Decimal = ZERO
    free_amount: Decimal = ZERO
    minimum_spend: Decimal | None = None
    maximum_spend: Decimal | None = None
    prorated: bool = False
    first_tier_fee_at_zero: bool = False

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        check_price(violations, "free_units", self.free_units)
        check_price(violations, "free_amount", self.free_amount)
        low_ok = self.minimum_spend is None or check_price(
            violations, "minimum_spend", self.minimum_spend
        )
        high_ok = self.maximum_spend is None or check_price(
            violations, "maximum_spend", self.maximum_spend
        )
        if (
            low_ok
            and high_ok
            and self.minimum_spend is not None
            and self.maximum_spend is not None
            and self.maximum_spend < self.minimum_spend
        ):
            violations.add(
                "maximum_spend", f"must not be below minimum_spend ({self.minimum_spend})"
            )
        for name in ("prorated", "first_tier_fee_at_zero"):
            if not isinstance(getattr(self, name), bool):
                violations.add(name, "must be true or false")
        violations.raise_if_any("invalid price terms")

    @property
    def is_plain(self) -> bool:
        """True when the terms change nothing (the model alone is the price)."""
        return self == _PLAIN

    def given(self) -> tuple[str, ...]:
        """The names of the terms that change something."""
        return tuple(
            name
            for name in (
                "free_units",
                "free_amount",
                "minimum_spend",
                "maximum_spend",
                "prorated",
                "first_tier_fee_at_zero",
            )
            if getattr(self, name) != getattr(_PLAIN, name)
        )


_PLAIN = PeriodTerms()


@dataclass(frozen=True, slots=True)
class PriceWithTerms:
    """A price model and its period terms: T(q) as the module docstring builds it."""

    model: TermedModel
    terms: PeriodTerms

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.model, TermedModel):
            violations.add(
                "model", f"{type(self.model).__name__} takes no period terms (its cells may)"
            )
        elif not isinstance(self.terms, PeriodTerms):
            violations.add("terms", "must be PeriodTerms")
        else:
            for name in self.terms.given():
                misfits, why = _DOES_NOT_FIT.get(name, ((), ""))
                if isinstance(self.model, misfits):
                    violations.add(name, f"does not apply to a {self.model.MODEL} price: {why}")
        violations.raise_if_any("invalid price terms")

    @property
    def MODEL(self) -> str:  # noqa: N802 - reads like the models' own MODEL class attribute
        """The name of the underlying model."""
        return self.model.MODEL

    @property
    def prices_each_event(self) -> bool:
        """True for a percentage: priced event by event, not by the period's quantity."""
        return isinstance(self.model, Percentage)

    def period_fee(self) -> Decimal:
        """T(0): what the period owes with no usage at all, billed on the invoice."""
        if isinstance(self.model, Percentage):
            return ZERO
        return priced_exactly(lambda: self._total(ZERO))

    def period_total(self, quantity: Decimal) -> PricedAmount:
        """T(quantity) with its breakdown (a percentage takes its events' values instead)."""
        if isinstance(self.model, Percentage):
            raise TypeError("a percentage prices its events: use period_total_of_events")
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._explained_total(quantity))

    def period_total_of_events(self, event_values: list[Decimal]) -> PricedAmount:
        """A percentage price's period total: the sum of its events' prices."""
        if not isinstance(self.model, Percentage):
            return self.period_total(sum(event_values, ZERO))
        return self.model.period_total(event_values)

    def incremental_charge(
        self, period_to_date: Decimal, quantity: Decimal, events_before: int = 0
    ) -> PricedAmount:
        """T(period_to_date + quantity) − T(period_to_date), with its breakdown."""
        if isinstance(self.model, Percentage):
            return self.model.incremental_charge(period_to_date, quantity, events_before)
        require_quantity(period_to_date, "period_to_date")
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._delta(period_to_date, quantity))

    def prorated_to(self, part: int, whole: int) -> PriceWithTerms:
        """This price for a contract active `part` of `whole` of the period, if it is prorated.

        The result is marked not prorated, so it is never cut twice.
        """
        terms = self.terms
        if not terms.prorated:
            return self
        model = self.model
        if part and part != whole:

            def cut(value: Decimal) -> Decimal:
                return prorated_quantity(value, part, whole)

            if isinstance(model, Graduated | Volume):
                tiers = tuple(
                    replace(tier, up_to=None if tier.up_to is None else cut(tier.up_to))
                    for tier in model.tiers
                )
                model = Graduated(tiers) if isinstance(model, Graduated) else Volume(tiers)
            elif isinstance(model, Package):
                # A package keeps its free units itself; they are per period like the others.
                model = replace(model, free_units=cut(model.free_units))
            terms = replace(
                terms,
                free_units=cut(terms.free_units),
                free_amount=cut(terms.free_amount),
                minimum_spend=None if terms.minimum_spend is None else cut(terms.minimum_spend),
                maximum_spend=None if terms.maximum_spend is None else cut(terms.maximum_spend),
            )
        return PriceWithTerms(model, replace(terms, prorated=False))

    # T(q) and its parts; every amount below is in the exact context (priced_exactly).

    def _parts(self, quantity: Decimal) -> tuple[Decimal, Decimal, Decimal]:
        """(P(q') with the fee at zero, the part the free amount pays, the part capped).

        T(q) is the first less the other two.
        """
        model, terms = self.model, self.terms
        assert not isinstance(model, Percentage)
        billable = billable_units(quantity, terms.free_units)
        price = model.price_at(billable)
        if terms.first_tier_fee_at_zero and isinstance(model, Graduated | Volume):
            price = price_at_zero_convention(model, billable, price)
        after_free = after_free_amount(price, terms.free_amount)
        return price, price - after_free, after_free - capped_at(after_free, terms.maximum_spend)

    def _total(self, quantity: Decimal) -> Decimal:
        price, freed, capped = self._parts(quantity)
        return price - freed - capped

    def _explained_total(self, quantity: Decimal) -> PricedAmount:
        model, terms = self.model, self.terms
        assert not isinstance(model, Percentage)
        billable = billable_units(quantity, terms.free_units)
        lines: list[PriceLine] = []
        if terms.free_units and quantity:
            free = quantity - billable
            lines.append(PriceLine(LineItem.FREE_UNITS, free, ZERO, ZERO, ZERO))
        lines.extend(model.period_total(billable).lines if billable else ())
        if not billable and terms.first_tier_fee_at_zero and isinstance(model, Graduated | Volume):
            fee = first_tier_fee(model)
            if fee:
                lines.append(PriceLine(LineItem.FIRST_TIER_FEE, ZERO, ZERO, fee, fee, 0))
        price, freed, capped = self._parts(quantity)
        lines.extend(_adjustment_lines(freed, capped))
        return PricedAmount(price - freed - capped, tuple(lines))

    def _delta(self, before: Decimal, quantity: Decimal) -> PricedAmount:
        if not quantity:
            return NOTHING
        model, terms = self.model, self.terms
        assert not isinstance(model, Percentage)
        after = before + quantity
        billable_before = billable_units(before, terms.free_units)
        billable_after = billable_units(after, terms.free_units)
        lines: list[PriceLine] = []
        free = quantity - (billable_after - billable_before)
        if free:
            lines.append(PriceLine(LineItem.FREE_UNITS, free, ZERO, ZERO, ZERO))
        amount = ZERO
        if billable_after != billable_before:
            charged = model.incremental_charge(billable_before, billable_after - billable_before)
            lines.extend(charged.lines)
            amount = charged.amount
            if (
                not billable_before
                and terms.first_tier_fee_at_zero
                and isinstance(model, Graduated | Volume)
            ):
                fee = first_tier_fee(model)
                if fee:  # billed with the period already, so the event gives it back
                    lines.append(PriceLine(LineItem.FIRST_TIER_FEE, ZERO, ZERO, -fee, -fee, 0))
                    amount -= fee
        if not terms.free_amount and terms.maximum_spend is None:
            return PricedAmount(amount, tuple(lines))  # nothing comes off the model's price
        price_before, freed_before, capped_before = self._parts(before)
        price_after, freed_after, capped_after = self._parts(after)
        lines.extend(_adjustment_lines(freed_after - freed_before, capped_after - capped_before))
        amount = (price_after - freed_after - capped_after) - (
            price_before - freed_before - capped_before
        )
        return PricedAmount(amount, tuple(lines))


def _adjustment_lines(freed: Decimal, capped: Decimal) -> list[PriceLine]:
    lines = []
    if freed:
        lines.append(PriceLine(LineItem.FREE_AMOUNT, ZERO, ZERO, -freed, -freed))
    if capped:
        lines.append(PriceLine(LineItem.MAXIMUM_SPEND, ZERO, ZERO, -capped, -capped))
    return lines
