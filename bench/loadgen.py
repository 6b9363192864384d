"""A multi-process gRPC load generator: closed loop at fixed concurrency, open loop at a fixed rate.

Each worker is a spawned process with its own asyncio loop and grpc.aio channel(s), so the client
side is not held to one core by the GIL. A worker's calls go over `connections` TCP connections:
a server of several processes on one port (SO_REUSEPORT) spreads connections, not calls, so
one connection would reach one of its processes only.

What to call is a picklable *request factory*: it builds (method path, request message) from
the worker number and the call's index in that worker, so a scenario can spread calls over
contracts, make event ids unique, and so on.

Closed loop: every in-flight slot sends its next call as soon as the previous one answers.
Streams (a bidirectional method, `stream_window` > 0): each slot is one stream that keeps up to
`stream_window` requests unanswered, sending the next as soon as an answer frees room; every
answer counts as one completed call, its latency from the request's send.
Open loop: calls leave on a fixed schedule whatever the answers, and latency is measured from the
*scheduled* send time, so a server that stalls is charged for the whole queue it causes (no
coordinated omission). A call due while the in-flight cap is reached is not sent and is counted as
missed; one sent more than LATE_SECONDS after its time is counted as late (a load generator short
of CPU shows up there, not as a hidden gap). Calls finishing (closed) or scheduled (open) during
the warm-up are left out of the figures.

Latencies go into fixed 10 µs buckets, merged exactly across processes by adding counts.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import importlib
import itertools
import math
import multiprocessing
import queue
import random
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from google.protobuf.message import Message
from grpc import aio

BUCKET_SECONDS = 0.000_01
"""Width of one latency bucket: 10 µs, ten times finer than the 0.1 ms the report shows."""

LATE_SECONDS = 0.005
"""Open loop: a call leaving this long after its scheduled time is counted as late."""

NOT_READY = -1
"""Sent on the ready queue by a worker that failed, instead of its number."""

Metadata = tuple[tuple[str, str], ...]


class RequestFactory(Protocol):
    """Builds the call number `index` of worker `worker`; must be picklable (it is sent to it).

    A factory may also have `answer_code(raw: bytes) -> str`: the status code name an answer
    that came back OK carries inside it (a batch item's or a streamed event's error), "OK" if
    none; such answers count as errors.
    """

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """(full method path, e.g. "/rating.v1.BenchService/Noop", request message)."""
        ...


@dataclass(frozen=True)
class FunctionFactory:
    """A request factory named by a module-level function: `fn(worker, index, *args)`."""

    function: str
    """"package.module:function", imported in the worker."""
    args: tuple[Any, ...] = ()

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """Call the named function."""
        module, _, name = self.function.partition(":")
        built: tuple[str, Message] = getattr(importlib.import_module(module), name)(
            worker, index, *self.args
        )
        return built


@dataclass
class LatencyHistogram:
    """Latencies counted in fixed 10 µs buckets (sparse), plus the exact maximum."""

    counts: dict[int, int] = field(default_factory=dict)
    max_seconds: float = 0.0

    def record(self, seconds: float) -> None:
        """Count one latency."""
        bucket = int(seconds / BUCKET_SECONDS) if seconds > 0 else 0
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        if seconds > self.max_seconds:
            self.max_seconds = seconds

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's counts (exact: buckets are the same everywhere)."""
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.max_seconds = max(self.max_seconds, other.max_seconds)

    @property
    def count(self) -> int:
        """Latencies recorded."""
        return sum(self.counts.values())

    def percentile_ms(self, percent: float) -> float:
        """Nearest-rank percentile in ms, as the upper edge of its bucket (never above the max)."""
        total = self.count
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(percent / 100 * total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min((bucket + 1) * BUCKET_SECONDS, self.max_seconds) * 1000
        return self.max_seconds * 1000


@dataclass(frozen=True)
class LoadSpec:
    """One run: what to call, where, how hard and for how long."""

    target: str
    """host:port of the server."""
    factory: RequestFactory
    metadata: Metadata
    mode: Literal["closed", "open"]
    concurrency: int
    """Closed loop: calls in flight in total. Open loop: the cap on calls in flight in total."""
    rate: float = 0.0
    """Open loop: calls per second in total."""
    duration_seconds: float = 10.0
    warmup_seconds: float = 2.0
    processes: int = 1
    timeout_seconds: float = 10.0
    """Deadline of each call; a call past it counts as a DEADLINE_EXCEEDED error."""
    connections: int = 1
    """TCP connections per worker, each call on the next one in turn."""
    stream_window: int = 0
    """A streaming method: requests unanswered per stream (`concurrency` is then streams in
    total); 0 for unary calls."""

    def __post_init__(self) -> None:
        if self.processes < 1 or self.concurrency < 1 or self.connections < 1:
            raise ValueError("processes, concurrency and connections must be at least 1")
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("an open-loop run needs a rate above 0")
        if self.stream_window and self.mode != "closed":
            raise ValueError("streams run closed loop only")

    @property
    def label(self) -> str:
        """`closed c=64`, `streams 4×256` or `open r=1500/s`."""
        if self.stream_window:
            return f"streams {self.concurrency}×{self.stream_window}"
        if self.mode == "closed":
            return f"closed c={self.concurrency}"
        return f"open r={self.rate:.0f}/s"


@dataclass
class WorkerResult:
    """What one worker measured inside the measurement window."""

    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    missed: int = 0
    late: int = 0
    failure: str | None = None
    """A traceback when the worker itself broke (not a failed call)."""


@dataclass
class LoadResult:
    """A run's figures, merged across workers."""

    spec: LoadSpec
    histogram: LatencyHistogram
    completed: int
    errors: dict[str, int]
    missed: int
    """Open loop: calls not sent because the in-flight cap was reached."""
    late: int
    """Open loop: calls sent more than LATE_SECONDS behind their schedule."""

    @property
    def error_count(self) -> int:
        """Calls that answered with a status other than OK."""
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        """Successful calls per second of the measurement window."""
        return self.completed / self.spec.duration_seconds

    @property
    def p50_ms(self) -> float:
        """Median latency (OK calls), ms."""
        return self.histogram.percentile_ms(50)

    @property
    def p90_ms(self) -> float:
        """90th percentile latency, ms."""
        return self.histogram.percentile_ms(90)

    @property
    def p99_ms(self) -> float:
        """99th percentile latency, ms."""
        return self.histogram.percentile_ms(99)

    @property
    def max_ms(self) -> float:
        """Largest latency, ms."""
        return self.histogram.max_seconds * 1000


def merge_results(spec: LoadSpec, parts: Sequence[WorkerResult]) -> LoadResult:
    """Add up the workers' results."""
    histogram = LatencyHistogram()
    errors: dict[str, int] = {}
    for part in parts:
        histogram.merge(part.histogram)
        for code, count in part.errors.items():
            errors[code] = errors.get(code, 0) + count
    return LoadResult(
        spec,
        histogram,
        sum(p.completed for p in parts),
        dict(sorted(errors.items())),
        sum(p.missed for p in parts),
        sum(p.late for p in parts),
    )


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` split into `parts` integers that differ by at most one, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def scheduled_offset(index: int, rate: float, worker: int, processes: int) -> float:
    """Seconds after the start at which worker `worker` sends its call `index` (open loop).

    Globally the calls are k / rate for k = 0, 1, 2, …; worker w takes every k ≡ w (mod
    processes), so each worker runs at rate / processes and together they stay evenly spaced.
    """
    return (index * processes + worker) / rate


def scheduled_count(seconds: float, rate: float, worker: int, processes: int) -> int:
    """How many calls worker `worker` has scheduled strictly before `seconds` (open loop)."""
    # Calls k·P + w < seconds·rate, k ≥ 0.
    slots = seconds * rate - worker
    return max(0, math.ceil(slots / processes))


class ZipfSampler:
    """Draws 0 … n−1 with P(k) ∝ 1 / (k + 1)^s: the CDF is built once, each draw is a bisect."""

    def __init__(self, n: int, s: float, seed: int | None = None) -> None:
        if n < 1 or s <= 0:
            raise ValueError("a Zipf sampler needs n ≥ 1 and s > 0")
        self.n = n
        self.s = s
        weights = (1 / float((k + 1) ** s) for k in range(n))
        self._cdf: list[float] = list(itertools.accumulate(weights))
        self._random = random.Random(seed)

    def probability(self, k: int) -> float:
        """P(k) of one draw."""
        previous = self._cdf[k - 1] if k else 0.0
        return (self._cdf[k] - previous) / self._cdf[-1]

    def sample(self) -> int:
        """One draw."""
        # min() guards the float edge where random() × total lands a hair above the last entry.
        return min(bisect.bisect_left(self._cdf, self._random.random() * self._cdf[-1]), self.n - 1)


def run_load(spec: LoadSpec, progress: Callable[[float], None] | None = None) -> LoadResult:
    """Run `spec` on `spec.processes` spawned workers; `progress(elapsed)` is called every ~5 s."""
    context = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue[int] = context.Queue()
    start: multiprocessing.Queue[float] = context.Queue()
    results: multiprocessing.Queue[WorkerResult] = context.Queue()
    workers = [
        context.Process(
            target=_worker_main,
            args=(spec, w, ready, start, results),
            name=f"loadgen-{w}",
            daemon=True,
        )
        for w in range(spec.processes)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            if _get_alive(ready, workers, deadline=time.monotonic() + 60) == NOT_READY:
                failure = results.get(timeout=10).failure
                raise RuntimeError(f"a load-generator worker could not start:\n{failure}")
        # CLOCK_MONOTONIC is system-wide on Linux, so one start time serves every worker; the
        # margin lets each one receive it before it is due.
        start_at = time.monotonic() + 0.2
        for _ in workers:
            start.put(start_at)
        parts: list[WorkerResult] = []
        total = spec.warmup_seconds + spec.duration_seconds
        next_progress = start_at + 5
        while len(parts) < len(workers):
            try:
                parts.append(results.get(timeout=0.5))
            except queue.Empty:
                _require_alive(workers)
            now = time.monotonic()
            if progress is not None and now >= next_progress and now - start_at < total:
                progress(now - start_at)
                next_progress += 5
        for worker in workers:
            worker.join(timeout=10)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
    broken = [p.failure for p in parts if p.failure]
    if broken:
        raise RuntimeError(f"a load-generator worker failed:\n{broken[0]}")
    return merge_results(spec, parts)


def _get_alive(ready: multiprocessing.Queue[int], workers: list[Any], deadline: float) -> int:
    while time.monotonic() < deadline:
        try:
            return ready.get(timeout=0.5)
        except queue.Empty:
            _require_alive(workers)
    raise RuntimeError("load-generator workers did not connect within 60 s")


def _require_alive(workers: list[Any]) -> None:
    for worker in workers:
        if worker.exitcode not in (None, 0):
            raise RuntimeError(f"load-generator worker {worker.name} exited with {worker.exitcode}")


def _worker_main(
    spec: LoadSpec,
    worker: int,
    ready: multiprocessing.Queue[int],
    start: multiprocessing.Queue[float],
    results: multiprocessing.Queue[WorkerResult],
) -> None:
    try:
        result = asyncio.run(_worker(spec, worker, ready, start))
    except BaseException:
        result = WorkerResult(failure=traceback.format_exc())
        # Unblocks a parent still waiting for this worker to connect; ignored after that.
        ready.put(NOT_READY)
    results.put(result)


async def _worker(
    spec: LoadSpec,
    worker: int,
    ready: multiprocessing.Queue[int],
    start: multiprocessing.Queue[float],
) -> WorkerResult:
    # Channels of one process to one target share a connection unless each has its own pool.
    options = [("grpc.use_local_subchannel_pool", 1)] if spec.connections > 1 else []
    channels = [aio.insecure_channel(spec.target, options=options) for _ in range(spec.connections)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        caller = _Caller(spec, worker, channels)
        # Build one request before the clock starts so imports and caches are warm.
        spec.factory.build(worker, -1)
        # Everything alive now (modules, channel, stubs) lives for the whole run: frozen, it is
        # no longer traversed by the collector, whose full passes over it stalled this loop for
        # tens of ms and showed up as open-loop latency the server did not cause.
        gc.collect()
        gc.freeze()
        ready.put(worker)
        start_at = await asyncio.to_thread(start.get)
        if spec.mode == "closed":
            await caller.closed_loop(start_at)
        else:
            await caller.open_loop(start_at)
        return caller.result
    finally:
        await asyncio.gather(*(channel.close(None) for channel in channels))


class _Caller:
    """One worker's calls and what it measured of them."""

    def __init__(self, spec: LoadSpec, worker: int, channels: list[aio.Channel]) -> None:
        self.spec = spec
        self.worker = worker
        self.channels = channels
        self.result = WorkerResult()
        self._methods: dict[tuple[str, int], Any] = {}
        self._index = itertools.count()

    def _method(self, path: str, connection: int) -> Any:
        found = self._methods.get((path, connection))
        if found is None:
            # Answers stay serialized bytes: decoding them is work the server did not cause.
            found = self.channels[connection].unary_unary(
                path, request_serializer=_serialize, response_deserializer=None
            )
            self._methods[(path, connection)] = found
        return found

    async def _call(self) -> str:
        """Send the next call, on the next connection in turn; its status code name."""
        index = next(self._index)
        path, request = self.spec.factory.build(self.worker, index)
        try:
            answer = await self._method(path, index % len(self.channels))(
                request, metadata=self.spec.metadata, timeout=self.spec.timeout_seconds
            )
        except aio.AioRpcError as error:
            return str(error.code().name)
        return self._answer_code(answer)

    def _answer_code(self, answer: bytes) -> str:
        code: Callable[[bytes], str] | None = getattr(self.spec.factory, "answer_code", None)
        return "OK" if code is None else code(answer)

    def _count(self, code: str, latency: float) -> None:
        if code == "OK":
            self.result.completed += 1
            self.result.histogram.record(latency)
        else:
            self.result.errors[code] = self.result.errors.get(code, 0) + 1

    async def closed_loop(self, start_at: float) -> None:
        """Each slot sends its next call as soon as its previous one answers."""
        slots = split_evenly(self.spec.concurrency, self.spec.processes)[self.worker]
        measure_from = start_at + self.spec.warmup_seconds
        end = measure_from + self.spec.duration_seconds
        await _sleep_until(start_at)
        if self.spec.stream_window:
            await asyncio.gather(*(self._stream(measure_from, end, n) for n in range(slots)))
            return

        async def slot() -> None:
            while time.monotonic() < end:
                sent = time.monotonic()
                code = await self._call()
                done = time.monotonic()
                if measure_from <= done <= end:
                    self._count(code, done - sent)

        await asyncio.gather(*(slot() for _ in range(slots)))

    async def _stream(self, measure_from: float, end: float, slot: int) -> None:
        """One stream: up to the window unanswered, the next request sent as an answer comes."""
        path, _ = self.spec.factory.build(self.worker, -1)
        method = self.channels[slot % len(self.channels)].stream_stream(
            path, request_serializer=_serialize, response_deserializer=None
        )
        # No request iterator: requests are written as the window allows.
        call = method(metadata=self.spec.metadata, timeout=end - time.monotonic() + 30)  # type: ignore[call-arg]
        room = asyncio.Semaphore(self.spec.stream_window)
        sent_at: deque[float] = deque()

        async def send() -> None:
            await call.initial_metadata()  # the server has accepted the stream
            try:
                while time.monotonic() < end:
                    await room.acquire()
                    _, request = self.spec.factory.build(self.worker, next(self._index))
                    sent_at.append(time.monotonic())
                    await call.write(request)
                await call.done_writing()
            except (aio.AioRpcError, asyncio.InvalidStateError):
                return  # the stream ended; reading it says how

        sender = asyncio.create_task(send())
        try:
            async for answer in call:
                room.release()
                done = time.monotonic()
                sent = sent_at.popleft()
                if measure_from <= done <= end:
                    self._count(self._answer_code(answer), done - sent)
        except aio.AioRpcError as error:
            self.result.errors[error.code().name] = self.result.errors.get(error.code().name, 0) + 1
        finally:
            sender.cancel()

    async def open_loop(self, start_at: float) -> None:
        """Send on schedule whatever the answers; latency counts from the scheduled time."""
        spec = self.spec
        processes = spec.processes
        cap = max(1, split_evenly(spec.concurrency, processes)[self.worker])
        total = scheduled_count(
            spec.warmup_seconds + spec.duration_seconds, spec.rate, self.worker, processes
        )
        measure_from = start_at + spec.warmup_seconds
        in_flight: set[asyncio.Task[None]] = set()

        async def send(scheduled: float) -> None:
            lag = time.monotonic() - scheduled
            code = await self._call()
            if scheduled >= measure_from:
                self._count(code, time.monotonic() - scheduled)
                if lag > LATE_SECONDS:
                    self.result.late += 1

        index = 0
        while index < total:
            now = time.monotonic()
            # Every call already due leaves now, each timed from its own scheduled moment.
            while index < total:
                scheduled = start_at + scheduled_offset(index, spec.rate, self.worker, processes)
                if scheduled > now:
                    break
                index += 1
                if len(in_flight) >= cap:
                    if scheduled >= measure_from:
                        self.result.missed += 1
                    continue
                task = asyncio.create_task(send(scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if index < total:
                await _sleep_until(
                    start_at + scheduled_offset(index, spec.rate, self.worker, processes)
                )
        if in_flight:
            await asyncio.wait(in_flight)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
