"""The shape the architecture promises, beside the import contracts `lint-imports` checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 800
"""A file longer than this holds more than one responsibility (generated code aside)."""
MAX_LOOSE_MODULES = 5
"""Modules at the package root, `__init__.py` included: the rest lives in its layer."""


def source_files() -> list[Path]:
    """Every tracked Python file outside the generated stubs."""
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed if "/gen/" not in name and (ROOT / name).exists()]


def test_no_file_is_longer_than_the_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in source_files()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by responsibility (over {MAX_LINES} lines): {long}"


def test_the_package_root_holds_few_loose_modules() -> None:
    loose = sorted(p.name for p in (ROOT / "rating_service").glob("*.py"))
    assert len(loose) <= MAX_LOOSE_MODULES, f"give these a layer: {loose}"
