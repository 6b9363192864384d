"""The LISTEN/NOTIFY cache: kept only while live, bounded, the least recently used out first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from rating_service.store.pg_notify import NotifiedCache


class Loads:
    """A loader that counts what it was asked to load."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def of(self, key: str) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            self.asked.append(key)
            return f"value of {key}"

        return load


async def test_a_full_cache_drops_the_least_recently_used_value() -> None:
    loads = Loads()
    cache: NotifiedCache[str, str] = NotifiedCache(lambda: True, max_entries=2)
    await cache.get("a", loads.of("a"))
    await cache.get("b", loads.of("b"))
    await cache.get("a", loads.of("a"))  # a is now the most recent
    await cache.get("c", loads.of("c"))  # full: b goes, not a
    assert len(cache) == 2
    await cache.get("a", loads.of("a"))
    await cache.get("b", loads.of("b"))
    assert loads.asked == ["a", "b", "c", "b"]


async def test_without_a_bound_every_value_is_kept() -> None:
    loads = Loads()
    cache: NotifiedCache[str, str] = NotifiedCache(lambda: True)
    for key in "abcdef":
        await cache.get(key, loads.of(key))
    assert len(cache) == 6


async def test_nothing_is_kept_while_the_change_feed_is_not_live() -> None:
    loads = Loads()
    cache: NotifiedCache[str, str] = NotifiedCache(lambda: False, max_entries=10)
    assert await cache.get("a", loads.of("a")) == "value of a"
    await cache.get("a", loads.of("a"))
    assert (len(cache), loads.asked) == (0, ["a", "a"])
