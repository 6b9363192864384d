"""The client distribution declares exactly what rating_client imports, at versions it loads on.

tests/integration/api/test_client_alone.py installs it alone and calls a real server; this file
checks the declaration itself, so an import the client gains or a regeneration with newer
grpcio-tools fails here first.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
PACKAGE = CLIENT / "rating_client"
GENERATED = PACKAGE / "gen"


def declared() -> dict[str, Requirement]:
    """The client's requirements by distribution name."""
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    requirements = (Requirement(line) for line in project["dependencies"])
    by_name: dict[str, Requirement] = {canonicalize_name(r.name): r for r in requirements}
    return by_name


def imported_modules() -> set[str]:
    """Every module outside the standard library and rating_client that rating_client imports."""
    modules: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module)
    return {
        module
        for module in modules
        if module.split(".")[0] not in sys.stdlib_module_names
        and module.split(".")[0] != "rating_client"
    }


def providers(module: str) -> set[str]:
    """The installed distributions whose files hold `module` (by path: `google` is shared)."""
    path = module.replace(".", "/")
    found: set[str] = set()
    for distribution in importlib.metadata.distributions():
        for file in distribution.files or ():
            name = file.as_posix()
            if name == f"{path}.py" or name.startswith(f"{path}/"):
                found.add(canonicalize_name(distribution.metadata["Name"]))
                break
    return found


def floor(requirement: Requirement) -> Version:
    """The `>=` version of a requirement."""
    [lowest] = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return lowest


def test_the_client_declares_exactly_the_distributions_it_imports() -> None:
    by_module = {module: providers(module) for module in imported_modules()}
    assert all(len(found) == 1 for found in by_module.values()), by_module
    imported = {name for found in by_module.values() for name in found}
    assert imported == set(declared()), by_module


def test_the_floors_are_the_versions_the_generated_modules_demand() -> None:
    grpc_versions = {
        match
        for stub in GENERATED.rglob("*_pb2_grpc.py")
        for match in re.findall(r"^GRPC_GENERATED_VERSION = '([\d.]+)'$", stub.read_text(), re.M)
    }
    protobuf_versions = {
        match
        for message in GENERATED.rglob("*_pb2.py")
        for match in re.findall(r"^# Protobuf Python Version: ([\d.]+)$", message.read_text(), re.M)
    }
    [grpc_version], [protobuf_version] = grpc_versions, protobuf_versions
    requirements = declared()
    assert floor(requirements["grpcio"]) >= Version(grpc_version)
    assert floor(requirements["protobuf"]) >= Version(protobuf_version)
