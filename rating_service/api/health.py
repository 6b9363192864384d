"""Serving status: the standard health service, NOT_SERVING while the database does not answer."""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from rating_service.background import stop_task

log = logging.getLogger("rating.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealth:
    """Polls the database and reflects the answer on the health service for every service name."""

    def __init__(
        self,
        engine: AsyncEngine,
        servicer: HealthServicer,
        service_names: list[str],
        interval_seconds: float,
    ) -> None:
        self._engine = engine
        self._servicer = servicer
        self._names = ["", *service_names]
        self._interval = interval_seconds
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> bool:
        """Ask the database for `SELECT 1` within the interval; publish and return the outcome."""
        try:
            async with asyncio.timeout(max(self._interval, 1.0)):
                async with self._engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            serving = True
        except Exception as exc:
            if self._serving is not False:
                log.warning("database unreachable; NOT_SERVING", extra={"error": str(exc)})
            serving = False
        if serving != self._serving:
            if serving and self._serving is False:
                # As loud as the outage's warning, so a log filtered at WARNING shows its end.
                log.warning("database reachable again; SERVING")
            self._serving = serving
            for name in self._names:
                await self._servicer.set(name, SERVING if serving else NOT_SERVING)
        return serving

    async def _run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        """Start polling in the background."""
        self._task = asyncio.create_task(self._run(), name="database-health")

    async def stop(self) -> None:
        """Stop polling."""
        await stop_task(self._task)


async def probe(address: str, service: str = "", timeout_seconds: float = 3.0) -> str:
    """Ask a server's health service; the status name, or UNREACHABLE."""
    async with aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds
            )
        except aio.AioRpcError as exc:
            return "UNREACHABLE" if exc.code() == grpc.StatusCode.UNAVAILABLE else exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
