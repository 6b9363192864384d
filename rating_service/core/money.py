"""Exact money: currencies, strict decimal parsing, pricing units and the one rounding rule.

Amounts and quantities are `decimal.Decimal`, never floats. Arithmetic runs in `EXACT_CONTEXT`,
which refuses to round: an operation whose exact result needs more than 50 significant digits
raises `decimal.Inexact` instead of silently losing money. Rounding to a currency's minor unit
happens once per invoice line, through `round_to_minor_unit`.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType

from rating_service.core.errors import InvalidArgument

PRECISION = 50
"""Significant digits of every pricing computation (a value on the wire has at most 48)."""

EXACT_CONTEXT = decimal.Context(
    prec=PRECISION,
    rounding=ROUND_HALF_UP,
    Emin=-999_999,
    Emax=999_999,
    # Inexact is a trap, not a flag: exact pricing must fail loudly rather than round.
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)
"""Context for arithmetic that must be exact (sums, products, tier maths, conversions).

Use it through `decimal.localcontext(EXACT_CONTEXT)`, which works on a copy; never mutate it.
"""

ROUNDING_CONTEXT = decimal.Context(
    prec=PRECISION,
    rounding=ROUND_HALF_UP,
    Emin=-999_999,
    Emax=999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
"""Context for the few operations that must round: minor-unit rounding and proration."""

MAX_INTEGER_DIGITS = 24
"""Digits allowed before the decimal point of a value read from the wire or a catalog."""

MAX_FRACTION_DIGITS = 24
"""Significant digits allowed after the decimal point of a value read from the wire or a catalog."""

MAX_TEXT_LENGTH = 80
"""Longest decimal string accepted; longer input is refused before it is parsed."""

# ASCII digits only: Decimal() would read "１２" or "٣" too, and so would \d.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency and the number of decimal places of its minor unit."""

    code: str
    minor_units: int

    @property
    def minor_unit(self) -> Decimal:
        """The smallest amount an invoice can carry (0.01 for USD, 1 for JPY)."""
        return Decimal(1).scaleb(-self.minor_units, context=EXACT_CONTEXT)


CURRENCIES: Mapping[str, Currency] = MappingProxyType(
    {
        currency.code: currency
        for currency in (
            Currency("USD", 2),
            Currency("EUR", 2),
            Currency("GBP", 2),
            Currency("JPY", 0),
            Currency("CHF", 2),
            Currency("CAD", 2),
            Currency("AUD", 2),
            Currency("NZD", 2),
            Currency("INR", 2),
            Currency("KRW", 0),
            Currency("CNY", 2),
            Currency("HKD", 2),
            Currency("SGD", 2),
            Currency("TWD", 2),
            Currency("SEK", 2),
            Currency("NOK", 2),
            Currency("DKK", 2),
            Currency("PLN", 2),
            Currency("CZK", 2),
            Currency("HUF", 2),
            Currency("ISK", 0),
            Currency("BRL", 2),
            Currency("MXN", 2),
            Currency("CLP", 0),
            Currency("ZAR", 2),
            Currency("ILS", 2),
            Currency("AED", 2),
            Currency("SAR", 2),
            Currency("TRY", 2),
            Currency("IDR", 2),
            Currency("THB", 2),
            Currency("PHP", 2),
            Currency("MYR", 2),
            Currency("VND", 0),
            Currency("BHD", 3),
            Currency("KWD", 3),
            Currency("JOD", 3),
            Currency("OMR", 3),
            Currency("TND", 3),
        )
    }
)
"""The supported ISO 4217 subset, by code."""


def currency_of(code: str, field: str = "currency") -> Currency:
    """Return the supported currency with this ISO 4217 code, or raise naming the field."""
    found = CURRENCIES.get(code) if isinstance(code, str) else None
    if found is None:
        raise InvalidArgument.of_field(field, f"{code!r} is not a supported ISO 4217 currency code")
    return found


def round_to_minor_unit(amount: Decimal, currency: Currency | str) -> Decimal:
    """Round an amount to the currency's minor unit, half up (ties away from zero).

    ROUND_HALF_UP is commercial rounding, the rule a customer checking an invoice by hand
    applies (Python's default, half-even, would turn 0.125 into 0.12 and look like an error),
    and it is symmetric around zero, so a credit of -0.005 USD rounds to -0.01 exactly as a
    charge of 0.005 rounds to 0.01. Call it once per invoice line on the exact sum of that
    line's charges, never per event.
    """
    unit = currency if isinstance(currency, Currency) else currency_of(currency)
    _require_finite(amount, "amount")
    return amount.quantize(unit.minor_unit, context=ROUNDING_CONTEXT)


