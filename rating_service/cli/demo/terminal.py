"""Showing the view: redrawn in place on a terminal, or as lines of a log."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import TextIO

from rating_service.cli.demo.state import DemoState, FeedEntry
from rating_service.cli.demo.view import feed_line, render_screen, status_line

HOME = "\x1b[H"
CLEAR_LINE = "\x1b[K"
CLEAR_BELOW = "\x1b[J"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"


class Screen:
    """Where the demo is shown: a view redrawn in place (a terminal), or lines (a log)."""

    def __init__(self, state: DemoState, out: TextIO, interactive: bool) -> None:
        self._state = state
        self._out = out
        self._interactive = interactive

    def show_event(self, entry: FeedEntry) -> None:
        """An event just added to the feed; a terminal shows it at the next redraw."""
        if not self._interactive:  # a log gets each event as a line of its own
            print(feed_line(entry), file=self._out, flush=True)

    async def draw(self) -> None:
        """Redraw the screen every refresh (a terminal), or print a status line now and then."""
        plan = self._state.plan
        next_status = time.monotonic() + plan.status_every_seconds
        if self._interactive:
            self._out.write(HIDE_CURSOR)
        while True:
            now = time.monotonic()
            if self._interactive:
                self._out.write(HOME + self._frame(now) + CLEAR_BELOW)
                self._out.flush()
            elif now >= next_status:
                print(status_line(self._state, now), file=self._out, flush=True)
                next_status = now + plan.status_every_seconds
            await asyncio.sleep(plan.refresh_seconds)

    def draw_last(self) -> None:
        """Leave the last view on the screen (a terminal) or the last status (a log)."""
        now = time.monotonic()
        if self._interactive:
            self._out.write(HOME + self._frame(now) + CLEAR_BELOW + SHOW_CURSOR)
        else:
            print(status_line(self._state, now), file=self._out)
        self._out.flush()

    def _frame(self, now: float) -> str:
        """The screen, each line cut to the terminal's width (a wrapped line would scroll it)."""
        width = shutil.get_terminal_size().columns
        screen = render_screen(self._state, now, width=width)
        return "".join(line[:width] + CLEAR_LINE + "\n" for line in screen)
