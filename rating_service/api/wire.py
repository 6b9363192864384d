"""Time on the wire: protobuf Timestamps to and from aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(at: datetime) -> Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    message = Timestamp()
    message.FromDatetime(at)
    return message


def requested_at(request: Message, field: str = "at") -> datetime | None:
    """The aware UTC time a request's optional Timestamp field holds, or None when unset."""
    if not request.HasField(field):
        return None
    value: Timestamp = getattr(request, field)
    return value.ToDatetime(tzinfo=UTC)
