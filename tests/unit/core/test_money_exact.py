"""Exact money: minor-unit rounding, strict decimal parsing and pricing-unit conversion."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.money import (
    CURRENCIES,
    PricingUnit,
    currency_of,
    format_decimal,
    parse_decimal,
    round_to_minor_unit,
)

D = Decimal


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0", "USD", "0.00"),
        ("1.004", "USD", "1.00"),  # below the half: down
        ("1.005", "USD", "1.01"),  # exactly half: up
        ("1.0049999999", "USD", "1.00"),  # just below half stays down (no double rounding)
        ("2.675", "USD", "2.68"),  # the classic float trap: exact decimal rounds half up
        ("-1.005", "USD", "-1.01"),  # half up is symmetric: a credit mirrors a charge
        ("-1.004", "USD", "-1.00"),
        ("0.0000025", "USD", "0.00"),  # one token's price is below a cent
        ("1234567.125", "EUR", "1234567.13"),
        ("99.5", "JPY", "100"),  # JPY has no minor unit: round to whole yen
        ("99.49", "JPY", "99"),
        ("-0.5", "JPY", "-1"),
        ("1500.5", "KRW", "1501"),
        ("1.0005", "KWD", "1.001"),  # three decimal places
        ("1.0004", "BHD", "1.000"),
    ],
)
def test_round_to_minor_unit_is_half_up_at_the_minor_unit(
    amount: str, currency: str, expected: str
) -> None:
    rounded = round_to_minor_unit(D(amount), currency)
    assert rounded == D(expected)
    assert str(rounded) == expected  # the exponent is the currency's minor unit


def test_round_accepts_a_currency_object_and_refuses_an_unknown_code() -> None:
    assert round_to_minor_unit(D("0.125"), CURRENCIES["GBP"]) == D("0.13")
    with pytest.raises(InvalidArgument) as error:
        round_to_minor_unit(D("1"), "XYZ")
    assert [v.field for v in error.value.violations] == ["currency"]


def test_rounding_per_event_and_summing_is_not_the_same_as_rounding_once() -> None:
    # 1000 events at 0.004 USD each: 4.00 exactly, but 0.00 if each event were rounded first.
    charges = [D("0.004")] * 1000
    assert round_to_minor_unit(sum(charges, D(0)), "USD") == D("4.00")
    assert sum(round_to_minor_unit(charge, "USD") for charge in charges) == D("0")


@pytest.mark.parametrize(
    ("currency", "minor_units"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("JPY", 0),  # no minor unit
        ("CHF", 2),
        ("CAD", 2),
        ("AUD", 2),
        ("INR", 2),
        ("KRW", 0),  # no minor unit
        ("KWD", 3),  # fils: three places
    ],
)
def test_currency_minor_units(currency: str, minor_units: int) -> None:
    assert currency_of(currency).minor_units == minor_units


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0000025", "0.0000025"),
        ("6.50", "6.50"),  # the scale is kept as written
        ("-3", "-3"),
        ("+7", "7"),
        (" 12 ", "12"),  # surrounding blanks are forgiven
        (".5", "0.5"),
        ("5.", "5"),
        ("1e-6", "0.000001"),  # a modest exponent is fine
        ("2.5E3", "2500"),
        (7, "7"),  # an int is exact (YAML writes `up_to: 5` as an int)
        (D("1.25"), "1.25"),
        ("1.000000000000000000000000000000", "1"),  # trailing zeros do not count as places
        ("0", "0"),
    ],
)
def test_parse_decimal_accepts_exact_decimals(text: object, expected: str) -> None:
    assert parse_decimal(text, "unit_price") == D(expected)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (6.5, "float"),
        (0.1, "float"),
        (True, "bool"),
        ("", "empty"),
        ("   ", "empty"),
        ("NaN", "not a decimal number"),
        ("nan", "not a decimal number"),
        ("Infinity", "not a decimal number"),
        ("-inf", "not a decimal number"),
        (D("NaN"), "not a finite number"),
        (D("Infinity"), "not a finite number"),
        ("1e999999", "not a decimal number"),  # exponent longer than 4 digits
        ("1e30", "digits before the point"),  # 31 digits before the point
        ("1e-30", "decimal places"),
        ("1" * 25, "digits before the point"),
        ("0." + "1" * 25, "decimal places"),
        ("1" * 81, "longer than"),
        ("1,5", "not a decimal number"),
        ("0x10", "not a decimal number"),
        ("1_000", "not a decimal number"),
        ("12 34", "not a decimal number"),
        (None, "got NoneType"),
        ([1], "got list"),
    ],
)
def test_parse_decimal_refuses_anything_inexact_or_absurd(value: object, reason: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_decimal(value, "tiers[1].unit_price")
    assert [v.field for v in error.value.violations] == ["tiers[1].unit_price"]
    assert reason in error.value.violations[0].description


@pytest.mark.parametrize(
    ("value", "text"),
    [(D("2.5E-6"), "0.0000025"), (D("1E+3"), "1000"), (D("6.50"), "6.50"), (D("-0.1"), "-0.1")],
)
def test_format_decimal_writes_plain_notation(value: Decimal, text: str) -> None:
    assert format_decimal(value) == text
    assert parse_decimal(text, "x") == value


def test_a_currency_pricing_unit_converts_at_rate_one() -> None:
    usd = PricingUnit.of_currency("USD")
    assert usd.is_currency
    assert usd.to_invoice_currency(D("0.0000025")) == D("0.0000025")


def test_a_custom_unit_converts_to_its_invoice_currency_at_full_precision() -> None:
    credits = PricingUnit.custom("credits", "USD", D("0.01"))
    assert not credits.is_currency
    # 1234.5678 credits × 0.01 USD = 12.345678 USD, not rounded to cents
    assert credits.to_invoice_currency(D("1234.5678")) == D("12.345678")
    # 0.0003 credits × 0.01 = 0.000003 USD: a sub-cent charge survives the conversion
    assert credits.to_invoice_currency(D("0.0003")) == D("0.000003")


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: PricingUnit.of_currency("usd"), "code"),
        (lambda: PricingUnit.custom("credits", "XXX", D("0.01")), "invoice_currency"),
        (lambda: PricingUnit.custom("credits", "USD", D(0)), "rate_to_invoice_currency"),
        (lambda: PricingUnit.custom("credits", "USD", D("-1")), "rate_to_invoice_currency"),
        (lambda: PricingUnit.custom("eur", "USD", D("1")), "code"),  # a currency is no custom unit
        (lambda: PricingUnit.custom("My Credits", "USD", D("1")), "code"),
        (lambda: PricingUnit("USD", CURRENCIES["USD"], D("2")), "rate_to_invoice_currency"),
    ],
)
def test_invalid_pricing_units_name_the_field(build: Callable[[], object], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        build()
    assert [v.field for v in error.value.violations] == [field]
