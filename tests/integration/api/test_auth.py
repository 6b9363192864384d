"""Authentication and authorisation over real gRPC against a real PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio
from sqlalchemy import text

from rating_client.gen.rating.v1 import admin_pb2, admin_pb2_grpc
from rating_service.core.auth import Role
from rating_service.store.database import create_engine
from tests.conftest import TenantKeys, status_of


async def test_who_am_i_answers_with_the_callers_tenant_and_key(
    channel: aio.Channel, acme: TenantKeys
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    for role, proto_role in [
        (Role.RATER, admin_pb2.ROLE_RATER),
        (Role.ADMIN, admin_pb2.ROLE_ADMIN),
        (Role.OPS, admin_pb2.ROLE_OPS),
    ]:
        reply = await stub.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=acme.metadata(role))
        assert reply.tenant.tenant_id == acme.tenant_id
        assert reply.tenant.name == "acme"
        assert reply.key.role == proto_role
        assert acme.tokens[role].startswith(reply.key.key_id + ".")


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "MISSING_API_KEY"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "MALFORMED_API_KEY"),
        ((("authorization", "Bearer nonsense"),), "MALFORMED_API_KEY"),
        ((("authorization", "Bearer key_01nosuchkey.secret"),), "INVALID_API_KEY"),
    ],
)
async def test_calls_without_a_valid_key_are_unauthenticated(
    channel: aio.Channel, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=metadata)
    assert status_of(refused.value) == (grpc.StatusCode.UNAUTHENTICATED, reason)


async def test_a_wrong_secret_for_a_real_key_is_unauthenticated(
    channel: aio.Channel, acme: TenantKeys
) -> None:
    key_id = acme.tokens[Role.ADMIN].partition(".")[0]
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.WhoAmI(
            admin_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {key_id}.guess"),)
        )
    assert status_of(refused.value) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")


@pytest.mark.parametrize("role", [Role.RATER, Role.OPS])
async def test_only_admins_create_keys_and_a_refusal_changes_nothing(
    channel: aio.Channel, acme: TenantKeys, role: Role
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    admin = acme.metadata(Role.ADMIN)
    before = await stub.ListApiKeys(
        admin_pb2.ListApiKeysRequest(include_revoked=True), metadata=admin
    )
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(role=admin_pb2.ROLE_ADMIN, name="escalation"),
            metadata=acme.metadata(role),
        )
    assert status_of(refused.value) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    after = await stub.ListApiKeys(
        admin_pb2.ListApiKeysRequest(include_revoked=True), metadata=admin
    )
    assert after == before


async def test_a_created_key_works_once_shown_and_is_stored_only_as_a_hash(
    channel: aio.Channel, acme: TenantKeys, database_url: str
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    created = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(role=admin_pb2.ROLE_RATER, name="checkout-service"),
        metadata=acme.metadata(Role.ADMIN),
    )
    me = await stub.WhoAmI(
        admin_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {created.secret}"),)
    )
    assert me.key.key_id == created.key.key_id
    assert me.key.role == admin_pb2.ROLE_RATER
    listed = await stub.ListApiKeys(
        admin_pb2.ListApiKeysRequest(), metadata=acme.metadata(Role.ADMIN)
    )
    assert created.key.key_id in {k.key_id for k in listed.keys}
    secret = created.secret.partition(".")[2]
    engine = create_engine(database_url, pool_size=1)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM api_keys"))).all()
        audited = await conn.scalar(
            text("SELECT count(*) FROM audit_log WHERE action = 'api_key.create' AND subject = :k"),
            {"k": created.key.key_id},
        )
    await engine.dispose()
    assert not any(secret in repr(tuple(row)) for row in rows)
    assert audited == 1


async def test_another_tenants_key_cannot_be_revoked(
    channel: aio.Channel, acme: TenantKeys, globex: TenantKeys
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    globex_key = globex.tokens[Role.RATER].partition(".")[0]
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.RevokeApiKey(
            admin_pb2.RevokeApiKeyRequest(key_id=globex_key), metadata=acme.metadata(Role.ADMIN)
        )
    assert status_of(refused.value) == (grpc.StatusCode.PERMISSION_DENIED, "CROSS_TENANT_ACCESS")
    still = await stub.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=globex.metadata(Role.RATER))
    assert still.key.key_id == globex_key
    assert not still.key.HasField("revoke_time")


async def test_a_revoked_key_stops_authenticating_and_revoking_again_is_harmless(
    channel: aio.Channel, acme: TenantKeys
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    admin = acme.metadata(Role.ADMIN)
    rater_key = acme.tokens[Role.RATER].partition(".")[0]
    first = await stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=rater_key), metadata=admin)
    again = await stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=rater_key), metadata=admin)
    assert first.key.revoke_time == again.key.revoke_time
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=acme.metadata(Role.RATER))
    assert status_of(refused.value) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")


async def test_revoking_an_unknown_key_is_not_found(channel: aio.Channel, acme: TenantKeys) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.RevokeApiKey(
            admin_pb2.RevokeApiKeyRequest(key_id="key_01nosuchkey"),
            metadata=acme.metadata(Role.ADMIN),
        )
    assert status_of(refused.value) == (grpc.StatusCode.NOT_FOUND, "API_KEY_NOT_FOUND")
