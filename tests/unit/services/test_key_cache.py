"""The API-key cache: bounded, least recently used out first (one at a time), each read trusted
for the TTL only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rating_service.core.auth import ApiKey, Role
from rating_service.services.auth import KeyCache


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def api_key(key_id: str, revoked: bool = False) -> ApiKey:
    """A stored key as the tenant store returns it."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return ApiKey(key_id, "ten_1", Role.RATER, key_id, b"hash", at, at if revoked else None)


Step = tuple[str, str, float, bool | None]
"""(put | get | discard, key id, at time, for get: whether it is a hit)."""

CASES: list[tuple[str, int, float, list[Step]]] = [
    (
        "full: only the least recently used goes, the rest stay",
        3,
        5.0,
        [
            ("put", "a", 0, None),
            ("put", "b", 0, None),
            ("put", "c", 0, None),
            ("put", "d", 0, None),  # 4 > 3: a goes, alone
            ("get", "a", 0, False),
            ("get", "b", 0, True),
            ("get", "c", 0, True),
            ("get", "d", 0, True),
        ],
    ),
    (
        "a hit makes a key most recently used: the next eviction takes another",
        2,
        5.0,
        [
            ("put", "a", 0, None),
            ("put", "b", 0, None),
            ("get", "a", 1, True),  # order now b, a
            ("put", "c", 1, None),  # b goes
            ("get", "b", 1, False),
            ("get", "a", 1, True),
            ("get", "c", 1, True),
        ],
    ),
    (
        "putting a key again refreshes it in the order too",
        2,
        5.0,
        [
            ("put", "a", 0, None),
            ("put", "b", 0, None),
            ("put", "a", 0, None),  # order now b, a
            ("put", "c", 0, None),
            ("get", "a", 0, True),
            ("get", "b", 0, False),
        ],
    ),
    (
        "trusted until the TTL from its read, not from its last hit",
        10,
        5.0,
        [
            ("put", "a", 0, None),
            ("get", "a", 4.999, True),
            ("get", "a", 5.0, False),  # 0 + 5: expired, dropped
            ("get", "a", 5.0, False),
            ("put", "a", 5.0, None),  # read again: trusted until 10
            ("get", "a", 9.9, True),
            ("get", "a", 10.0, False),
        ],
    ),
    (
        "each entry has its own expiry",
        10,
        5.0,
        [
            ("put", "a", 0, None),
            ("put", "b", 3, None),
            ("get", "a", 5, False),
            ("get", "b", 5, True),
            ("get", "b", 8, False),
        ],
    ),
    (
        "a TTL of zero keeps nothing: every call reads the store",
        10,
        0.0,
        [("put", "a", 0, None), ("get", "a", 0, False)],
    ),
    (
        "discarded (revoked on this replica): gone at once",
        10,
        5.0,
        [("put", "a", 0, None), ("discard", "a", 1, None), ("get", "a", 1, False)],
    ),
]


@pytest.mark.parametrize(
    ("case", "capacity", "ttl", "steps"), CASES, ids=[case for case, *_ in CASES]
)
def test_key_cache(case: str, capacity: int, ttl: float, steps: list[Step]) -> None:
    clock = Clock()
    cache = KeyCache(capacity, ttl, clock)
    for n, (operation, key_id, at, hit) in enumerate(steps):
        clock.now = at
        if operation == "put":
            cache.put(key_id, api_key(key_id))
        elif operation == "discard":
            cache.discard(key_id)
        else:
            got = cache.get(key_id)
            assert (got is not None) is hit, f"step {n}: get {key_id} at {at}"
            assert got is None or (got.key is not None and got.key.key_id == key_id)
        assert len(cache) <= capacity


def test_a_key_read_as_revoked_or_unknown_is_remembered_as_such() -> None:
    cache = KeyCache(10, 5.0, Clock())
    cache.put("gone", None)
    cache.put("old", api_key("old", revoked=True))
    unknown, revoked = cache.get("gone"), cache.get("old")
    assert unknown is not None and unknown.key is None
    assert revoked is not None and revoked.key is not None and not revoked.key.active


def test_many_distinct_keys_never_empty_the_cache() -> None:
    # The old cache cleared itself at 10,000 keys: every caller then went to the database.
    cache = KeyCache(100, 60.0, Clock())
    for n in range(1_000):
        cache.put(f"k{n}", api_key(f"k{n}"))
        assert len(cache) == min(n + 1, 100)
    assert all(cache.get(f"k{n}") is not None for n in range(900, 1_000))
    assert cache.get("k899") is None


def test_a_cache_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeyCache(0, 5.0)
