"""The client installs and runs without the server: a clean virtualenv holding clients/python only.

The virtualenv is built with the uv `make` uses, from its cache when it can (seconds), and must
hold the client's declared requirements and theirs, nothing of the server. Its python then calls a
real server with `RatingClient` and gets a real charge and typed refusals.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rating_client import RatingClient
from rating_service.core.auth import Role
from rating_service.runtime.server import RunningServer
from tests.conftest import TenantKeys
from tests.integration.billing import open_account

ROOT = Path(__file__).resolve().parents[3]
CLIENT = ROOT / "clients" / "python"
CALLING_SERVICE = Path(__file__).with_name("calling_service.py")

SERVER_MODULES = ("rating_service", "sqlalchemy", "asyncpg", "temporalio")
"""What the server imports and a calling service must not need."""

_ENVIRONMENT = """
import importlib, importlib.metadata, json, pkgutil
import rating_client
for module in pkgutil.walk_packages(rating_client.__path__, "rating_client."):
    importlib.import_module(module.name)
importable = {}
for name in NAMES:
    try:
        importlib.import_module(name)
        importable[name] = True
    except ModuleNotFoundError:
        importable[name] = False
print(json.dumps({
    "client_file": rating_client.__file__,
    "importable": importable,
    "distributions": {
        d.metadata["Name"]: d.requires or [] for d in importlib.metadata.distributions()
    },
}))
"""
"""Run in the virtualenv: load every client module, try the server's, list what is installed."""


def uv() -> str:
    """The uv `make` uses: the one on PATH, else the one `make` installs into .tools/."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("no uv: `make .venv/.synced` installs it into .tools/")
    return found


def run_uv(*args: str, cwd: Path) -> None:
    """Run uv offline first: its cache holds what `make` synced; a cold cache goes to the index."""
    for mode in (["--offline"], []):
        done = subprocess.run(
            [uv(), *args, *mode], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode == 0:
            return
    pytest.fail(f"uv {' '.join(args)} failed:\n{done.stderr}")


def server_only_distributions() -> set[str]:
    """The server's own requirements that the client does not declare."""
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["dependencies"]
    server_names: set[str] = {canonicalize_name(Requirement(line).name) for line in server}
    client_names: set[str] = {canonicalize_name(Requirement(line).name) for line in client}
    return server_names - client_names - {"rating-client"}


def requirement_closure(requires: Mapping[str, list[str]], root: str) -> set[str]:
    """Every distribution `root` needs, directly or through another, on this platform."""
    needed: set[str] = set()
    pending = [root]
    while pending:
        for line in requires.get(pending.pop(), []):
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            if name not in needed:
                needed.add(name)
                pending.append(name)
    return needed


@pytest.fixture(scope="module")
def client_alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding the client distribution built from clients/python, and nothing else."""
    home = tmp_path_factory.mktemp("client-alone")
    venv = home / "venv"
    # cwd outside the repository: no project or workspace settings of ours reach the install.
    run_uv("venv", "--python", sys.executable, str(venv), cwd=home)
    run_uv("pip", "install", "--python", str(venv / "bin" / "python"), str(CLIENT), cwd=home)
    return venv


def run_in(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the virtualenv's python isolated (-I: no PYTHONPATH, no script or current directory)."""
    return subprocess.run(
        [str(venv / "bin" / "python"), "-I", *args],
        cwd=venv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(600)
def test_the_client_installs_alone_with_only_what_it_declares(client_alone: Path) -> None:
    program = f"NAMES = {SERVER_MODULES!r}\n{_ENVIRONMENT}"
    done = run_in(client_alone, "-c", program)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert Path(seen["client_file"]).is_relative_to(client_alone)  # the wheel, not this checkout
    assert seen["importable"] == dict.fromkeys(SERVER_MODULES, False)
    requires: dict[str, list[str]] = {
        canonicalize_name(name): lines for name, lines in seen["distributions"].items()
    }
    direct = {canonicalize_name(Requirement(line).name) for line in requires["rating-client"]}
    assert direct == {"grpcio", "protobuf", "googleapis-common-protos"}
    assert set(requires) == {"rating-client"} | requirement_closure(requires, "rating-client")
    assert not set(requires) & server_only_distributions()


@pytest.mark.timeout(600)
async def test_the_client_alone_debits_on_a_real_server_and_raises_typed_refusals(
    client_alone: Path, client: RatingClient, server: RunningServer, acme: TenantKeys
) -> None:
    account = await open_account(client, "cus-alone")
    pool = await account.grant("10", grant_id="g-alone")
    target = f"127.0.0.1:{server.port}"
    # In a thread: the server answers on this test's event loop while the script waits on it.
    done = await asyncio.to_thread(
        run_in, client_alone, str(CALLING_SERVICE), target, acme.tokens[Role.RATER], "cus-alone"
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert Path(seen["client_file"]).is_relative_to(client_alone)
    # 150 large-model tokens × 0.01 = 1.50, all from the one pool; 10 − 1.50 = 8.50 left.
    assert Decimal(seen["charge"]) == Decimal("1.50")
    assert [(p, Decimal(a)) for p, a in seen["draws"]] == [(pool, Decimal("1.50"))]
    # 1,000 tokens × 0.01 = 10.00 > 8.50 under overage policy `block`: refused, nothing debited.
    assert seen["insufficient_credit"] == [
        "rating_client.errors",
        "FAILED_PRECONDITION",
        "INSUFFICIENT_CREDIT",
    ]
    assert seen["invalid_request"] == ["rating_client.errors", "INVALID_ARGUMENT"]
    assert "event.event_type" in seen["invalid_fields"]
    assert [(p, Decimal(r)) for p, r in seen["remaining"]] == [(pool, Decimal("8.50"))]
