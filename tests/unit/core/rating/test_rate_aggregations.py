"""Rating events of every aggregation through the pure rating core, with hand-computed charges.

Each table is one period's events in arrival order and the charge of each: P(Q′) − P(Q) on
the aggregated quantity. The ledger is rebuilt before every event with only the entries next to
the event's mark, the way the store reads them, so the tables also prove that is enough.
A Hypothesis property then checks that any sequence of events charges exactly P(Q) in total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating_service.core.pricing.catalog import Catalog, catalog_from_document
from rating_service.core.pricing.meter import UsageEvent
from rating_service.core.rating.rate import (
    Counter,
    PeriodLedger,
    Rated,
    prepare_event,
    rate_prepared,
)
from tests.unit.core.contracts.builders import a_contract

D = Decimal
START = datetime(2025, 1, 1, tzinfo=UTC)
"""The first billing period of the builders' contract: January 2025 (744 hours)."""

GRADUATED = {
    "model": "graduated",
    "tiers": [{"up_to": "10", "unit_price": "2"}, {"up_to": None, "unit_price": "1"}],
}
"""2 a unit up to 10, then 1: P(q) = 2q for q ≤ 10, 20 + (q − 10) beyond."""

PRODUCTS: dict[str, dict[str, object]] = {
    "gpus-peak": {"event_type": "gpu.peak", "aggregation": "max", "quantity_property": "gpus"},
    "active-users": {
        "event_type": "user.active",
        "aggregation": "unique_count",
        "unique_property": "user_id",
    },
    "storage": {"event_type": "storage.gb", "aggregation": "latest", "quantity_property": "gb"},
    "gpu-hours": {
        "event_type": "gpu.instance",
        "aggregation": "time_weighted_sum",
        "quantity_property": "gpus",
    },
    "jobs": {"event_type": "job.done", "quantity_property": "seconds", "corrections": True},
    "daily-sessions": {
        "event_type": "session.concurrent",
        "aggregation": "max",
        "quantity_property": "sessions",
        "window": "day",
    },
    "daily-calls": {"event_type": "call.made", "window": "day"},
    "calls": {"event_type": "api.call"},
}


def catalog() -> Catalog:
    """Every product above, each on the graduated price."""
    return catalog_from_document(
        {
            "products": [{"key": k, "meter": m} for k, m in PRODUCTS.items()],
            "rate_cards": [
                {
                    "key": "standard",
                    "version": 1,
                    "effective_from": "2020-01-01T00:00:00+00:00",
                    "pricing_unit": "USD",
                    "prices": {key: GRADUATED for key in PRODUCTS},
                }
            ],
        }
    )


@dataclass
class StoredPeriod:
    """One period as the database holds it: counters, and every entry ever written."""

    counters: dict[tuple[str, tuple[str, ...]], Counter] = field(default_factory=dict)
    entries: dict[tuple[str, tuple[str, ...]], dict[str, Decimal]] = field(default_factory=dict)
    spend: Decimal = Decimal(0)
    draws: dict[tuple[str, str], Decimal] = field(default_factory=dict)

    def rate(self, event_type: str, hours: float, **properties: str) -> Rated:
        """Rate one event `hours` into the period, reading entries as the store does."""
        event = UsageEvent(event_type, START + timedelta(hours=hours), properties)
        prepared = prepare_event(
            catalog(),
            [a_contract()],
            "tnt_1",
            f"e{len(self.counters)}",
            "fp",
            event,
            START + timedelta(days=40),
        )
        ledger = PeriodLedger(self.spend, "open", dict(self.counters), dict(self.draws))
        for m in prepared.measured:
            if m.mark is None:
                continue
            stored = self.entries.get((m.product.key, m.cell), {})
            at_or_before = [k for k in stored if k <= m.mark]
            after = [k for k in stored if k > m.mark]
            near = ([max(at_or_before)] if at_or_before else []) + ([min(after)] if after else [])
            ledger.entries[(m.product.key, m.cell)] = {k: stored[k] for k in near}
        rated = rate_prepared(prepared, {}, ledger)
        self.counters, self.spend, self.draws = ledger.counters, ledger.spend, ledger.draws
        for (product, cell, key), value in ledger.new_entries.items():
            self.entries.setdefault((product, cell), {})[key] = value
        return rated


Step = tuple[str, float, Mapping[str, str], str]
"""(event type, hours into the period, properties, the charge by hand)."""


