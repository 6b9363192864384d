"""The rating benchmark's scenarios: what each one sends, as request factories.

The factories are pickled to every load-generator process, which imports this module to
unpickle them, so it imports no more than they need.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from loadgen import RequestFactory, ZipfSampler

from rating_client.gen.rating.v1 import bench_pb2, catalog_pb2, rating_pb2

NOOP = "/rating.v1.BenchService/Noop"
NAIVE_DEBIT = "/rating.v1.BenchService/NaiveDebit"
QUOTE = "/rating.v1.CatalogService/Quote"
RATE_AND_DEBIT = "/rating.v1.RatingService/RateAndDebit"
BATCH_RATE_AND_DEBIT = "/rating.v1.RatingService/BatchRateAndDebit"
STREAM_RATE_AND_DEBIT = "/rating.v1.RatingService/StreamRateAndDebit"
CHECK_ENTITLEMENT = "/rating.v1.RatingService/CheckEntitlement"

AGGREGATIONS = ("hot-max", "hot-unique", "hot-latest", "hot-twa", "hot-window")
"""RateAndDebit on the hot contract of one event of each meter aggregation (bench catalog)."""
ALL_SCENARIOS = (
    "ceiling",
    "naive",
    "quote",
    "hot",
    "hot-limited",
    "entitlement",
    "zipf",
    "stream",
    "batch100",
    *AGGREGATIONS,
)
ON_THE_HOT_CONTRACT = frozenset({"hot", "stream", "batch100", "entitlement", *AGGREGATIONS})
EVENT_THROUGHPUT = frozenset({"stream", "batch100"})
"""Scenarios measured in events per second, closed loop only (no latency target applies)."""
BATCH_EVENTS = 100
STREAM_WINDOW = 256
"""Events unanswered per stream: the server's default window (RATING_STREAM_WINDOW)."""
ZIPF_EXPONENT = 1.1
PRODUCT_KEY = "llm-tokens"
DEBIT_AMOUNT = "0.00015"
"""What one usage event costs: 1,000 gpt-4o-mini input tokens at $0.15 per 1M."""
EVENT_PROPERTIES = {"tokens": "1000", "model": "gpt-4o-mini", "token_type": "input"}


@dataclass(frozen=True)
class NoopCall:
    """BenchService.Noop."""

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """The empty request."""
        return NOOP, bench_pb2.NoopRequest()


@dataclass(frozen=True)
class NaiveDebitCall:
    """BenchService.NaiveDebit of one pool, a new event id per call."""

    pool_id: str
    run: str = ""

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """A debit of one event's price."""
        return NAIVE_DEBIT, bench_pb2.NaiveDebitRequest(
            pool_id=self.pool_id, amount=DEBIT_AMOUNT, event_id=f"{self.run}-{worker}-{index}"
        )


@dataclass(frozen=True)
class CheckEntitlementCall:
    """RatingService.CheckEntitlement of the hot customer's metered feature (the example card's)."""

    customer_id: str

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """The same check each time: answered from the caches once warm."""
        return CHECK_ENTITLEMENT, rating_pb2.CheckEntitlementRequest(
            customer_id=self.customer_id, feature_key="hd-images"
        )


@dataclass(frozen=True)
class QuoteCall:
    """CatalogService.Quote of a realistic month: tokens, fine-tuning tiers, resolutions."""

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """The README's example quote."""
        return QUOTE, _quote_request()


@functools.cache
def _quote_request() -> catalog_pb2.QuoteRequest:
    # Built once per process: every call sends the same lines, and building them is load-
    # generator CPU taken from the server on a 2-core machine.
    line = catalog_pb2.UsageLine
    return catalog_pb2.QuoteRequest(
        rate_card_key="list",
        lines=[
            line(
                product_key=PRODUCT_KEY,
                quantity="1200000",
                dimensions={"model": "gpt-4o", "token_type": "input"},
            ),
            line(
                product_key=PRODUCT_KEY,
                quantity="300000",
                dimensions={"model": "gpt-4o", "token_type": "output"},
            ),
            line(product_key="fine-tuning", quantity="120"),
            line(product_key="support-resolutions", quantity="40"),
        ],
    )


@dataclass
class RateAndDebitCall:
    """RatingService.RateAndDebit of one LLM completion, for one of `customer_ids`.

    With one customer every event lands on the same contract (hot pool); with many and
    `zipf_exponent` set, the customer is drawn from a Zipf distribution over them.
    """

    customer_ids: tuple[str, ...]
    zipf_exponent: float | None = None
    run: str = ""
    _sampler: ZipfSampler | None = field(default=None, repr=False, compare=False)

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """A usage event with a unique id, stamped now."""
        customer = self.customer_ids[self._pick(worker)]
        return RATE_AND_DEBIT, rating_pb2.RateAndDebitRequest(
            event=_usage_event(f"{self.run}-{worker}-{index}", customer)
        )

    def _pick(self, worker: int) -> int:
        if self.zipf_exponent is None:
            return 0
        if self._sampler is None:
            # Built in the worker on first use (the CDF is not worth pickling); seeded per worker
            # so processes do not draw the same sequence.
            self._sampler = ZipfSampler(len(self.customer_ids), self.zipf_exponent, seed=worker)
        return self._sampler.sample()


