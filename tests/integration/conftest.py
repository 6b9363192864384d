"""Fixtures of the integration tests: API clients of two tenants on the test's server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rating_client import RatingClient
from rating_service.runtime.server import RunningServer
from tests.conftest import TenantKeys
from tests.integration.billing import load_catalog
from tests.integration.cycles import admin_client


@pytest.fixture
async def client(
    server: RunningServer, acme: TenantKeys, database_url: str
) -> AsyncIterator[RatingClient]:
    """An admin client of tenant `acme`, whose catalog is the test catalog."""
    await load_catalog(database_url, acme.tenant_id)
    async with admin_client(server, acme) as rating:
        yield rating


@pytest.fixture
async def neighbour(
    server: RunningServer, globex: TenantKeys, database_url: str
) -> AsyncIterator[RatingClient]:
    """An admin client of tenant `globex`, the other tenant of isolation tests, same catalog."""
    await load_catalog(database_url, globex.tenant_id)
    async with admin_client(server, globex) as rating:
        yield rating
