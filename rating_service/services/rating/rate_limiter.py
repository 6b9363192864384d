"""Contracts' rate limits, enforced on the hot path from memory the host's processes share.

The buckets (`rating_service.core.contracts.rate_limits`) live in a table of fixed slots in
one memory-mapped file. `rating serve --processes N` creates it and names it to each server
process in RATING_RATE_LIMIT_BUCKETS, so the N processes on a port enforce one limit together,
not N: an event locks the file (an fcntl record lock, a few microseconds), refills and takes
its buckets, and unlocks. No database round trip. A process serving alone maps private memory
instead and takes no lock (its event loop is its only user).

Limits hold per host: several hosts behind a load balancer each admit a contract's whole
limit. Deployments that need one limit across hosts divide it (a limit of L on H hosts: L/H
each) until a shared counter is worth its round trip (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

from rating_service.core.auth import Caller
from rating_service.core.contracts.rate_limits import (
    MICRO,
    Bucket,
    RateLimit,
    rate_limited,
    refilled,
    wait_for,
)
from rating_service.core.rating.rate import PreparedEvent

BUCKETS_FILE = "RATING_RATE_LIMIT_BUCKETS"
"""The environment variable naming the shared buckets file (set by the supervisor)."""

SLOTS = 1 << 16
"""Buckets the table holds: every limit of every contract a host rates, with room to spare."""

PROBES = 16
"""Slots tried for a key before its bucket takes the first one (and starts full)."""

_SLOT = struct.Struct("=16sqq")  # key digest, micro-tokens, nanoseconds (monotonic)
_EMPTY = bytes(16)


class BucketTable:
    """Token buckets by key, in a memory map; shared through a file, or private."""

    def __init__(self, path: str | None = None) -> None:
        size = SLOTS * _SLOT.size
        self._fd: int | None = None
        if path:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # zeros: every slot empty
            self._fd = fd
            self._map = mmap.mmap(fd, size)
        else:
            self._map = mmap.mmap(-1, size)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the table against the host's other processes (nothing to hold when private)."""
        if self._fd is None:
            yield
            return
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def find(self, key: bytes) -> tuple[int, Bucket | None]:
        """The slot of a key and its bucket (None: not seen yet). Call while locked."""
        start = int.from_bytes(key[:8], "little") % SLOTS
        for probe in range(PROBES):
            slot = (start + probe) % SLOTS
            found, tokens, at_ns = _SLOT.unpack_from(self._map, slot * _SLOT.size)
            if found == key:
                return slot, Bucket(tokens, at_ns)
            if found == _EMPTY:
                return slot, None
        return start, None

    def put(self, slot: int, key: bytes, bucket: Bucket) -> None:
        """Store a bucket in its slot. Call while locked."""
        _SLOT.pack_into(self._map, slot * _SLOT.size, key, bucket.tokens, bucket.at_ns)

    def close(self) -> None:
        """Unmap the table (and close the shared file)."""
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)


class RateLimiter:
    """Admits an event when every rate limit of its contract covering it has the tokens."""

    def __init__(self, table: BucketTable, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._table = table
        self._clock_ns = clock_ns
        self._keys: dict[tuple[str, str, RateLimit], bytes] = {}

    @classmethod
    def from_environment(cls) -> RateLimiter:
        """Shared with the host's other server processes when the supervisor named a file."""
        return cls(BucketTable(os.environ.get(BUCKETS_FILE) or None))

    def admit_caller(self, caller: Caller, events: int = 1) -> None:
        """Take `events` requests from the caller's key's own limit, or refuse them all."""
        limit = caller.rate_limit
        if limit is None:
            return
        key = self._key(caller.tenant_id, f"key:{caller.key_id}", limit)
        cost = events * MICRO
        with self._table.locked():
            slot, stored = self._table.find(key)
            bucket = refilled(limit, stored, self._clock_ns())
            if bucket.tokens < cost:
                refused = [
                    (f"api_keys/{caller.key_id}/rate_limit", limit, wait_for(limit, bucket, cost))
                ]
                raise rate_limited(f"API key {caller.key_id}", refused, {"key_id": caller.key_id})
            self._table.put(slot, key, Bucket(bucket.tokens - cost, bucket.at_ns))

    def admit(self, prepared: PreparedEvent) -> None:
        """Take the event's tokens from each of its limits, or refuse it (ResourceExhausted).

        All or nothing: a refused event takes no token from any limit.
        """
        contract = prepared.contract
        if not contract.rate_limits:
            return
        quantities = {m.product.key: (m.quantity, m.product.tags) for m in prepared.measured}
        costs = [(limit, limit.cost(quantities)) for limit in contract.rate_limits]
        costs = [(limit, cost) for limit, cost in costs if cost]
        if not costs:
            return
        keys = [self._key(prepared.tenant_id, contract.contract_id, limit) for limit, _ in costs]
        with self._table.locked():
            now = self._clock_ns()
            taken: list[tuple[int, bytes, Bucket]] = []
            refused: list[tuple[str, RateLimit, timedelta]] = []
            for (limit, cost), key in zip(costs, keys, strict=True):
                slot, stored = self._table.find(key)
                bucket = refilled(limit, stored, now)
                if bucket.tokens < cost:
                    subject = f"contracts/{contract.contract_id}/rate_limits/{limit.limit_id}"
                    refused.append((subject, limit, wait_for(limit, bucket, cost)))
                else:
                    taken.append((slot, key, Bucket(bucket.tokens - cost, bucket.at_ns)))
            if refused:
                names = ", ".join(limit.limit_id for _, limit, _ in refused)
                raise rate_limited(
                    f"contract {contract.contract_id!r}",
                    refused,
                    {"contract_id": contract.contract_id, "limit_ids": names},
                )
            for slot, key, bucket in taken:
                self._table.put(slot, key, bucket)

    def _key(self, tenant_id: str, contract_id: str, limit: RateLimit) -> bytes:
        found = self._keys.get((tenant_id, contract_id, limit))
        if found is None:
            if len(self._keys) >= SLOTS:
                self._keys.clear()  # a bounded cache: keys are cheap to make again
            found = self._keys[(tenant_id, contract_id, limit)] = _key(
                tenant_id, contract_id, limit
            )
        return found


def _key(tenant_id: str, contract_id: str, limit: RateLimit) -> bytes:
    """A limit's bucket key: a change of the limit's terms starts a new, full bucket."""
    text = "\x1f".join(
        (
            tenant_id,
            contract_id,
            limit.limit_id,
            str(limit.limit),
            str(limit.per),
            str(limit.unit),
            str(limit.burst),
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
