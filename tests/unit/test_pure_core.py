"""The pure core (domain, pricing) imports no transport, storage or workflow library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = [ROOT / "rating_service" / d for d in ("domain", "pricing", "contracts", "ledger")]
FORBIDDEN = (
    "grpc",
    "google",
    "sqlalchemy",
    "asyncpg",
    "alembic",
    "temporalio",
    "rating_service.api",
    "rating_service.store",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path",
    sorted(p for d in PURE if d.exists() for p in d.rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_pure_modules_import_nothing_of_the_adapters(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.startswith(FORBIDDEN)}
    assert not bad, f"{path.name} imports {bad}"
