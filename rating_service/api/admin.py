"""AdminService: the caller's identity and its tenant's API keys."""

from __future__ import annotations

from google.protobuf import json_format
from grpc import aio

from rating_client.gen.rating.v1 import admin_pb2, admin_pb2_grpc
from rating_service.api.edge import allow, current_caller
from rating_service.api.pages import Page
from rating_service.api.wire import timestamp
from rating_service.core.auth import ApiKey, Role, Tenant
from rating_service.core.contracts.rate_limits import rate_limit_from_dict, rate_limit_to_dict
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.services.auth import KeyRing
from rating_service.store.tenant import TenantStore

ROLES_TO_PROTO = {
    Role.RATER: admin_pb2.ROLE_RATER,
    Role.ADMIN: admin_pb2.ROLE_ADMIN,
    Role.OPS: admin_pb2.ROLE_OPS,
}
ROLES_FROM_PROTO = {v: k for k, v in ROLES_TO_PROTO.items()}


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Converts AdminService messages to key-ring calls and back."""

    def __init__(self, keyring: KeyRing, tenants: TenantStore) -> None:
        self._keyring = keyring
        self._tenants = tenants

    @allow()
    async def WhoAmI(
        self, request: admin_pb2.WhoAmIRequest, context: aio.ServicerContext
    ) -> admin_pb2.WhoAmIResponse:
        caller = current_caller()
        tenant = await self._tenants.tenant(caller.tenant_id)
        key = await self._tenants.key(caller.key_id)
        assert key is not None, "an authenticated key exists"
        return admin_pb2.WhoAmIResponse(tenant=tenant_message(tenant), key=key_message(key))

    @allow(Role.ADMIN)
    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: aio.ServicerContext
    ) -> admin_pb2.CreateApiKeyResponse:
        role = ROLES_FROM_PROTO.get(request.role)
        if role is None:
            raise InvalidArgument.of_field("role", "one of ROLE_RATER, ROLE_ADMIN, ROLE_OPS")
        rate_limit = None
        if request.HasField("rate_limit"):
            fields = json_format.MessageToDict(request.rate_limit, preserving_proto_field_name=True)
            rate_limit = rate_limit_from_dict(fields, "rate_limit")
        issued = await self._keyring.issue(current_caller(), role, request.name, rate_limit)
        return admin_pb2.CreateApiKeyResponse(key=key_message(issued.key), secret=issued.token)

    @allow(Role.ADMIN)
    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: aio.ServicerContext
    ) -> admin_pb2.ListApiKeysResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (str,), violations)
        violations.raise_if_any()
        found = await self._keyring.keys(
            current_caller(),
            request.include_revoked,
            after=None if page.after is None else str(page.after[0]),
            limit=page.limit,
        )
        keys, token = page.cut(found, lambda key: (key.key_id,))
        return admin_pb2.ListApiKeysResponse(
            keys=[key_message(k) for k in keys], next_page_token=token
        )

    @allow(Role.ADMIN)
    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: aio.ServicerContext
    ) -> admin_pb2.RevokeApiKeyResponse:
        key = await self._keyring.revoke(current_caller(), request.key_id)
        return admin_pb2.RevokeApiKeyResponse(key=key_message(key))


def tenant_message(tenant: Tenant) -> admin_pb2.Tenant:
    """The wire form of a tenant."""
    return admin_pb2.Tenant(
        tenant_id=tenant.tenant_id, name=tenant.name, create_time=timestamp(tenant.created_at)
    )


def key_message(key: ApiKey) -> admin_pb2.ApiKey:
    """The wire form of an API key, without any secret."""
    message = admin_pb2.ApiKey(
        key_id=key.key_id,
        tenant_id=key.tenant_id,
        role=ROLES_TO_PROTO[key.role],
        name=key.name,
        create_time=timestamp(key.created_at),
    )
    if key.revoked_at is not None:
        message.revoke_time.CopyFrom(timestamp(key.revoked_at))
    if key.rate_limit is not None:
        json_format.ParseDict(rate_limit_to_dict(key.rate_limit), message.rate_limit)
    return message