@pytest.mark.parametrize(
    ("steps", "quantity"),
    [
        pytest.param(
            [
                ("gpu.peak", 1, {"gpus": "4"}, "8"),  # Q 0 → 4: 2 × 4
                ("gpu.peak", 2, {"gpus": "3"}, "0"),  # below the peak
                ("gpu.peak", 3, {"gpus": "4"}, "0"),  # equal to it
                ("gpu.peak", 4, {"gpus": "10"}, "12"),  # 4 → 10: 2 × 6, tier 1 full
                ("gpu.peak", 5, {"gpus": "10.5"}, "0.5"),  # 10 → 10.5 in tier 2: 1 × 0.5
            ],
            "10.5",
            id="max",
        ),
        pytest.param(
            [
                ("user.active", 1, {"user_id": "ann"}, "2"),
                ("user.active", 2, {"user_id": "ann"}, "0"),  # a repeat
                ("user.active", 3, {"user_id": "bob"}, "2"),
                ("user.active", 0.5, {"user_id": "bob"}, "0"),  # earlier, still a repeat
            ],
            "2",
            id="unique_count",
        ),
        pytest.param(
            [
                ("storage.gb", 1, {"gb": "12"}, "22"),  # 0 → 12: 20 + 2
                ("storage.gb", 3, {"gb": "5"}, "-12"),  # 12 → 5: 10 − 22
                ("storage.gb", 2, {"gb": "100"}, "0"),  # late: the reading at 3 h stands
                ("storage.gb", 3, {"gb": "6"}, "2"),  # same time as the latest: replaces it
            ],
            "6",
            id="latest",
        ),
        pytest.param(
            [
                # 1 GPU from 734 h: 10 GPU-hours to the period's end (744 h) → 20
                ("gpu.instance", 734, {"gpus": "1"}, "20"),
                # stopped at 739 h: 5 h fewer → Q 10 → 5, 20 − 10
                ("gpu.instance", 739, {"gpus": "0"}, "-10"),
                # late: 1 → 2 GPUs at 738 h, until the stop at 739 h: +1 × 1 h → Q 6
                ("gpu.instance", 738, {"gpus": "2"}, "2"),
                # late: 1 → 4 GPUs at 736 h until the reading at 738 h: +3 × 2 → Q 12 (tier 2)
                ("gpu.instance", 736, {"gpus": "4"}, "10"),  # P(12) − P(6) = 22 − 12
            ],
            "12",
            id="time_weighted_sum",
        ),
        pytest.param(
            [
                ("job.done", 1, {"seconds": "8"}, "16"),
                ("job.done", 2, {"seconds": "-3"}, "-6"),  # refunded: 8 → 5
                ("job.done", 3, {"seconds": "-5"}, "-10"),  # exactly to 0
                ("job.done", 4, {"seconds": "-1"}, "0"),  # never below 0
                ("job.done", 5, {"seconds": "12"}, "22"),  # 0 → 12: 20 + 2
            ],
            "12",
            id="sum with corrections",
        ),
        pytest.param(
            [
                ("session.concurrent", 1, {"sessions": "6"}, "12"),  # 1 Jan: peak 6
                ("session.concurrent", 23.99, {"sessions": "11"}, "9"),  # 1 Jan: 6 → 11, 21 − 12
                ("session.concurrent", 24, {"sessions": "11"}, "21"),  # 2 Jan, its own tiers
                ("session.concurrent", 47, {"sessions": "2"}, "0"),  # 2 Jan below its peak
            ],
            "22",
            id="max per day",
        ),
        pytest.param(
            [("call.made", h, {}, c) for h, c in ((1, "2"), (2, "2"), (24, "2"), (25, "2"))],
            "4",
            id="count per day",
        ),
    ],
)
def test_each_event_is_charged_the_difference_it_makes(
    steps: Sequence[Step], quantity: str
) -> None:
    period = StoredPeriod()
    for event_type, hours, properties, charge in steps:
        rated = period.rate(event_type, hours, **properties)
        assert rated.result.charge == D(charge), (event_type, hours, properties)
    assert sum(c.quantity for c in period.counters.values()) == D(quantity)
    assert sum(rated_amount(period)) == period.spend


def rated_amount(period: StoredPeriod) -> list[Decimal]:
    """Each counter's amount (they add up to the period's spend)."""
    return [c.amount for c in period.counters.values()]


