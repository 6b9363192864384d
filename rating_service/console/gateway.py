"""The console's one channel to the rating API, each call made with the visitor's credential."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from grpc import aio

from rating_client.errors import typed_error
from rating_client.gen.rating.v1 import (
    admin_pb2_grpc,
    contract_pb2_grpc,
    invoice_pb2_grpc,
    ops_pb2_grpc,
    portal_pb2_grpc,
    rating_pb2_grpc,
    webhook_pb2_grpc,
)

T = TypeVar("T")

CALL_SECONDS = 10.0
"""Deadline of one RPC (a replay that waits for its run asks for more)."""


class Credential:
    """What the console sends as `authorization`: an operator's key or a customer's link."""

    def __init__(self, header: str) -> None:
        self._metadata = (("authorization", header),)

    @classmethod
    def api_key(cls, key: str) -> Credential:
        """An operator's API key."""
        return cls(f"Bearer {key}")

    @classmethod
    def portal_link(cls, token: str) -> Credential:
        """A customer's portal link: the API answers it with that customer's view alone."""
        return cls(f"Portal {token}")

    @property
    def metadata(self) -> tuple[tuple[str, str]]:
        """The call metadata."""
        return self._metadata


class Gateway:
    """The stubs of every service the console reads, on one channel."""

    def __init__(self, target: str) -> None:
        self._channel = aio.insecure_channel(target)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.contracts = contract_pb2_grpc.ContractServiceStub(self._channel)
        self.invoices = invoice_pb2_grpc.InvoiceServiceStub(self._channel)
        self.ops = ops_pb2_grpc.OpsServiceStub(self._channel)
        self.portal = portal_pb2_grpc.PortalServiceStub(self._channel)
        self.rating = rating_pb2_grpc.RatingServiceStub(self._channel)
        self.webhooks = webhook_pb2_grpc.WebhookServiceStub(self._channel)

    async def call(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        credential: Credential,
        timeout_seconds: float = CALL_SECONDS,
    ) -> T:
        """One RPC; a refusal raises rating_client's typed error (`.code`, `.reason`)."""
        try:
            return await method(request, metadata=credential.metadata, timeout=timeout_seconds)
        except aio.AioRpcError as error:
            raise typed_error(error) from None

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(grace=None)
