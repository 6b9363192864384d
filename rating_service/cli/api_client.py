"""What the operator commands act through: the gRPC API of a running server, with an API key.

The key (RATING_API_KEY) decides the tenant and the role, so these commands take no --tenant:
the server checks, audits and refuses as it does for any caller. A refusal is printed with what
the server said of it (its status, reason, the fields or preconditions at fault) and what to do
next, and the command exits 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC
from typing import TYPE_CHECKING

import click

from rating_service.cli.command_line import T, load_settings

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from rating_client import RatingClient, RatingError

API_TIMEOUT_SECONDS = 30.0
"""How long one call may take: an operator action may wait on Temporal, a person is waiting."""

# By status code name: grpc is imported only by the commands that call the API.
_NEXT_STEP_BY_CODE = {
    "UNAUTHENTICATED": (
        "set RATING_API_KEY to a key of the tenant (`rating tenants create` prints an admin key,"
        " `rating keys create --tenant NAME --role ops` another, `rating dev` the demo's)"
    ),
    "PERMISSION_DENIED": (
        "set RATING_API_KEY to a key of the tenant with a role this command needs"
        " (README: Tenants, keys and roles)"
    ),
}


class ApiRefusal(click.ClickException):
    """A refused call, said as the server said it, with what to do next; exits 1."""

    def __init__(self, error: RatingError, address: str, next_step: str | None) -> None:
        lines = [error.message or error.code.name.lower().replace("_", " ")]
        status = error.code.name + (f" {error.reason}" if error.reason else "")
        lines.append(f"  status: {status}")
        lines += [f"  field {field}: {problem}" for field, problem in error.fields.items()]
        lines += [f"  precondition: {failed}" for failed in error.preconditions]
        if error.reason == "" and error.code.name == "UNAVAILABLE":
            # No rich status: the server itself was not reached.
            next_step = (
                f"is `rating serve` (or `rating dev`) running at {address}?"
                " RATING_API_ADDRESS says where it listens"
            )
        next_step = next_step or _NEXT_STEP_BY_CODE.get(error.code.name)
        if next_step:
            lines.append(f"  next: {next_step}")
        super().__init__("\n".join(lines))
        self.error = error


def api_call(
    call: Callable[[RatingClient], Awaitable[T]], next_steps: Mapping[str, str] | None = None
) -> T:
    """Make one command's calls with the configured address and key; a refusal ends the
    command with the server's explanation and, by its reason, `next_steps`' advice."""
    import grpc

    from rating_client import RatingClient, RatingError

    settings = load_settings()
    if not settings.api_key:
        raise click.ClickException(
            "RATING_API_KEY is not set: operator commands act through the API with a key of the"
            " tenant (`rating tenants create` prints an admin key, `rating dev` the demo"
            " tenant's); RATING_API_ADDRESS says where the server is"
            f" (now {settings.api_address})"
        )

    credentials = None
    if settings.api_tls_ca_file is not None:
        try:
            ca = settings.api_tls_ca_file.read_bytes()
        except OSError as exc:
            raise click.ClickException(
                f"cannot read RATING_API_TLS_CA_FILE {settings.api_tls_ca_file}: {exc.strerror}"
            ) from exc
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)

    async def run() -> T:
        async with RatingClient(
            settings.api_address,
            settings.api_key,
            timeout_seconds=API_TIMEOUT_SECONDS,
            credentials=credentials,
        ) as client:
            return await call(client)

    try:
        return asyncio.run(run())
    except RatingError as error:
        advice = (next_steps or {}).get(error.reason)
        raise ApiRefusal(error, settings.api_address, advice) from error


def moment(at: Timestamp) -> str:
    """A Timestamp of an answer as ISO 8601 in UTC, as the commands print every moment."""
    return at.ToDatetime(UTC).isoformat()