def test_the_charge_line_explains_the_meter_step() -> None:
    period = StoredPeriod()
    period.rate("session.concurrent", 1, sessions="6")
    [line] = period.rate("session.concurrent", 2, sessions="4").result.lines
    assert line.meter is not None
    assert (line.meter.aggregation, line.meter.window) == ("max", "2025-01-01")
    assert (line.meter.before, line.meter.after) == (D(6), D(6))
    assert line.meter.note == "not above the period's maximum 6"
    [down] = period.rate("job.done", 1, seconds="-2").result.lines
    assert down.meter is not None and down.meter.after == D(0)
    [daily] = StoredPeriod().rate("call.made", 25).result.lines
    assert daily.meter is not None
    assert (daily.meter.aggregation, daily.meter.window, daily.meter.after) == (
        "count",
        "2025-01-02",
        D(1),
    )
    [plain] = StoredPeriod().rate("api.call", 1).result.lines
    assert plain.meter is None  # a plain count over the period explains itself


def test_a_negative_value_is_refused_without_corrections() -> None:
    with pytest.raises(Exception, match="must not be negative"):
        StoredPeriod().rate("gpu.peak", 1, gpus="-1")


def graduated(q: Decimal) -> Decimal:
    """P(q) of GRADUATED, by hand."""
    return 2 * q if q <= 10 else 20 + (q - 10)


readings = st.lists(st.tuples(st.integers(0, 743), st.integers(0, 15)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(readings)
def test_any_readings_charge_the_price_of_the_aggregate(events: list[tuple[int, int]]) -> None:
    # Whole hours, so every aggregate is exact; arrival order is the list's, times are random.
    period = StoredPeriod()
    totals: dict[str, Decimal] = {}
    for hours, value in events:
        for event_type, properties in (
            ("gpu.peak", {"gpus": str(value)}),
            ("user.active", {"user_id": f"u{value}"}),
            ("storage.gb", {"gb": str(value)}),
            ("gpu.instance", {"gpus": str(value)}),
            ("job.done", {"seconds": str(value - 7)}),
            ("session.concurrent", {"sessions": str(value)}),
        ):
            charge = period.rate(event_type, hours, **properties).result.charge
            totals[event_type] = totals.get(event_type, D(0)) + charge
    latest: dict[int, int] = {}
    for hours, value in events:
        latest[hours] = value  # the same time: the later arrival wins
    gauge = sorted(latest.items())
    area = sum(
        D(v) * ((gauge[i + 1][0] if i + 1 < len(gauge) else 744) - h)
        for i, (h, v) in enumerate(gauge)
    )
    jobs = D(0)
    for _, value in events:
        jobs = max(jobs + value - 7, D(0))
    assert totals == {
        "gpu.peak": graduated(D(max(v for _, v in events))),
        "user.active": graduated(D(len({v for _, v in events}))),
        "storage.gb": graduated(D(gauge[-1][1])),
        "gpu.instance": graduated(D(area)),
        "job.done": graduated(jobs),
        # each day's peak priced on its own, the days added up
        "session.concurrent": sum(
            (
                graduated(D(max(v for h, v in events if h // 24 == day)))
                for day in {h // 24 for h, _ in events}
            ),
            D(0),
        ),
    }


def test_a_correction_of_an_invoiced_period_goes_to_the_next_invoice() -> None:
    # January was invoiced with 8 job-seconds (P = 16); corrections of it arrive in February.
    january, february = (
        (START, datetime(2025, 2, 1, tzinfo=UTC)),
        (
            datetime(2025, 2, 1, tzinfo=UTC),
            datetime(2025, 3, 1, tzinfo=UTC),
        ),
    )
    invoiced = PeriodLedger(D(16), "closed", {("jobs", ()): Counter(D(8), D(16), 1)})
    open_period = PeriodLedger(D(0), "open")
    cell = ("jobs", ("correction of 2025-01-01T00:00:00+00:00",))
    charges = []
    for n, seconds in enumerate(("-3", "-9", "-1")):
        event = UsageEvent("job.done", START + timedelta(days=3), {"seconds": seconds})
        prepared = prepare_event(
            catalog(),
            [a_contract()],
            "tnt_1",
            f"c{n}",
            "fp",
            event,
            datetime(2025, 2, 2, tzinfo=UTC),
        )
        assert prepared.period == january
        moved = replace(prepared, period=february, invoiced_period=january)
        rated = rate_prepared(moved, {}, open_period, invoiced)
        charges.append(rated.result.charge)
        [line] = rated.result.lines
        assert line.meter is not None and line.meter.note.startswith("correction of 2025-01-01")
    # 8 → 5: P(5) − P(8) = 10 − 16; 5 → 0 (−9 limited to −5): −10; at 0 already: 0
    assert charges == [D(-6), D(-10), D(0)]
    assert open_period.counters == {cell: Counter(D(-8), D(-16), 3)}
    assert invoiced.counters[("jobs", ())] == Counter(D(8), D(16), 1)  # the invoice stands
