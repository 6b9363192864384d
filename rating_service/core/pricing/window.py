"""Windows of a billing period (UTC hours or days): a windowed meter prices each one apart."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum


class Window(StrEnum):
    """How long a window of a windowed meter is; windows are aligned to UTC."""

    HOUR = "hour"
    DAY = "day"

    def label(self, at: datetime) -> str:
        """The name of the window holding `at` (its start, e.g. `2026-12-03` or `…T14:00Z`)."""
        utc = at.astimezone(UTC)
        if self is Window.DAY:
            return utc.strftime("%Y-%m-%d")
        return utc.strftime("%Y-%m-%dT%H:00Z")
