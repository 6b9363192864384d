"""Generate the Python protobuf and gRPC modules from protos/ (`make protos`); never edit them."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
TARGET = ROOT / "clients" / "python" / "rating_client" / "gen"
# protoc writes `from rating.v1 import x_pb2`; the modules live under rating_client.gen.
_IMPORT = re.compile(r"^from rating\.v1 import", re.MULTILINE)
_HEADER = "# Generated from protos/ by tools/gen_protos.py. Do not edit.\n"


def generate(target: Path) -> None:
    """Write the generated package for every proto under protos/ into `target`."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    # Ours only: the copies of googleapis' protos under protos/google/ are there for imports;
    # their Python modules come from googleapis-common-protos.
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "rating").rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    status = protoc.main(
        [
            "protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={target}",
            f"--grpc_python_out={target}",
            f"--mypy_out={target}",
            f"--mypy_grpc_out={target}",
            *sources,
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")
    for path in target.rglob("*.py*"):
        text = _IMPORT.sub("from rating_client.gen.rating.v1 import", path.read_text())
        path.write_text(_HEADER + text)
    for package in [target, *(d for d in target.rglob("*") if d.is_dir())]:
        (package / "__init__.py").write_text(_HEADER)


def stale_files() -> list[str]:
    """Generated files that differ from what protos/ would generate now (empty when fresh)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        generate(fresh)
        expected = {p.relative_to(fresh): p.read_bytes() for p in fresh.rglob("*") if p.is_file()}
        actual = {
            p.relative_to(TARGET): p.read_bytes()
            for p in TARGET.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
    names = set(expected) | set(actual)
    return sorted(str(n) for n in names if expected.get(n) != actual.get(n))


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        stale = stale_files()
        if stale:
            raise SystemExit(f"generated code is stale, run `make protos`: {', '.join(stale)}")
        print("generated code is up to date")
    else:
        generate(TARGET)
        print(f"generated {TARGET.relative_to(ROOT)} from protos/")
