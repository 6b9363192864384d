"""The compose files, the Dockerfile and .dockerignore agree with the code and with each other.

No Docker engine runs here, so the files are parsed and checked against what they name: the
settings the code reads, the `rating` commands click really has, the health checks and ports of
the services, the build context. `docker compose config` runs too where a compose plugin exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from rating_service.cli import main as rating_cli
from rating_service.core.encryption import new_key
from rating_service.settings import Settings, documented_settings

ROOT = Path(__file__).resolve().parents[2]
LOCAL = "docker-compose.yml"
PRODUCTION = "docker-compose.production.example.yml"

PRODUCTION_ENV = {
    "RATING_IMAGE": "registry.example.com/rating-service@sha256:" + "0" * 64,
    "RATING_DATABASE_URL": "postgresql://rating:secret@db.internal:5432/rating",
    "RATING_TEMPORAL_ADDRESS": "temporal.internal:7233",
    "RATING_TEMPORAL_NAMESPACE": "rating",
    "RATING_WEBHOOK_SECRET_KEYS": new_key("k1"),
}
"""What an operator provides to the production example (its `${VAR:?…}` variables)."""

COMPOSE_ONLY_VARIABLES = {"RATING_IMAGE"}
"""Variables the production example interpolates that are not settings of the service."""


# ---------------------------------------------------------------------------------------------
# Reading the files as compose and Docker do


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return document


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?)([-?])((?:[^{}]|\{[^{}]*\})*))?\}|\$(\w+)")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: `$$`, `$X`, `${X}`, `${X:-default}`, `${X:?error}`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(5)
        colon, kind, word = match.group(2), match.group(3), match.group(4)
        current = env.get(name)
        unset = current is None or (colon == ":" and current == "")
        if kind == "-" and unset:
            return interpolate(word, env)
        if kind == "?" and unset:
            raise KeyError(f"{name} is required: {word}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def resolved(value: Any, env: Mapping[str, str]) -> Any:
    """A whole compose document with every string interpolated."""
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [resolved(item, env) for item in value]
    if isinstance(value, dict):
        return {key: resolved(item, env) for key, item in value.items()}
    return value


def variables_in(value: Any) -> set[str]:
    """Every variable a compose document interpolates."""
    if isinstance(value, str):
        return {m.group(1) or m.group(5) for m in _VARIABLE.finditer(value) if m.group(0) != "$$"}
    if isinstance(value, list):
        return set().union(*(variables_in(item) for item in value))
    if isinstance(value, dict):
        return set().union(*(variables_in(item) for item in value.values()))
    return set()


def services(name: str) -> dict[str, dict[str, Any]]:
    env = PRODUCTION_ENV if name == PRODUCTION else {}
    found: dict[str, dict[str, Any]] = resolved(load(name), env)["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def rating_services(name: str) -> dict[str, dict[str, Any]]:
    """The services that run the rating image (they all read `RATING_*` settings)."""
    return {
        service_name: service
        for service_name, service in services(name).items()
        if service_name in ("migrate", "server", "worker", "console")
    }


def dockerfile_entrypoint() -> list[str]:
    found = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    assert found, "the Dockerfile has no exec-form ENTRYPOINT"
    entrypoint: list[str] = json.loads(found.group(1))
    return entrypoint


def rating_invocations(service: dict[str, Any]) -> list[list[str]]:
    """The `rating …` argument lists a service runs: its command, or the lines of its script."""
    entrypoint = service.get("entrypoint", dockerfile_entrypoint())
    command = service.get("command", [])
    if entrypoint == ["rating"]:
        return [list(command)]
    assert entrypoint == ["/bin/sh", "-c"], f"unexpected entrypoint {entrypoint}"
    script = re.sub(r"\"[^\"]*\"|'[^']*'", "", "\n".join(command))  # not the echoed words
    return [line.split() for line in re.findall(r"\brating((?:[ \t]+[\w.:-]+)+)", script)]


def cli_command(args: list[str]) -> tuple[click.Command, list[str]]:
    """The click command `rating ARGS…` runs, and the arguments left for it to parse."""
    command: click.Command = rating_cli
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"`rating {' '.join(args)}` names a group, not a command"
        sub = command.commands.get(rest[0])
        assert sub is not None, f"`rating {' '.join(args)}`: no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


def check_rating_invocation(args: list[str]) -> None:
    """`rating ARGS…` names a real command and its options parse (nothing runs)."""
    command, rest = cli_command(args)
    command.make_context(" ".join(["rating", *args]), rest)


def docker_ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (Docker's matching rules).

    Patterns apply in order, the last match wins, `!` re-includes; a pattern matches a path or
    any of its parent directories; `*` and `?` stop at `/`, `**` spans directories.
    """
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        include = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        regex = re.compile(_dockerignore_regex(pattern))
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not include
    return ignored


