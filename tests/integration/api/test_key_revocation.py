"""A key revoked on one replica stops authenticating on another within the auth-cache TTL."""

from __future__ import annotations

import pytest

from rating_service.core.auth import Caller, Role
from rating_service.core.errors import Unauthenticated
from rating_service.services.auth import KeyRing
from rating_service.store.database import create_engine
from rating_service.store.tenant import TenantStore
from tests.conftest import TenantKeys
from tests.unit.services.test_key_cache import Clock


async def test_a_revoked_key_is_refused_once_its_cached_read_expires(
    database_url: str, acme: TenantKeys
) -> None:
    engine = create_engine(database_url, pool_size=2)
    clock = Clock()
    try:
        store = TenantStore(engine)
        here, elsewhere = KeyRing(store, 5.0, clock=clock), KeyRing(store, 5.0, clock=clock)
        rater = f"Bearer {acme.tokens[Role.RATER]}"
        caller = await here.authenticate(rater)
        assert caller.role is Role.RATER
        admin = Caller(acme.tenant_id, "operator", Role.ADMIN)

        clock.now = 1.0
        await elsewhere.revoke(admin, caller.key_id)
        with pytest.raises(Unauthenticated):  # the replica that revoked it: at once
            await elsewhere.authenticate(rater)
        clock.now = 4.9
        assert await here.authenticate(rater) == caller  # read at 0, trusted until 5
        clock.now = 5.0
        with pytest.raises(Unauthenticated):
            await here.authenticate(rater)
    finally:
        await engine.dispose()
