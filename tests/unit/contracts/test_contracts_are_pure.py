"""The contracts and ledger cores are pure: no adapter library is imported, directly or not."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = [ROOT / "rating_service" / "contracts", ROOT / "rating_service" / "ledger"]
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
    sorted(path for package in PACKAGES for path in package.rglob("*.py")),
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_no_module_imports_an_adapter_or_uses_a_float(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
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
    assert not {name for name in imported if name.startswith(FORBIDDEN)}


def test_importing_the_cores_loads_no_adapter() -> None:
    # A fresh interpreter, so modules imported by other tests do not hide a stray import.
    probe = (
        "import sys, rating_service.contracts, rating_service.ledger;"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'grpc', 'sqlalchemy', 'asyncpg', 'temporalio', 'alembic'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