def _dockerignore_regex(pattern: str) -> str:
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return regex


def seconds(duration: str) -> float:
    """A compose duration (`1m30s`, `15s`, `500ms`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def port_of(address: str) -> str:
    return address.rsplit(":", 1)[1]


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of each published port, short or long syntax."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(
                (entry.get("host_ip", ""), str(entry.get("published", "")), str(entry["target"]))
            )
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            ports.append(("", "", parts[0]))
        elif len(parts) == 2:
            ports.append(("", parts[0], parts[1]))
        else:
            ports.append((":".join(parts[:-2]), parts[-2], parts[-1]))
    return ports


# ---------------------------------------------------------------------------------------------
# Both compose files


@pytest.mark.parametrize("name", [LOCAL, PRODUCTION])
def test_every_rating_variable_is_a_real_setting_and_the_values_parse(name: str) -> None:
    known = {variable for variable, _, _ in documented_settings()}
    for service_name, service in rating_services(name).items():
        env = environment(service)
        rating_vars = {k: v for k, v in env.items() if k.startswith("RATING_")}
        assert set(rating_vars) <= known, f"{service_name} sets unknown {set(rating_vars) - known}"
        Settings.from_env(rating_vars)  # refuses a value that does not parse
    unknown = {v for v in variables_in(load(name)) if v.startswith("RATING_")} - known
    assert unknown <= COMPOSE_ONLY_VARIABLES


@pytest.mark.parametrize("name", [LOCAL, PRODUCTION])
def test_every_command_is_a_rating_command_the_cli_really_has(name: str) -> None:
    rating = rating_services(name)
    expected = {"migrate", "server", "worker"} | ({"console"} if name == LOCAL else set())
    assert set(rating) == expected
    for service in rating.values():
        invocations = rating_invocations(service)
        assert invocations
        for args in invocations:
            check_rating_invocation(args)
    assert rating_invocations(rating["migrate"]) == [["db", "upgrade"]]
    assert rating_invocations(rating["server"]) == [["serve"]]
    assert rating_invocations(rating["worker"]) == [["worker"]]
    if "console" in rating:
        assert rating_invocations(rating["console"]) == [["console"]]


def test_the_command_checker_refuses_what_the_cli_does_not_have() -> None:
    for wrong in (["db"], ["db", "downgrade"], ["serve", "--port", "1"], ["health", "--nope"]):
        with pytest.raises((AssertionError, click.UsageError)):
            check_rating_invocation(wrong)


@pytest.mark.parametrize("name", [LOCAL, PRODUCTION])
def test_migrations_run_once_and_gate_the_server_and_worker(name: str) -> None:
    found = services(name)
    for name_ in ("server", "worker"):
        wanted = found[name_]["depends_on"]["migrate"]["condition"]
        assert wanted == "service_completed_successfully"
    # Compose gives up on a dependency that exits non-zero once: a restart policy cannot retry
    # migrations for the services waiting on them, so the retry is the command's own.
    assert found["migrate"].get("restart", "no") == "no"


@pytest.mark.parametrize("name", [LOCAL, PRODUCTION])
def test_migrate_retries_with_backoff_and_gives_up_in_the_end(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the migrate service's script with a stand-in `rating` that fails N times."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no /bin/sh here")
    migrate = services(name)["migrate"]
    assert migrate["entrypoint"] == ["/bin/sh", "-c"]
    script = "\n".join(migrate["command"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rating").write_text(
        '#!/bin/sh\necho "$@" >> "$CALLS"\n'
        'n=$(grep -c . "$CALLS")\n[ "$n" -gt "$FAILURES" ]\n'  # fails the first FAILURES calls
    )
    (bin_dir / "sleep").write_text('#!/bin/sh\necho "$1" >> "$SLEEPS"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)

    def run(failures: int) -> tuple[int, list[str], list[float]]:
        calls, sleeps = tmp_path / f"calls-{failures}", tmp_path / f"sleeps-{failures}"
        calls.touch()
        sleeps.touch()
        env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CALLS": str(calls),
            "SLEEPS": str(sleeps),
            "FAILURES": str(failures),
        }
        done = subprocess.run([sh, "-c", script], env=env, capture_output=True, timeout=30)
        waits = [float(line) for line in sleeps.read_text().split()]  # sleep takes seconds
        return done.returncode, calls.read_text().splitlines(), waits

    assert run(0) == (0, ["db upgrade"], [])
    code, calls, waits = run(2)
    assert (code, calls) == (0, ["db upgrade"] * 3)
    assert waits == sorted(waits) and waits[0] > 0 and waits[-1] > waits[0]  # backs off
    code, calls, waits = run(100)
    assert code != 0 and 3 <= len(calls) < 20  # gives up, so compose reports it
    assert sum(waits) >= 30  # long enough to outlast a database that is still starting


@pytest.mark.parametrize("name", [LOCAL, PRODUCTION])
def test_dependencies_exist_and_wait_for_a_real_health_check(name: str) -> None:
    found = services(name)
    for service_name, service in found.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in found, f"{service_name} depends on missing {dependency}"
            wanted = rule["condition"]
            assert wanted in ("service_healthy", "service_completed_successfully")
            if wanted == "service_healthy":
                check = found[dependency].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), dependency


@pytest.mark.parametrize("name", [LOCAL, PRODUCTION])
def test_the_server_drains_within_its_stop_grace_period(name: str) -> None:
    server = services(name)["server"]
    grace = Settings.from_env(environment(server)).shutdown_grace_seconds
    assert seconds(server["stop_grace_period"]) > grace
    assert server["restart"] in ("always", "unless-stopped")
    assert services(name)["worker"]["restart"] in ("always", "unless-stopped")


@pytest.mark.parametrize("name", [LOCAL, PRODUCTION])
def test_the_server_listens_everywhere_in_its_container_and_checks_what_it_serves(
    name: str,
) -> None:
    server = services(name)["server"]
    settings = Settings.from_env(environment(server))
    assert settings.listen_address.startswith("0.0.0.0:")
    assert settings.metrics_address.startswith("0.0.0.0:")
    test = server["healthcheck"]["test"]
    assert test[0] == "CMD"
    if settings.tls_cert_file is None:
        # grpc.health.v1 on the gRPC port itself (`rating health` dials plaintext).
        assert test[1] == "rating"
        check_rating_invocation(test[2:])
        command, rest = cli_command(test[2:])
        options = command.make_context("rating health", rest).params
        assert options["address"] == f"127.0.0.1:{port_of(settings.listen_address)}"
    else:
        assert f"127.0.0.1:{port_of(settings.metrics_address)}/metrics" in " ".join(test)


# ---------------------------------------------------------------------------------------------
# The local stack (docker-compose.yml)


def test_the_local_stack_has_every_service_the_design_names() -> None:
    found = services(LOCAL)
    assert set(found) == {
        "postgres",
        "temporal",
        "temporal-ui",
        "migrate",
        "server",
        "worker",
        "console",
        "prometheus",
        "grafana",
    }


def test_the_console_is_a_client_of_the_api_without_database_credentials() -> None:
    found = services(LOCAL)
    console = Settings.from_env(environment(found["console"]))
    assert console.database_url is None
    server = Settings.from_env(environment(found["server"]))
    assert console.console_api_target == f"server:{port_of(server.listen_address)}"
    assert console.console_metrics_url == f"http://server:{port_of(server.metrics_address)}/metrics"
    assert found["console"]["depends_on"] == {"server": {"condition": "service_healthy"}}
    published_console = {(host, container) for _, host, container in published(found["console"])}
    assert (port_of(console.console_address),) * 2 in published_console


def test_prometheus_scrapes_the_server_and_the_worker_and_grafana_shows_them() -> None:
    found = services(LOCAL)
    server = Settings.from_env(environment(found["server"]))
    worker = Settings.from_env(environment(found["worker"]))
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in scrape["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    assert targets == {
        f"server:{port_of(server.metrics_address)}",
        f"worker:{port_of(worker.worker_metrics_address)}",
    }
    mounts = " ".join(found["prometheus"]["volumes"] + found["grafana"]["volumes"])
    assert "./deploy/prometheus/prometheus.yml:" in mounts
    assert "./deploy/grafana/provisioning:" in mounts and "./deploy/grafana/dashboards:" in mounts
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/rating.json").read_text())
    queries = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    # Every series the dashboard plots is one the code defines.
    for series in re.findall(r"rating_[a-z_]+", queries):
        defined = series.removesuffix("_total").removesuffix("_bucket")
        assert any(
            f'"{defined}"' in path.read_text() for path in (ROOT / "rating_service").rglob("*.py")
        ), series


def test_the_image_is_built_once_and_shared() -> None:
    found = services(LOCAL)
    builders = [name for name, service in found.items() if "build" in service]
    assert len(builders) == 1, f"built by {builders}"
    image = found[builders[0]]["image"]
    for name in ("migrate", "server", "worker"):
        assert found[name]["image"] == image
        if "build" not in found[name]:
            assert found[name].get("pull_policy") == "never", f"{name} would try to pull {image}"


def test_ports_are_published_on_loopback_only_and_match_the_listen_addresses() -> None:
    found = services(LOCAL)
    for name, service in found.items():
        for host_ip, _, _ in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip or 'every interface'}"
    assert not published(found["postgres"]) and not published(found["temporal"])
    settings = Settings.from_env(environment(found["server"]))
    server_ports = {(host, container) for _, host, container in published(found["server"])}
    for address in (settings.listen_address, settings.metrics_address):
        assert (port_of(address), port_of(address)) in server_ports


def test_postgres_is_healthy_only_once_it_answers_over_tcp() -> None:
    postgres = services(LOCAL)["postgres"]
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    host = next(test[i + 1] for i, arg in enumerate(test) if arg in ("-h", "--host"))
    # A host starting with / is a socket directory: ready while the init server runs.
    assert host and not host.startswith("/")
    env = environment(postgres)
    url = environment(services(LOCAL)["server"])["RATING_DATABASE_URL"]
    user, password, db = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
    assert url == f"postgresql://{user}:{password}@postgres:5432/{db}"
    assert {"--username", user, "--dbname", db} <= set(test)


def test_temporal_is_healthy_only_once_the_workers_namespace_exists() -> None:
    found = services(LOCAL)
    temporal = found["temporal"]
    worker = Settings.from_env(environment(found["worker"]))
    test = temporal["healthcheck"]["test"]
    assert test[:5] == ["CMD", "temporal", "operator", "namespace", "describe"]
    assert worker.temporal_namespace in test[5:]
    assert test[test.index("--address") + 1] == worker.temporal_address
    assert environment(temporal)["DEFAULT_NAMESPACE"] == worker.temporal_namespace
    assert found["worker"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert environment(found["temporal-ui"])["TEMPORAL_ADDRESS"] == worker.temporal_address


def test_no_secret_key_is_committed_in_the_local_stack() -> None:
    raw = load(LOCAL)
    for name in ("migrate", "worker"):
        keys = raw["services"][name]["environment"]["RATING_WEBHOOK_SECRET_KEYS"]
        assert keys == "${RATING_WEBHOOK_SECRET_KEYS:-}", "take it from the environment"


# ---------------------------------------------------------------------------------------------
# The production example


def test_the_production_example_runs_only_the_rating_services_from_a_pushed_image() -> None:
    raw = load(PRODUCTION)
    assert set(raw["services"]) == {"migrate", "server", "worker"}
    for name, service in services(PRODUCTION).items():
        assert "build" not in service, name
        assert service["image"] == PRODUCTION_ENV["RATING_IMAGE"], name
    with pytest.raises(KeyError, match="RATING_IMAGE"):
        resolved(raw, {k: v for k, v in PRODUCTION_ENV.items() if k != "RATING_IMAGE"})


def test_the_production_example_takes_every_secret_from_outside_the_file() -> None:
    raw = load(PRODUCTION)
    for name, service in raw["services"].items():
        env = service["environment"]
        assert env["RATING_DATABASE_URL"].startswith("${RATING_DATABASE_URL:?"), name
        if "RATING_WEBHOOK_SECRET_KEYS" in env:
            assert env["RATING_WEBHOOK_SECRET_KEYS"].startswith("${RATING_WEBHOOK_SECRET_KEYS:?")
    # Every file a setting names is a secret mounted where the setting says.
    declared = set(raw["secrets"])
    for name, service in services(PRODUCTION).items():
        mounted = {f"/run/secrets/{secret}" for secret in service.get("secrets", [])}
        assert set(service.get("secrets", [])) <= declared, name
        for variable, value in environment(service).items():
            if variable.endswith(("_FILE", "ROOTCERT")) and value.startswith("/"):
                assert value in mounted, f"{name}: {variable}={value} is not mounted"


def test_the_production_server_serves_tls_and_every_service_has_resource_hints() -> None:
    found = services(PRODUCTION)
    settings = Settings.from_env(environment(found["server"]))
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    for name in ("server", "worker"):
        resources = found[name]["deploy"]["resources"]
        assert resources["limits"]["cpus"] and resources["limits"]["memory"], name
        assert resources["reservations"]["memory"], name
    for name, service in found.items():
        env = environment(service)
        assert env["PGSSLMODE"] == "verify-full", f"{name} would talk to PostgreSQL in clear"
    # Metrics stay on the compose network; gRPC (TLS) is what the load balancer reaches.
    assert {container for _, _, container in published(found["server"])} == {
        port_of(settings.listen_address)
    }


# ---------------------------------------------------------------------------------------------
# The image and its build context


def test_the_image_installs_the_locked_dependencies_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    syncs = re.findall(r"^RUN uv sync (.*)$", dockerfile, re.M)
    assert syncs and all({"--frozen", "--no-dev"} <= set(args.split()) for args in syncs)
    assert dockerfile_entrypoint() == ["rating"]
    assert "HEALTHCHECK" not in dockerfile  # one image, three roles: each service checks its own


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_private() -> None:
    copied = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied += line.split()[1:-1]
    assert {"pyproject.toml", "uv.lock", "rating_service", "clients/python/rating_client"} <= set(
        copied
    )
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not docker_ignored(source), f"the Dockerfile copies {source}, which is ignored"
    for kept in (
        "rating_service/cli/__init__.py",
        "rating_service/examples/catalog.yaml",
        "clients/python/rating_client/client.py",
    ):
        assert not docker_ignored(kept), kept
    for private in (
        ".rating/demo-api-key",
        ".rating/pgdata/PG_VERSION",
        ".rating/webhook-secret-keys",
        ".git/HEAD",
        ".venv/bin/python",
        ".tools/bin/uv",
        "node_modules/@bufbuild/buf/package.json",
        ".env",
        "tests/unit/test_deployment_files.py",
        "bench/invoice_bench.py",
        ".hypothesis/examples/x",
        ".mypy_cache/3.11/x.json",
        "rating_service/__pycache__/cli.cpython-311.pyc",
        "rating_service/workflows/billing/__pycache__/x.cpython-311.pyc",
        "rating_service/stray.pyc",
    ):
        assert docker_ignored(private), f"{private} would be sent to the Docker daemon"


def test_the_dockerignore_matcher_follows_dockers_rules() -> None:
    assert _dockerignore_regex("**/*.py[cod]") == r"(?:.*/)?[^/]*\.py[cod]"
    assert re.fullmatch(_dockerignore_regex("*"), "a") and not re.fullmatch(
        _dockerignore_regex("*"), "a/b"
    )


# ---------------------------------------------------------------------------------------------
# What the files tell a reader to run


def test_the_commands_the_files_and_readme_suggest_are_real() -> None:
    texts = [(ROOT / name).read_text() for name in (LOCAL, PRODUCTION, "README.md")]
    suggested = re.findall(
        r"docker compose(?: -f (\S+))? (?:exec|run --rm) ([\w-]+) rating([^\n`]*)", "\n".join(texts)
    )
    assert suggested
    for file, service, args in suggested:
        assert service in services(file or LOCAL), f"no service {service} in {file or LOCAL}"
        check_rating_invocation(args.split("#")[0].split())


# ---------------------------------------------------------------------------------------------
# docker compose itself, where it is installed


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        version = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return version.returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="no `docker compose` plugin here")
@pytest.mark.parametrize("name", [LOCAL, PRODUCTION])
def test_docker_compose_accepts_the_file(name: str) -> None:
    env = {**os.environ, **(PRODUCTION_ENV if name == PRODUCTION else {})}
    done = subprocess.run(
        ["docker", "compose", "-f", name, "config", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
