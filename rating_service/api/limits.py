"""What any request may hold, checked at the edge before a servicer sees it (DESIGN.md §7).

Nothing a caller sends reaches the database unchecked. These limits apply to every field of
every request, wherever it sits in the message:

- identifiers (fields named `*_id`, `*_ids`, `*_key`, `key`, `event_type`, `page_token`, and
  map keys): at most 255 characters, every one printable (no control, format, private-use
  or unassigned characters, no whitespace other than a plain space);
- other strings: at most 4,096 characters, no control characters except tab, LF and CR;
- Timestamps: from 1970-01-01T00:00:00Z to 2999-12-31T23:59:59.999999999Z (nanos 0 to
  999,999,999); time is kept to the microsecond;
- repeated and map fields: at most 1,000 entries;
- the whole message: `max_message_bytes` (RESOURCE_EXHAUSTED, reason MESSAGE_TOO_LARGE; gRPC
  itself cuts off what is over twice that, without details).

Decimal strings are checked where they are read (`domain.money.parse_decimal`). The events of
a BatchRateAndDebit, and the messages of a StreamRateAndDebit, are checked one by one by their
servicer, so that one bad event fails alone.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from rating_service.core.errors import FieldViolation, ResourceExhausted, ViolationCollector

MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
MAX_ID_LENGTH = 255
MAX_TEXT_LENGTH = 4096
MAX_ENTRIES = 1000
EARLIEST_SECONDS = 0
"""1970-01-01T00:00:00Z: no billable usage predates the Unix epoch."""
LATEST_SECONDS = 32_503_680_000 - 1
"""2999-12-31T23:59:59Z: far enough for any contract term, near enough for date arithmetic."""

_IDENTIFIER_SUFFIXES = ("_id", "_ids", "_key")
_IDENTIFIER_NAMES = frozenset({"key", "event_type", "page_token"})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TIMESTAMP = "google.protobuf.Timestamp"

ITEMS_CHECKED_ONE_BY_ONE = frozenset({("rating.v1.BatchRateAndDebitRequest", "events")})
"""Repeated fields whose entries a servicer checks itself, answering each on its own."""


def check(request: Message, max_bytes: int) -> None:
    """Refuse a request beyond a limit: RESOURCE_EXHAUSTED by size, else INVALID_ARGUMENT."""
    size = request.ByteSize()
    if size > max_bytes:
        raise ResourceExhausted(
            f"the request is {size} bytes; at most {max_bytes} are accepted",
            reason=MESSAGE_TOO_LARGE,
            metadata={"max_bytes": str(max_bytes)},
        )
    ViolationCollector(violations(request)).raise_if_any()


def violations(message: Message, path: str = "") -> list[FieldViolation]:
    """Every field of `message` (its path prefixed by `path`) that breaks a limit."""
    found = ViolationCollector()
    _check_message(message, path, found)
    return found.violations


def _check_message(message: Message, path: str, found: ViolationCollector) -> None:
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == _TIMESTAMP:
        _check_timestamp(message, path, found)
        return
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        if field.is_repeated:
            if len(value) > MAX_ENTRIES:
                found.add(name, f"has {len(value)} entries (at most {MAX_ENTRIES})")
                continue
            if (descriptor.full_name, field.name) in ITEMS_CHECKED_ONE_BY_ONE:
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                _check_map(field, value, name, found)
            else:
                for n, item in enumerate(value):
                    _check_value(field, item, f"{name}[{n}]", found)
        else:
            _check_value(field, value, name, found)


def _check_map(
    field: FieldDescriptor, entries: object, name: str, found: ViolationCollector
) -> None:
    entry = field.message_type
    assert entry is not None  # a map field's entries are messages
    value_field = entry.fields_by_name["value"]
    for key, value in entries.items():  # type: ignore[attr-defined]
        if isinstance(key, str):
            problem = _identifier_problem(key)
            if problem is not None:
                found.add(name, f"has a key that {problem}")
                continue
        _check_value(value_field, value, f"{name}[{key!r}]", found)


def _check_value(
    field: FieldDescriptor, value: object, name: str, found: ViolationCollector
) -> None:
    if isinstance(value, Message):
        _check_message(value, f"{name}.", found)
    elif isinstance(value, str):
        problem = _identifier_problem(value) if _is_identifier(field) else _text_problem(value)
        if problem is not None:
            found.add(name, problem)


def _is_identifier(field: FieldDescriptor) -> bool:
    return field.name in _IDENTIFIER_NAMES or field.name.endswith(_IDENTIFIER_SUFFIXES)


def _identifier_problem(value: str) -> str | None:
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_ID_LENGTH})"
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        return f"contains {_name(bad)}: identifiers take printable characters only"
    return None


def _text_problem(value: str) -> str | None:
    if len(value) > MAX_TEXT_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_TEXT_LENGTH})"
    control = _CONTROL.search(value)
    if control is not None:
        return f"contains {_name(control.group())}, a control character"
    return None


def _check_timestamp(message: Message, path: str, found: ViolationCollector) -> None:
    name = path.removesuffix(".")
    seconds: int = message.seconds  # type: ignore[attr-defined]
    nanos: int = message.nanos  # type: ignore[attr-defined]
    if not EARLIEST_SECONDS <= seconds <= LATEST_SECONDS:
        found.add(name, "must be between 1970-01-01T00:00:00Z and 2999-12-31T23:59:59.999999999Z")
    elif not 0 <= nanos <= 999_999_999:
        found.add(name, "nanos must be between 0 and 999,999,999")


def _name(character: str) -> str:
    return f"U+{ord(character):04X}"
