"""The pricing core is pure: importing it pulls in no adapter library."""

from __future__ import annotations

import subprocess
import sys

ADAPTERS = ("grpc", "sqlalchemy", "asyncpg", "temporalio")


def test_importing_the_pricing_core_loads_no_adapter() -> None:
    # A fresh interpreter, so modules imported by other tests do not hide a stray import.
    probe = (
        "import sys, rating_service.pricing, rating_service.domain.money;"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({ADAPTERS!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
