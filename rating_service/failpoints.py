"""Failpoints: named places where the service can be made to fail on purpose, for tests.

A few steps must survive a crash at their most awkward moment: just after an invoice's number
was committed, just after the gateway took a payment. Those places call `hit(name)`; nothing
happens unless a test armed the name (or `RATING_FAILPOINTS` did, e.g. to rehearse a replay).
The failure is a domain error, so the invoice workflow fails at once, for ops to replay.
"""

from __future__ import annotations

from collections.abc import Mapping

from rating_service.core.errors import DomainError, InvalidArgument

AFTER_NUMBER_ASSIGNED = "invoice.after_number_assigned"
"""Fails finalize after the gapless number and the ledger postings are committed."""

AFTER_PAYMENT_TAKEN = "invoice.after_payment_taken"
"""Fails collection after the gateway charged the card, before the payment is recorded."""

EXPORT_AFTER_FILES_WRITTEN = "export.after_files_written"
"""Fails a continuous export after a batch's files are written, before its position moves."""

KNOWN = (AFTER_NUMBER_ASSIGNED, AFTER_PAYMENT_TAKEN, EXPORT_AFTER_FILES_WRITTEN)


class InjectedFailure(DomainError):
    """A failure an armed failpoint raised."""

    reason = "INJECTED_FAILURE"


class Failpoints:
    """Armed failpoints and how many more times each fires."""

    def __init__(self, armed: Mapping[str, int] | None = None) -> None:
        self._remaining = dict(armed or {})

    @classmethod
    def parse(cls, text: str) -> Failpoints:
        """Read `name=times,name=times` (times defaults to 1); names must be known."""
        armed: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, times = item.partition("=")
            if name not in KNOWN:
                raise InvalidArgument.of_field(
                    "failpoints", f"unknown failpoint {name!r}; known: {', '.join(KNOWN)}"
                )
            if times and not times.isdigit():
                raise InvalidArgument.of_field("failpoints", f"{item!r}: times must be a number")
            armed[name] = int(times or 1)
        return cls(armed)

    def hit(self, name: str) -> None:
        """Fail here if `name` is armed (once less from now on)."""
        if self._remaining.get(name, 0) <= 0:
            return
        self._remaining[name] -= 1
        raise InjectedFailure(f"failpoint {name} fired")
