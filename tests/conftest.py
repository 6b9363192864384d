"""Fixtures: a real PostgreSQL and Temporal server per session, a fresh database per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from grpc import aio

from rating_service.core.auth import KEY_ROLES, Role, issue_key
from rating_service.core.encryption import new_key
from rating_service.core.portal import grant_portal, sign_portal_token
from rating_service.runtime.embedded import EmbeddedPostgres, TemporalDevServer, free_port
from rating_service.runtime.server import RunningServer, start_server
from rating_service.settings import Settings
from rating_service.store import migrations
from rating_service.store.database import create_engine, with_database
from rating_service.store.tenant import TenantStore

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

WEBHOOK_SECRET_KEYS = new_key("test")
"""The key tests' webhook signing secrets are sealed with (RATING_WEBHOOK_SECRET_KEYS)."""
PORTAL_SECRET = "portal-secret-of-the-test-servers-0123456789"
"""The test servers' RATING_PORTAL_SECRET: TenantKeys' portal links are signed with it."""
PORTAL_CUSTOMER = "e0"
"""The customer each tenant's test portal link opens (one of the fuzzed customer ids)."""
PORTAL_LINK = timedelta(hours=2)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An administrative URL of a real PostgreSQL: RATING_DATABASE_URL, or an embedded server."""
    configured = os.environ.get("RATING_DATABASE_URL")
    if configured:
        yield configured
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    yield server.start()
    server.stop()


async def _admin(postgres_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(with_database(postgres_url, "postgres"))


@pytest.fixture(scope="session")
async def template_database(postgres_url: str) -> AsyncIterator[str]:
    """A migrated database that each test's database is cloned from (cloning beats migrating)."""
    name = f"rating_template_{uuid.uuid4().hex[:8]}"
    conn = await _admin(postgres_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(migrations.upgrade, with_database(postgres_url, name))
        yield name
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"rating_test_{uuid.uuid4().hex[:12]}"
    conn = await _admin(postgres_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield with_database(postgres_url, name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def temporal_address() -> Iterator[str]:
    """A real Temporal frontend: RATING_TEMPORAL_ADDRESS, or a dev server for the session."""
    configured = os.environ.get("RATING_TEMPORAL_ADDRESS")
    if configured:
        yield configured
        return
    server = TemporalDevServer(free_port(), ui_port=None, db_file=None)
    yield server.start()
    server.stop()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for a server on free ports against this test's database."""
    return Settings(
        database_url=database_url,
        listen_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        health_check_interval_seconds=0.2,
        auth_cache_seconds=0.0,
        shutdown_grace_seconds=1.0,
        database_pool_size=4,
        webhook_secret_keys=WEBHOOK_SECRET_KEYS,
        portal_secret=PORTAL_SECRET,
    )


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    """A running gRPC server of this test's own."""
    running = await start_server(settings)
    yield running
    await running.stop(0.5)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[aio.Channel]:
    """A client channel to the test's server."""
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@dataclass(frozen=True)
class TenantKeys:
    """A tenant and a bearer token per role."""

    tenant_id: str
    tokens: dict[Role, str]

    def metadata(self, role: Role) -> tuple[tuple[str, str]]:
        """Call metadata authenticating as this tenant's key of `role`.

        The portal role is no key: it is a portal link to customer PORTAL_CUSTOMER, signed
        with the test servers' PORTAL_SECRET.
        """
        if role is Role.PORTAL:
            return (("authorization", f"Portal {self.tokens[role]}"),)
        return (("authorization", f"Bearer {self.tokens[role]}"),)


async def make_tenant(database_url: str, name: str) -> TenantKeys:
    """Create a tenant with one key of every role, straight in the database."""

    engine = create_engine(database_url, pool_size=1)
    try:
        store = TenantStore(engine)
        tenant = await store.create_tenant(name, actor="test")
        tokens = {}
        for role in KEY_ROLES:
            issued = issue_key(tenant.tenant_id, role, f"{role.value} key", datetime.now(UTC))
            await store.add_key(issued.key, actor="test")
            tokens[role] = issued.token
        grant = grant_portal(tenant.tenant_id, PORTAL_CUSTOMER, datetime.now(UTC), PORTAL_LINK)
        tokens[Role.PORTAL] = sign_portal_token(PORTAL_SECRET, grant)
    finally:
        await engine.dispose()
    return TenantKeys(tenant.tenant_id, tokens)


@pytest.fixture
async def acme(database_url: str) -> TenantKeys:
    """Tenant `acme` with a key of every role."""
    return await make_tenant(database_url, "acme")


@pytest.fixture
async def globex(database_url: str) -> TenantKeys:
    """Tenant `globex`, a second tenant for isolation tests."""
    return await make_tenant(database_url, "globex")


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], timeout_seconds: float = 10.0
) -> None:
    """Poll `condition` (plain or async) until it holds; fail after the deadline."""
    async with asyncio.timeout(timeout_seconds):
        while True:
            held = condition()
            if held if isinstance(held, bool) else await held:
                return
            await asyncio.sleep(0.02)


def status_of(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """(status code, ErrorInfo reason) of a failed call."""
    from rating_client.errors import decode_rich_status, error_info

    status = decode_rich_status(error.trailing_metadata())
    info = None if status is None else error_info(status)
    return error.code(), "" if info is None else info.reason


async def refusal(call: Awaitable[object]) -> tuple[str, str, set[str]]:
    """(status code name, ErrorInfo reason, fields named in BadRequest) of a call that fails."""
    from rating_client.errors import decode_rich_status, field_violations

    try:
        await call
    except grpc.aio.AioRpcError as error:
        code, reason = status_of(error)
        status = decode_rich_status(error.trailing_metadata())
        return code.name, reason, set() if status is None else set(field_violations(status))
    raise AssertionError("the call was expected to be refused, and succeeded")
