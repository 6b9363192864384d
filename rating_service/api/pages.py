"""Pages of a List* answer: `page_size`, and an opaque `page_token` saying where to resume.

Every listing has a total order on a key (a position: a short tuple of strings and integers,
e.g. (customer id, term start, contract id)), and a page resumes strictly after the position of
the previous page's last item (keyset pagination): rows added or removed meanwhile never make a
page repeat or skip what stayed. A token is that position as JSON in URL-safe base64; a token
this server did not give is refused with INVALID_ARGUMENT on `page_token`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from rating_service.core.errors import ViolationCollector

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

Position = tuple[str | int | datetime, ...]
"""Where an item sits in its listing's order (a datetime is written as ISO 8601)."""

Shape = tuple[type[str] | type[int] | type[datetime], ...]
"""The type of each part of a listing's positions."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    """A page asked for: how many items, and the position after which it starts."""

    size: int
    after: Position | None
    """None: the first page."""

    @classmethod
    def read(
        cls,
        page_size: int,
        page_token: str,
        shape: Shape,
        violations: ViolationCollector,
        *,
        size_field: str = "page_size",
        default_size: int = DEFAULT_PAGE_SIZE,
        max_size: int = MAX_PAGE_SIZE,
    ) -> Page:
        """The page a request asks for; its position must have the listing's `shape`."""
        if not 0 <= page_size <= max_size:
            violations.add(size_field, f"must be 0 (meaning {default_size}) to {max_size}")
        return cls(page_size or default_size, _position(page_token, shape, violations))

    @property
    def limit(self) -> int:
        """Items to fetch: one more than the page holds tells whether another page follows."""
        return self.size + 1

    def cut(self, found: Sequence[T], position: Callable[[T], Position]) -> tuple[list[T], str]:
        """The page out of `found` (up to `limit` items past `after`), and the next page's token."""
        page = list(found[: self.size])
        more = len(found) > self.size
        return page, page_token(position(page[-1])) if more and page else ""

    def of_sorted(
        self, items: Sequence[T], position: Callable[[T], Position]
    ) -> tuple[list[T], str]:
        """The page of a listing held whole in memory, sorted by `position`."""
        after = self.after
        found = [i for i in items if after is None or position(i) > after][: self.limit]
        return self.cut(found, position)


def page_token(position: Position) -> str:
    """The opaque token naming a position."""
    parts = [p.isoformat() if isinstance(p, datetime) else p for p in position]
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


def _position(token: str, shape: Shape, violations: ViolationCollector) -> Position | None:
    if not token:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(values, list) or len(values) != len(shape):
            raise ValueError(token)
        return tuple(_part(value, kind) for value, kind in zip(values, shape, strict=True))
    except (ValueError, binascii.Error):
        violations.add("page_token", "is not a token this server gave: list again without one")
        return None


def _part(value: object, kind: type[str] | type[int] | type[datetime]) -> str | int | datetime:
    """One part of a position as its listing's shape types it; ValueError if it is not."""
    if kind is datetime and isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.utcoffset() is not None:
            return moment
    elif type(value) is kind:  # exactly: a bool is an int to Python, never a position's part
        assert isinstance(value, str | int)
        return value
    raise ValueError(value)
