"""The pure core (rating_service.core): no adapter imports, no float."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CORE = ROOT / "rating_service" / "core"
PURE = ("pricing", "contracts", "ledger", "billing", "rating")
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


@pytest.mark.parametrize(
    "path",
    sorted(CORE.rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_pure_modules_import_no_adapter_and_use_no_float(path: Path) -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        # Money is never a float: no float literal and no float() call anywhere in the core.
        assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), path
        assert not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "float"
        ), path
    assert not {m for m in imported if m.startswith(FORBIDDEN)}, path


def test_importing_the_core_loads_no_adapter() -> None:
    # A fresh interpreter, so modules imported by other tests do not hide an indirect import.
    modules = ", ".join(["rating_service.core", *(f"rating_service.core.{name}" for name in PURE)])
    probe = (
        f"import sys, {modules};"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'grpc', 'sqlalchemy', 'asyncpg', 'temporalio', 'alembic'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