@dataclass(frozen=True)
class BatchRateAndDebitCall:
    """RatingService.BatchRateAndDebit of `events` LLM completions on the hot contract."""

    customer_id: str
    events: int = BATCH_EVENTS
    run: str = ""

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """A batch of usage events with unique ids, stamped now."""
        ids = (f"{self.run}-{worker}-{index}-{n}" for n in range(self.events))
        return BATCH_RATE_AND_DEBIT, rating_pb2.BatchRateAndDebitRequest(
            events=[_usage_event(event_id, self.customer_id) for event_id in ids]
        )

    def answer_code(self, answer: bytes) -> str:
        """The first refused item's status code: the batch's events/s counts whole batches."""
        reply = rating_pb2.BatchRateAndDebitResponse.FromString(answer)
        for result in reply.results:
            if result.HasField("error"):
                return _code_name(result.error.code)
        return "OK"


@dataclass(frozen=True)
class StreamRateAndDebitCall:
    """RatingService.StreamRateAndDebit: one LLM completion per request, on the hot contract."""

    customer_id: str
    run: str = ""

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """One streamed usage event with a unique id, stamped now."""
        return STREAM_RATE_AND_DEBIT, rating_pb2.StreamRateAndDebitRequest(
            event=_usage_event(f"{self.run}-{worker}-{index}", self.customer_id)
        )

    def answer_code(self, answer: bytes) -> str:
        """The event's error code, or OK."""
        reply = rating_pb2.StreamRateAndDebitResponse.FromString(answer)
        return _code_name(reply.error.code) if reply.HasField("error") else "OK"


@dataclass(frozen=True)
class AggregatedEventCall:
    """RatingService.RateAndDebit on the hot contract of an event a meter aggregates.

    Values vary per call (a new distinct user most of the time, a gauge that moves), so each
    aggregation does its full work: an entry looked up and written for unique, latest and
    time-weighted meters, a window's counter for a windowed one.
    """

    customer_id: str
    scenario: str
    run: str = ""

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """One event of the scenario's meter, stamped now."""
        event_type, properties = AGGREGATED_EVENTS[self.scenario](worker, index)
        event = _usage_event(f"{self.run}-{worker}-{index}", self.customer_id)
        event.event_type = event_type
        event.properties.clear()
        event.properties.update(properties)
        return RATE_AND_DEBIT, rating_pb2.RateAndDebitRequest(event=event)


def _gauge(worker: int, index: int) -> str:
    return str((index * 7 + worker) % 97)


def _user(worker: int, index: int) -> str:
    return f"user-{worker}-{index % 50_000}"


AGGREGATED_EVENTS: dict[str, Callable[[int, int], tuple[str, dict[str, str]]]] = {
    "hot-max": lambda w, i: ("gpu.concurrency", {"gpus": _gauge(w, i)}),
    "hot-unique": lambda w, i: ("user.request", {"user_id": _user(w, i)}),
    "hot-latest": lambda w, i: ("storage.reading", {"gb": _gauge(w, i)}),
    "hot-twa": lambda w, i: ("gpu.instance", {"gpus": _gauge(w, i)}),
    "hot-window": lambda w, i: ("session.concurrency", {"sessions": _gauge(w, i)}),
}
"""What each aggregation scenario sends: the meters of rating_service/examples/meters.yaml."""


def _usage_event(event_id: str, customer_id: str) -> rating_pb2.UsageEvent:
    timestamp = Timestamp()
    timestamp.GetCurrentTime()
    return rating_pb2.UsageEvent(
        event_id=event_id,
        customer_id=customer_id,
        event_type="llm.completion",
        timestamp=timestamp,
        properties=EVENT_PROPERTIES,
    )


def _code_name(code: int) -> str:
    return _CODE_NAMES.get(code, str(code))


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclass(frozen=True)
class Prepared:
    """What the scenarios need from the prepared database."""

    tenant_id: str
    rater_token: str
    naive_pool_id: str
    hot_customers: tuple[str, ...]
    zipf_customers: tuple[str, ...]
    limited_customers: tuple[str, ...] = ()


def factories(prepared: Prepared) -> dict[str, RequestFactory]:
    """Each scenario's request factory."""
    return {
        "ceiling": NoopCall(),
        "naive": NaiveDebitCall(prepared.naive_pool_id),
        "quote": QuoteCall(),
        "hot": RateAndDebitCall(prepared.hot_customers),
        "hot-limited": RateAndDebitCall(prepared.limited_customers),
        "entitlement": CheckEntitlementCall(_first(prepared.hot_customers)),
        "zipf": RateAndDebitCall(prepared.zipf_customers, ZIPF_EXPONENT),
        "stream": StreamRateAndDebitCall(_first(prepared.hot_customers)),
        "batch100": BatchRateAndDebitCall(_first(prepared.hot_customers)),
        **{s: AggregatedEventCall(_first(prepared.hot_customers), s) for s in AGGREGATIONS},
    }


def events_per_call(scenario: str) -> int:
    """Usage events one call of the scenario rates (a streamed request is one)."""
    return BATCH_EVENTS if scenario == "batch100" else 1


def _first(customers: tuple[str, ...]) -> str:
    return customers[0] if customers else ""


def fresh(factory: RequestFactory) -> RequestFactory:
    """The factory with a new run tag, so event ids never repeat across runs."""
    if isinstance(
        factory,
        NaiveDebitCall
        | RateAndDebitCall
        | BatchRateAndDebitCall
        | StreamRateAndDebitCall
        | AggregatedEventCall,
    ):
        return replace(factory, run=secrets.token_hex(4))
    return factory