def parse_decimal(value: object, field: str) -> Decimal:
    """Read an exact decimal from the wire or a catalog, or raise InvalidArgument naming the field.

    Accepted: a decimal string (`"0.0000025"`, `"-3"`, `"1e-6"`), an int, or a finite Decimal.
    Refused: floats (already inexact: send `"6.50"`, not `6.5`), booleans, empty or blank
    strings, NaN, infinities, and values outside the supported range (at most
    MAX_INTEGER_DIGITS digits before the point and MAX_FRACTION_DIGITS significant digits
    after it), so any single value fits EXACT_CONTEXT; a computation whose exact result would
    still need more than 50 digits is refused by the pricing code rather than rounded.
    """
    if isinstance(value, bool | float):
        raise InvalidArgument.of_field(
            field,
            f"{value!r} is a {type(value).__name__}, not an exact decimal:"
            ' write it as a decimal string, e.g. "6.50"',
        )
    if isinstance(value, int):
        parsed = Decimal(value)
    elif isinstance(value, Decimal):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidArgument.of_field(field, "must be a decimal string, got an empty string")
        if len(text) > MAX_TEXT_LENGTH:
            raise InvalidArgument.of_field(
                field, f"is longer than {MAX_TEXT_LENGTH} characters: not a plausible amount"
            )
        if _DECIMAL_TEXT.fullmatch(text) is None:
            raise InvalidArgument.of_field(field, f"{value!r} is not a decimal number")
        parsed = Decimal(text)
    else:
        raise InvalidArgument.of_field(
            field, f"must be a decimal string, got {type(value).__name__}"
        )
    _require_finite(parsed, field)
    _require_in_range(parsed, field)
    return parsed


def exact_sum(amounts: Iterable[Decimal], field: str = "amount") -> Decimal:
    """Σ amounts in EXACT_CONTEXT; a sum that would need rounding is refused, naming `field`."""
    values = list(amounts)
    try:
        with decimal.localcontext(EXACT_CONTEXT):
            return sum(values, Decimal(0))
    except (decimal.Inexact, decimal.Overflow):
        raise InvalidArgument.of_field(
            field, f"cannot be summed exactly within {PRECISION} significant digits"
        ) from None


def format_decimal(value: Decimal) -> str:
    """Write a decimal for the wire or a catalog in plain notation (`"0.0000025"`, not `2.5E-6`)."""
    return format(value, "f")


def _require_finite(value: Decimal, field: str) -> None:
    if not isinstance(value, Decimal):
        raise InvalidArgument.of_field(field, f"must be a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise InvalidArgument.of_field(field, f"{value} is not a finite number")


def _require_in_range(value: Decimal, field: str) -> None:
    if value.is_zero():
        return
    # normalize() drops trailing zeros, so "1.000" is judged by its value, not its spelling.
    normal = value.normalize(context=ROUNDING_CONTEXT)
    exponent = normal.as_tuple().exponent
    if not isinstance(exponent, int):  # unreachable for a finite value; narrows the type
        raise InvalidArgument.of_field(field, f"{value} is not a finite number")
    integer_digits = normal.adjusted() + 1
    fraction_digits = max(0, -exponent)
    if integer_digits > MAX_INTEGER_DIGITS:
        raise InvalidArgument.of_field(
            field, f"has {integer_digits} digits before the point (at most {MAX_INTEGER_DIGITS})"
        )
    if fraction_digits > MAX_FRACTION_DIGITS:
        raise InvalidArgument.of_field(
            field,
            f"has {fraction_digits} decimal places (at most {MAX_FRACTION_DIGITS})",
        )


_CUSTOM_UNIT_CODE = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True, slots=True)
class PricingUnit:
    """What prices are written in: a currency, or a custom unit with a fixed invoice-currency value.

    For a currency, `code` is the currency code and the rate is 1. For a custom unit (e.g.
    `credits`, 1 credit = 0.01 USD), `code` is the unit's lowercase name and
    `rate_to_invoice_currency` the value of one unit in `invoice_currency`.
    """

    code: str
    invoice_currency: Currency
    rate_to_invoice_currency: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        if self.is_currency:
            if self.rate_to_invoice_currency != 1:
                raise InvalidArgument.of_field(
                    "rate_to_invoice_currency", "a currency converts to itself at rate 1"
                )
            return
        if _CUSTOM_UNIT_CODE.fullmatch(self.code) is None or self.code.upper() in CURRENCIES:
            raise InvalidArgument.of_field(
                "code",
                f"{self.code!r} is neither a supported currency code nor a custom unit name"
                " (lowercase letters, digits and _, not a currency code)",
            )
        _require_finite(self.rate_to_invoice_currency, "rate_to_invoice_currency")
        if self.rate_to_invoice_currency <= 0:
            raise InvalidArgument.of_field("rate_to_invoice_currency", "must be greater than 0")

    @classmethod
    def of_currency(cls, code: str) -> PricingUnit:
        """Prices written directly in an ISO 4217 currency."""
        return cls(code, currency_of(code, "code"))

    @classmethod
    def custom(
        cls, code: str, invoice_currency: str, rate_to_invoice_currency: Decimal
    ) -> PricingUnit:
        """Prices in a custom unit worth `rate_to_invoice_currency` of `invoice_currency`."""
        return cls(
            code, currency_of(invoice_currency, "invoice_currency"), rate_to_invoice_currency
        )

    @property
    def is_currency(self) -> bool:
        """True when prices are written in the invoice currency itself."""
        return self.code == self.invoice_currency.code

    def to_invoice_currency(self, amount: Decimal) -> Decimal:
        """Convert an amount in this unit to the invoice currency, exactly (never rounds)."""
        if self.is_currency:
            return amount
        try:
            with decimal.localcontext(EXACT_CONTEXT):
                return amount * self.rate_to_invoice_currency
        except decimal.Inexact:
            raise InvalidArgument.of_field(
                "amount", f"cannot be converted exactly within {PRECISION} significant digits"
            ) from None
