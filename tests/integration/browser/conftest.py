"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and a console to drive.

Playwright's own browser download cannot work on these machines, so the tests use the
`chromium` on the PATH (`.ci/run` installs Debian's package) or RATING_CHROMIUM. A browser that
cannot start fails the test, saying why: nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from rating_service.console.app import ConsoleConfig
from rating_service.console.serve import RunningConsole, start_console
from rating_service.runtime.server import RunningServer

ROOT = Path(__file__).resolve().parents[3]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


def chromium_path() -> str:
    """The Chromium to drive, or a failure that says how to get one."""
    configured = os.environ.get("RATING_CHROMIUM")
    found = configured or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail(
            "no Chromium for the browser tests: install Debian's package"
            " (`apt-get install -y chromium`, as .ci/run does) or set RATING_CHROMIUM"
        )
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium."""
    executable = chromium_path()
    async with async_playwright() as playwright:
        try:
            launched = await playwright.chromium.launch(
                executable_path=executable,
                headless=True,
                args=["--no-sandbox", "--disable-dev-shm-usage"],
            )
        except Exception as error:
            pytest.fail(f"Chromium at {executable} did not start: {error}")
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page (its own cookies) that accepts downloads."""
    context: BrowserContext = await browser.new_context(
        accept_downloads=True, viewport={"width": 1200, "height": 900}
    )
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()


async def console_for(server: RunningServer) -> RunningConsole:
    """A console on a free port, calling the test's server and reading its metrics."""
    metrics = f"http://127.0.0.1:{server.metrics_port}/metrics" if server.metrics_port else ""
    return await start_console(
        ConsoleConfig(api_target=f"127.0.0.1:{server.port}", metrics_url=metrics),
        "127.0.0.1:0",
    )


@pytest.fixture
async def console(server: RunningServer) -> AsyncIterator[RunningConsole]:
    """The console of the test's server."""
    running = await console_for(server)
    try:
        yield running
    finally:
        await running.stop()


async def serious_accessibility_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page (axe vendored from node_modules)."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm install` (make node_modules/.installed)")
    await page.add_script_tag(content=AXE.read_text())
    results = await page.evaluate("async () => await axe.run(document)")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def screenshot_path(name: str) -> Path | None:
    """Where to save a README screenshot, when RATING_CONSOLE_SCREENSHOTS names a folder."""
    folder = os.environ.get("RATING_CONSOLE_SCREENSHOTS")
    return None if not folder else Path(folder) / name
