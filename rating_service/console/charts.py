"""Charts drawn on the server as inline SVG: no script, no CDN, readable by screen readers.

Each chart carries a `<title>` and a text equivalent (the page's table beside it), so the
numbers are never only in the picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from html import escape

WIDTH = 320
HEIGHT = 120
PAD = 8


@dataclass(frozen=True)
class Bar:
    """One labelled bar: the value so far and, optionally, its forecast behind it."""

    label: str
    value: Decimal
    forecast: Decimal | None = None


def bars(title: str, rows: list[Bar]) -> str:
    """Horizontal bars, value in front of its forecast (lighter), one row per product."""
    if not rows:
        return ""
    row_height = 22
    height = PAD * 2 + row_height * len(rows)
    top = max(max(r.value, r.forecast or Decimal(0)) for r in rows) or Decimal(1)
    label_width = 110
    span = WIDTH - label_width - PAD * 2
    parts = [_open(title, WIDTH, height)]
    for index, row in enumerate(rows):
        y = PAD + index * row_height
        parts.append(
            f'<text x="{PAD}" y="{y + 15}" class="chart-label">{escape(row.label[:18])}</text>'
        )
        if row.forecast is not None and row.forecast > 0:
            w = _scale(row.forecast, top, span)
            parts.append(
                f'<rect x="{label_width}" y="{y + 3}" width="{w}" height="14" class="forecast"/>'
            )
        w = _scale(max(row.value, Decimal(0)), top, span)
        parts.append(f'<rect x="{label_width}" y="{y + 3}" width="{w}" height="14" class="value"/>')
    parts.append("</svg>")
    return "".join(parts)


def burn_down(
    title: str,
    original: Decimal,
    remaining: Decimal,
    start: datetime,
    now: datetime,
    end: datetime | None,
) -> str:
    """A pool's balance from its start to now, and its projection at the average rate so far.

    The line runs from the original amount at the start to the balance now; dashed, it goes on
    at the same average rate until the pool runs out or expires.
    """
    if original <= 0:
        return ""
    horizon = end if end is not None and end > now else None
    used = original - remaining
    elapsed = max((now - start).total_seconds(), 1.0)
    rate = float(used) / elapsed  # per second, for the picture only: money stays Decimal
    # No expiry: draw as far ahead as has passed, or to the run-out.
    horizon_seconds = elapsed * 2 if horizon is None else (horizon - start).total_seconds()
    run_out = elapsed + float(remaining) / rate if rate > 0 else None
    if run_out is not None:
        horizon_seconds = min(horizon_seconds, run_out) if horizon is not None else run_out
    horizon_seconds = max(horizon_seconds, elapsed)
    top = float(original)

    def point(seconds: float, balance: float) -> str:
        x = PAD + (WIDTH - 2 * PAD) * seconds / horizon_seconds
        y = PAD + (HEIGHT - 2 * PAD) * (1 - max(balance, 0.0) / top)
        return f"{x:.1f},{y:.1f}"

    end_balance = float(remaining) - rate * (horizon_seconds - elapsed)
    now_point = point(elapsed, float(remaining))
    return (
        _open(title, WIDTH, HEIGHT)
        + f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"'
        ' class="axis"/>'
        + f'<polyline points="{point(0, top)} {now_point}" class="value-line"/>'
        + f'<polyline points="{now_point} {point(horizon_seconds, end_balance)}"'
        ' class="forecast-line"/>'
        + f'<circle cx="{now_point.split(",")[0]}" cy="{now_point.split(",")[1]}" r="3"'
        ' class="now"/></svg>'
    )


def meter(title: str, value: Decimal, limit: Decimal, marks: list[Decimal]) -> str:
    """A gauge of spend against a cap, with a tick at each alert threshold."""
    if limit <= 0:
        return ""
    span = WIDTH - 2 * PAD
    filled = _scale(min(max(value, Decimal(0)), limit), limit, span)
    parts = [
        _open(title, WIDTH, 36),
        f'<rect x="{PAD}" y="8" width="{span}" height="16" class="track"/>',
        f'<rect x="{PAD}" y="8" width="{filled}" height="16" class="value"/>',
    ]
    for mark in marks:
        x = PAD + float(_scale(min(mark, limit), limit, span))
        parts.append(f'<line x1="{x}" y1="4" x2="{x}" y2="28" class="threshold"/>')
    parts.append("</svg>")
    return "".join(parts)


def _open(title: str, width: int, height: int) -> str:
    return (
        f'<svg role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' class="chart"><title>{escape(title)}</title>'
    )


def _scale(value: Decimal, top: Decimal, span: int) -> str:
    return f"{float(value / top) * span:.1f}"
