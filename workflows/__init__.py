"""Temporal workflows and activities of the rating service: what the worker registers.

Workflows orchestrate and do no I/O; activities act and are idempotent on business keys.
Billing cycles, invoices, expiry, renewals, auto-recharge and dunning register here as they land.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

WORKFLOWS: Sequence[type] = ()


def activities(dependencies: Any) -> Sequence[Callable[..., Any]]:
    """The activity callables, bound to the worker's dependencies (database engine, gateways)."""
    return ()
