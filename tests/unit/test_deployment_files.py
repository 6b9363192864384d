"""docker-compose.yml and the Dockerfile agree with the code (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from rating_service.settings import Settings, documented_settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_the_stack_has_every_service_the_design_names() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "temporal", "temporal-ui", "migrate", "server", "worker"}


def test_every_rating_variable_in_compose_is_a_real_setting_that_parses() -> None:
    known = {name for name, _, _ in documented_settings()}
    for name, service in compose()["services"].items():
        env = environment(service)
        rating_vars = {k: v for k, v in env.items() if k.startswith("RATING_")}
        assert set(rating_vars) <= known, f"{name} sets unknown {set(rating_vars) - known}"
        if rating_vars:
            Settings.from_env(rating_vars)


def test_services_depend_only_on_services_that_exist_and_wait_for_health() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on missing {dependency}"
            wanted = rule["condition"]
            if wanted == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            else:
                assert wanted == "service_completed_successfully"


def test_the_rating_services_run_the_cli_the_code_provides() -> None:
    from click.testing import CliRunner

    from rating_service.cli import main

    services = compose()["services"]
    for name in ("migrate", "server", "worker"):
        assert services[name]["build"] == "."
        command = services[name]["command"]
        assert CliRunner().invoke(main, [*command, "--help"]).exit_code == 0, command
    assert services["migrate"]["command"] == ["db", "upgrade"]
    health = services["server"]["healthcheck"]["test"]
    assert health[:3] == ["CMD", "rating", "health"]


def test_published_ports_match_the_addresses_the_services_listen_on() -> None:
    services = compose()["services"]
    server_env = environment(services["server"])
    grpc_port = server_env["RATING_LISTEN_ADDRESS"].rsplit(":", 1)[1]
    metrics_port = server_env["RATING_METRICS_ADDRESS"].rsplit(":", 1)[1]
    published = {p.split(":")[1] for p in services["server"]["ports"]}
    assert {grpc_port, metrics_port} <= published
    assert server_env["RATING_LISTEN_ADDRESS"].startswith("0.0.0.0:")
    temporal_port = environment(services["worker"])["RATING_TEMPORAL_ADDRESS"].rsplit(":", 1)[1]
    assert f"{temporal_port}:{temporal_port}" in services["temporal"]["ports"]
    assert environment(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_the_database_url_matches_the_postgres_service() -> None:
    services = compose()["services"]
    postgres = environment(services["postgres"])
    url = environment(services["server"])["RATING_DATABASE_URL"]
    user, password, db = (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert url == f"postgresql://{user}:{password}@postgres:5432/{db}"


def test_the_image_installs_the_locked_dependencies_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in dockerfile
    assert 'ENTRYPOINT ["rating"]' in dockerfile
    for copied in ("rating_service", "workflows", "uv.lock", "pyproject.toml"):
        assert copied in dockerfile


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, _, _ in documented_settings() if f"`{name}`" not in readme]
    assert not missing


def test_the_readme_settings_table_shows_the_real_defaults() -> None:
    readme = (ROOT / "README.md").read_text()
    table = {
        row.group(1): (row.group(2), row.group(3))
        for row in re.finditer(
            r"^\| `(RATING_\w+)` \|\s*([^|]*?)\s*\|\s*([^|]*?)\s*\|$", readme, re.M
        )
    }
    shown = {name: table[name][0] for name, _, _ in documented_settings()}
    assert shown == {name: default for name, default, _ in documented_settings()}
    # The one setting whose empty value is not its default says so in both places.
    docs = {name: doc for name, _, doc in documented_settings()}
    assert "(empty: off)" in docs["RATING_METRICS_ADDRESS"]
    assert "(empty: off)" in table["RATING_METRICS_ADDRESS"][1]
