"""The demo run: opens the customers, then drives traffic, watchers, operator and screen."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from rating_client import RatingClient
from rating_client.gen.rating.v1 import admin_pb2
from rating_service.cli.demo.accounts import open_accounts
from rating_service.cli.demo.feed import NotificationReceiver, listen, take_notification
from rating_service.cli.demo.plan import ACTOR, DemoPlan
from rating_service.cli.demo.replay import Operator, fix_failed_invoice
from rating_service.cli.demo.state import DemoState
from rating_service.cli.demo.terminal import Screen
from rating_service.cli.demo.traffic import SERVICES, drive
from rating_service.cli.demo.watch import watch_balances, watch_invoices
from rating_service.runtime.bootstrap import bootstrap
from rating_service.runtime.temporal import connect_temporal
from rating_service.settings import Settings


class Demo:
    """Opens the demo customers, drives the services' traffic, watches, replays, and draws."""

    def __init__(
        self,
        settings: Settings,
        target: str,
        api_key: str,
        plan: DemoPlan | None = None,
        *,
        banner: str = "",
        out: TextIO = sys.stdout,
        interactive: bool | None = None,
    ) -> None:
        if not settings.database_url or not settings.temporal_address:
            raise ValueError("the demo needs the stack's database URL and Temporal address")
        self._settings = settings
        self._target = target
        self._api_key = api_key
        # Fresh ids on every run, so a second demo on the same data starts clean.
        self._run_id = datetime.now(UTC).strftime("%m%d-%H%M%S")
        self.state = DemoState(plan or DemoPlan(), time.monotonic(), banner)
        self._screen = Screen(self.state, out, out.isatty() if interactive is None else interactive)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the demo until `stop` is set; a loop that fails ends it with its error."""
        receiver = NotificationReceiver(self._on_notification)
        try:
            async with (
                bootstrap(self._settings) as built,
                RatingClient(self._target, self._api_key, timeout_seconds=10) as client,
            ):
                who = await client.call(client.admin.WhoAmI, admin_pb2.WhoAmIRequest())
                tenant_id = who.tenant.tenant_id
                temporal = await connect_temporal(self._settings)
                endpoint_id = await listen(built.webhooks, tenant_id, receiver)
                try:
                    await open_accounts(client, self.state, self._run_id, self._note)
                    operator = Operator(
                        tenant_id, built.contract_admin, temporal, built.invoice_replays(temporal)
                    )
                    await self._run_loops(client, operator, stop)
                finally:
                    # The next run listens elsewhere: nothing should be sent here any more.
                    await built.webhooks.disable_endpoint(tenant_id, endpoint_id, ACTOR)
        finally:
            await receiver.close()

    async def _run_loops(
        self, client: RatingClient, operator: Operator, stop: asyncio.Event
    ) -> None:
        """The services, the watchers, the operator and the screen, until `stop` or a failure."""
        state = self.state
        loops = [
            *(drive(client, profile, state, self._run_id) for profile in SERVICES),
            watch_balances(client, state),
            watch_invoices(client, state, self._note),
            fix_failed_invoice(client, operator, state, self._note),
            self._screen.draw(),
        ]
        tasks = [asyncio.create_task(loop) for loop in loops]
        stopped = asyncio.create_task(stop.wait())
        running = {*tasks, stopped}
        try:
            # The operator's work ends once done; the demo goes on until stopped or broken.
            while stopped in running:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                if any(not task.cancelled() and task.exception() for task in done):
                    break
        finally:
            for task in [*tasks, stopped]:
                task.cancel()
            await asyncio.gather(*tasks, stopped, return_exceptions=True)
            self._screen.draw_last()
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    def _on_notification(self, topic: str, data: dict[str, Any]) -> None:
        take_notification(self.state, topic, data, self._note)

    def _note(self, kind: str, text: str) -> None:
        self._screen.show_event(self.state.note(time.monotonic(), kind, text))


async def run_demo(
    settings: Settings, target: str, api_key: str, stop: asyncio.Event, banner: str = ""
) -> None:
    """`rating dev --demo`: run the demo against the stack at `target` until `stop` is set."""
    await Demo(settings, target, api_key, banner=banner).run(stop)
