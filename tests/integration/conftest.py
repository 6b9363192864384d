"""Fixtures of the integration tests: API clients of two tenants on the test's server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from rating_service.api.server import RunningServer
from rating_service.client import RatingClient
from rating_service.domain.auth import Role
from tests.conftest import TenantKeys
from tests.integration.billing import load_catalog


@asynccontextmanager
async def admin_client(
    server: RunningServer, tenant: TenantKeys, database_url: str
) -> AsyncIterator[RatingClient]:
    """An admin client of `tenant`, whose catalog is the test catalog."""
    await load_catalog(database_url, tenant.tenant_id)
    async with RatingClient(
        f"127.0.0.1:{server.port}", tenant.tokens[Role.ADMIN], timeout_seconds=10
    ) as rating:
        yield rating


@pytest.fixture
async def client(
    server: RunningServer, acme: TenantKeys, database_url: str
) -> AsyncIterator[RatingClient]:
    """An admin client of tenant `acme`."""
    async with admin_client(server, acme, database_url) as rating:
        yield rating


@pytest.fixture
async def neighbour(
    server: RunningServer, globex: TenantKeys, database_url: str
) -> AsyncIterator[RatingClient]:
    """An admin client of tenant `globex`, the other tenant of isolation tests."""
    async with admin_client(server, globex, database_url) as rating:
        yield rating
