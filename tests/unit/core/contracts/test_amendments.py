"""Amendments: versions in force by time, what an invoice knows, and fees prorated to the cent."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from rating_service.core.billing.compose import compose_invoice
from rating_service.core.billing.invoice import LineKind
from rating_service.core.contracts import ContractStatus, Override, ReplacePrice
from rating_service.core.contracts.amendments import (
    AMENDMENT_OUTSIDE_TERM,
    CONTRACT_NOT_AMENDABLE,
    Amendment,
    Effective,
    effective_moment,
)
from rating_service.core.contracts.contract import (
    Contract,
    amended,
    amendment_changes,
    contract_from_dict,
    contract_to_dict,
)
from rating_service.core.errors import FailedPrecondition, InvalidArgument
from rating_service.core.pricing import FlatFee, build_price_model
from rating_service.core.pricing.catalog import catalog_from_document
from rating_service.core.pricing.flat_fee import BillingTiming
from rating_service.core.pricing.seat_fee import SeatFee
from tests.unit.core.billing.builders import (
    T0,
    a_contract,
    inputs_on,
    lines_of,
    rows,
    summary,
    utc,
)

D = Decimal


def amendment(
    contract: Contract,
    amendment_id: str,
    effective_at: object,
    recorded_at: object,
    **terms: object,
) -> Amendment:
    """An amendment of `contract` changing `terms` (given in the contract's dict form)."""
    changes = amendment_changes(contract, terms)
    return Amendment(amendment_id, effective_at, recorded_at, changes)  # type: ignore[arg-type]


def fee_override(product: str, amount: str, timing: BillingTiming) -> dict[str, object]:
    """An override's dict form replacing a product's price with a flat fee from T0."""
    return {
        "product_key": product,
        "effective_from": T0.isoformat(),
        "replace_price": {"model": "flat_fee", "amount": amount, "timing": str(timing)},
    }


def test_each_moment_is_priced_by_the_version_then_in_force() -> None:
    contract = a_contract()
    raised = amendment(contract, "a1", utc(2025, 1, 11), utc(2025, 1, 10), spend_cap="500")
    lowered = amendment(contract, "a2", utc(2025, 2, 1), utc(2025, 1, 20), spend_cap="300")
    contract = amended(amended(contract, lowered), raised)

    assert [a.amendment_id for a in contract.amendments] == ["a1", "a2"]
    assert contract.at(utc(2025, 1, 10, 23, 59)).spend_cap is None
    assert contract.at(utc(2025, 1, 11)).spend_cap == D(500)
    assert contract.at(utc(2025, 1, 31)).spend_cap == D(500)
    assert contract.at(utc(2025, 2, 1)).spend_cap == D(300)
    # An invoice composed on 15 January knows only the first amendment.
    known = contract.as_known_at(utc(2025, 1, 15))
    assert [a.amendment_id for a in known.amendments] == ["a1"]
    assert known.at(utc(2025, 3, 1)).spend_cap == D(500)


def test_an_amended_contract_reads_back_equal_with_its_history() -> None:
    contract = a_contract()
    change = amendment(
        contract,
        "upgrade",
        utc(2025, 1, 11),
        utc(2025, 1, 10),
        seats=12,
        overrides=[fee_override("platform", "620", BillingTiming.IN_ADVANCE)],
        spend_cap=None,
    )
    contract = amended(contract, change)
    data = contract_to_dict(contract)
    assert data["amendments"] == [
        {
            "amendment_id": "upgrade",
            "effective_at": "2025-01-11T00:00:00+00:00",
            "recorded_at": "2025-01-10T00:00:00+00:00",
            "terms": {
                "spend_cap": {},
                "overrides": {
                    "items": [
                        {
                            "product_key": "platform",
                            "effective_from": "2025-01-01T00:00:00+00:00",
                            "replace_price": {
                                "model": "flat_fee",
                                "amount": "620",
                                "timing": "in_advance",
                            },
                        }
                    ]
                },
                "seats": 12,
            },
        }
    ]
    assert contract_from_dict(data) == contract
    assert contract_from_dict(data).at(utc(2025, 2, 1)).seats == 12


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ({"spend_cap": "-5"}, "terms.spend_cap"),
        ({"overage_policy": "sometimes"}, "terms.overage_policy"),
        ({"seats": -1}, "terms.seats"),
        ({"overrides": [{"product_key": "tokens"}]}, "terms.overrides[0].effective_from"),
    ],
)
def test_bad_terms_are_refused_under_their_field(terms: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        amendment_changes(a_contract(), terms)
    assert field in {v.field for v in refused.value.violations}


def test_an_amendment_must_change_something_it_may_change() -> None:
    with pytest.raises(InvalidArgument):
        Amendment("a", T0, T0, ())
    with pytest.raises(InvalidArgument):
        Amendment("a", T0, T0, (("term_end", None),))


def test_amendments_take_effect_in_the_term_of_a_live_contract() -> None:
    contract = a_contract(term_start=utc(2025, 1, 1), term_end=utc(2025, 6, 1))
    late = amendment(contract, "late", utc(2025, 6, 1), utc(2025, 5, 1), seats=3)
    with pytest.raises(FailedPrecondition) as refused:
        amended(contract, late)
    assert refused.value.reason == AMENDMENT_OUTSIDE_TERM
    ended = replace(contract, status=ContractStatus.ENDED)
    ok = amendment(contract, "ok", utc(2025, 2, 1), utc(2025, 1, 5), seats=3)
    with pytest.raises(FailedPrecondition) as refused:
        amended(ended, ok)
    assert refused.value.reason == CONTRACT_NOT_AMENDABLE


def test_effective_moments() -> None:
    now, boundary = utc(2025, 1, 10, 15, 30), utc(2025, 2, 1)
    assert effective_moment(Effective.NOW, None, now, boundary) == now
    assert effective_moment(Effective.NEXT_PERIOD_START, None, now, boundary) == boundary
    assert effective_moment(Effective.AT, utc(2025, 1, 20), now, boundary) == utc(2025, 1, 20)
    # A client clock a second behind is read as now; the past is refused.
    assert effective_moment(Effective.AT, now - timedelta(seconds=1), now, boundary) == now
    with pytest.raises(InvalidArgument):
        effective_moment(Effective.AT, utc(2025, 1, 9), now, boundary)
    with pytest.raises(InvalidArgument):
        effective_moment(Effective.AT, None, now, boundary)


def test_a_mid_period_amendment_prorates_both_fees_to_the_cent() -> None:
    """January has 31 days; the amendment is recorded on the 10th, effective the 11th.

    Before: platform $310 in advance, support $90 in arrears. After: $620 and $180.
    - The opening invoice (1 Jan) charged platform $310 for all of January.
    - 1 Feb, support in arrears: 90 × 10/31 = 29.032… → 29.03, 180 × 21/31 = 121.935… → 121.94.
    - 1 Feb, platform for 11–31 Jan: unused 310 × 21/31 = −210.00, as amended 620 × 21/31 =
      420.00; and February in advance at the new fee, 620.00.
    """
    contract = a_contract()
    upgrade = amendment(
        contract,
        "upgrade",
        utc(2025, 1, 11),
        utc(2025, 1, 10),
        overrides=[
            fee_override("platform", "620", BillingTiming.IN_ADVANCE),
            fee_override("support", "180", BillingTiming.IN_ARREARS),
        ],
    )
    contract = amended(contract, upgrade)

    opening = compose_invoice(inputs_on(contract, T0))
    assert summary(lines_of(opening, LineKind.FEE)) == rows(
        [("fee:platform:2025-01-01T00:00:00+00:00", "Platform fee", "310.00", "310.00")]
    )

    february = compose_invoice(inputs_on(contract, utc(2025, 2, 1)))
    assert summary(lines_of(february, LineKind.FEE)) == rows(
        [
            (
                "fee:support:2025-01-01T00:00:00+00:00",
                "Support plan (prorated)",
                "29.03225806451612903226",
                "29.03",
            ),
            (
                "fee:support:2025-01-11T00:00:00+00:00",
                "Support plan (prorated)",
                "121.93548387096774193548",
                "121.94",
            ),
            (
                "fee_unused:platform:2025-01-11T00:00:00+00:00",
                "Platform fee: unused part, changed from 2025-01-11",
                "-210",
                "-210.00",
            ),
            (
                "fee_amended:platform:2025-01-11T00:00:00+00:00",
                "Platform fee: as amended, from 2025-01-11",
                "420",
                "420.00",
            ),
            ("fee:platform:2025-02-01T00:00:00+00:00", "Platform fee", "620", "620.00"),
        ]
    )
    assert february.total == D("980.97")


def test_an_amendment_known_when_the_period_was_billed_needs_no_settling() -> None:
    """Scheduled before the period opened, the advance invoice already prorated it."""
    contract = a_contract()
    scheduled = amendment(
        contract,
        "scheduled",
        utc(2025, 2, 15),
        utc(2025, 1, 20),
        overrides=[fee_override("platform", "620", BillingTiming.IN_ADVANCE)],
    )
    contract = amended(contract, scheduled)
    february = compose_invoice(inputs_on(contract, utc(2025, 2, 1)))
    march = compose_invoice(inputs_on(contract, utc(2025, 3, 1)))
    # 28 days: 310 × 14/28 = 155 and 620 × 14/28 = 310, billed in advance on 1 February.
    advance = [(ln.description, str(ln.amount)) for ln in lines_of(february, LineKind.FEE)]
    assert advance[-2:] == [
        ("Platform fee (prorated)", "155.00"),
        ("Platform fee (prorated)", "310.00"),
    ]
    assert not [ln for ln in march.lines if ln.key.startswith(("fee_unused", "fee_amended"))]


def test_versions_keep_the_fee_model_of_their_time() -> None:
    contract = a_contract()
    change = amendment(
        contract,
        "a",
        utc(2025, 1, 11),
        utc(2025, 1, 10),
        overrides=[fee_override("platform", "620", BillingTiming.IN_ADVANCE)],
    )
    contract = amended(contract, change)
    before = contract.at(utc(2025, 1, 10)).overrides
    after = contract.at(utc(2025, 1, 11)).overrides
    assert before == ()
    assert len(after) == 1 and isinstance(after[0], Override)
    assert isinstance(after[0].action, ReplacePrice)
    assert isinstance(after[0].action.price, FlatFee)


# ---------------------------------------------------------------- seats

SEAT_CATALOG = catalog_from_document(
    {
        "products": [
            {"key": "seats", "name": "Workspace seats", "meter": {"event_type": "seat"}},
        ],
        "rate_cards": [
            {
                "key": "standard",
                "version": 1,
                "effective_from": "2020-01-01T00:00:00+00:00",
                "pricing_unit": "USD",
                "prices": {
                    "seats": {
                        "model": "seat_fee",
                        "per_seat": {"model": "per_unit", "unit_price": "20"},
                    }
                },
            }
        ],
    }
)


def test_seats_up_and_down_mid_period_are_settled_on_the_next_invoice() -> None:
    """$20 a seat a month, in advance; January has 31 days.

    10 seats on 1 January (opening invoice: 200.00). On the 10th, 15 seats from the 11th; on
    the 20th, 12 seats from the 21st. The 1 February invoice:
    - 11–20 Jan (10 days): unused −200 × 10/31 = −64.516… → −64.52; 15 seats 300 × 10/31 =
      96.774… → 96.77;
    - 21–31 Jan (11 days): unused −200 × 11/31 = −70.967… → −70.97; 12 seats 240 × 11/31 =
      85.161… → 85.16;
    - February in advance, 12 seats: 240.00. Total 286.44.
    """
    contract = replace(a_contract(), seats=10)
    up = amendment(contract, "up", utc(2025, 1, 11), utc(2025, 1, 10), seats=15)
    down = amendment(contract, "down", utc(2025, 1, 21), utc(2025, 1, 20), seats=12)
    contract = amended(amended(contract, up), down)

    opening = compose_invoice(inputs_on(contract, T0, catalog=SEAT_CATALOG))
    assert [(ln.description, str(ln.amount), ln.quantity) for ln in opening.lines] == [
        ("Workspace seats · 10 seats", "200.00", D(10))
    ]
    february = compose_invoice(inputs_on(contract, utc(2025, 2, 1), catalog=SEAT_CATALOG))
    assert [(ln.description, str(ln.amount)) for ln in february.lines] == [
        ("Workspace seats · 10 seats: unused part, changed from 2025-01-11", "-64.52"),
        ("Workspace seats · 15 seats: as amended, from 2025-01-11", "96.77"),
        ("Workspace seats · 10 seats: unused part, changed from 2025-01-21", "-70.97"),
        ("Workspace seats · 12 seats: as amended, from 2025-01-21", "85.16"),
        ("Workspace seats · 12 seats", "240.00"),
    ]
    assert february.total == D("286.44")
    assert february.lines[-1].unit_price == D(20)


def test_seats_priced_in_volume_tiers_charge_every_seat_at_the_tier_reached() -> None:
    fee = build_price_model(
        {
            "model": "seat_fee",
            "per_seat": {
                "model": "volume",
                "tiers": [{"up_to": "10", "unit_price": "20"}, {"unit_price": "15"}],
            },
        }
    )
    assert isinstance(fee, SeatFee)
    assert fee.period_total(D(10)).amount == D(200)
    assert fee.period_total(D(15)).amount == D(225)
    assert fee.incremental_charge(D(0), D(5)).amount == D(0)  # usage never changes it


def test_a_renewed_term_starts_from_the_terms_in_force_at_its_start() -> None:
    from rating_service.core.contracts.renewal import next_contract

    contract = a_contract(term_start=utc(2025, 1, 1), term_end=utc(2026, 1, 1))
    during = amendment(contract, "during", utc(2025, 6, 1), utc(2025, 5, 20), spend_cap="500")
    late = amendment(contract, "late", utc(2025, 12, 15), utc(2025, 12, 10), seats=7)
    contract = amended(amended(contract, during), late)

    renewed = next_contract(contract)
    assert (renewed.term_start, renewed.spend_cap, renewed.seats) == (utc(2026, 1, 1), D(500), 7)
    assert renewed.amendments == ()  # both are part of its terms now, not history to replay
