"""What the README shows is what the code does: its settings table and `make run`'s output."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from rating_service.api.server import rpc_roles
from rating_service.cli import dev
from rating_service.core.encryption import new_key
from rating_service.runtime.embedded import TemporalDevServer
from rating_service.settings import Settings, documented_settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import api_table  # noqa: E402
from settings_table import BEGIN, END, render, rewrite  # noqa: E402


def readme() -> str:
    return (ROOT / "README.md").read_text()


# ---------------------------------------------------------------------------------------------
# Configuration: the settings table


def test_the_settings_table_is_the_one_the_settings_object_renders() -> None:
    text = readme()
    table = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert table == render(documented_settings()), (
        "README.md's settings table is stale: run `uv run python tools/settings_table.py`"
    )


def test_the_api_table_lists_every_rpc_with_the_roles_the_servicers_allow() -> None:
    text = readme()
    begin, end = api_table.BEGIN, api_table.END
    table = text[text.index(begin) + len(begin) : text.index(end)].strip()
    rows = rpc_roles()
    assert len(rows) > 40
    assert all(roles for _, _, roles in rows), "every RPC is open to some role"
    assert table == api_table.render(rows), (
        "README.md's API table is stale: run `uv run python tools/api_table.py`"
    )


def test_each_row_shows_a_settings_real_default_and_meaning() -> None:
    text = readme()
    rows = re.findall(r"^\| `(RATING_\w+)` \| (.*?) \| (.*) \|$", text, re.M)
    shown = {variable: (default, meaning) for variable, default, meaning in rows}
    for variable, default, meaning in documented_settings():
        assert shown[variable] == (default, meaning), variable
    # The defaults are what Settings really starts from, not what a doc line claims.
    assert shown["RATING_LISTEN_ADDRESS"][0] == Settings().listen_address
    assert shown["RATING_MAX_MESSAGE_BYTES"][0] == str(Settings().max_message_bytes)


def test_the_table_tool_rewrites_only_between_its_markers() -> None:
    before = f"intro\n{BEGIN}\n| stale |\n{END}\noutro\n"
    rows = [("RATING_X", "1", "a | b")]
    after = rewrite(before, rows)
    assert after == f"intro\n{BEGIN}\n{render(rows)}\n{END}\noutro\n"
    assert "a \\| b" in after  # a pipe in a doc line cannot split the row
    with pytest.raises(ValueError, match="markers"):
        rewrite("no markers here", rows)


# ---------------------------------------------------------------------------------------------
# `make run`: the sample output


def make_run_sample() -> list[str]:
    text = readme()
    start = text.index("`make run` prints where everything is:")
    block = text[start:].split("```", 2)[1]
    return block.strip("\n").splitlines()


def dev_step_titles() -> list[str]:
    """The titles of `with step(…)` in `run_dev`, in order, as `rating dev` prints them."""
    tree = ast.parse(Path(dev.__file__).read_text())
    run_dev = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "run_dev"
    )
    titles = []
    for node in ast.walk(run_dev):
        if not isinstance(node, ast.With | ast.AsyncWith):
            continue
        for item in node.items:
            call = item.context_expr
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "step":
                titles.append((call.lineno, _text_of(call.args[0])))
    return [title for _, title in sorted(titles)]


def _text_of(node: ast.expr) -> str:
    """A str constant or an f-string over dev.py's module constants, evaluated."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    assert isinstance(node, ast.JoinedStr), ast.dump(node)
    text = ""
    for part in node.values:
        if isinstance(part, ast.Constant):
            text += str(part.value)
            continue
        assert isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name)
        value = getattr(dev, part.value.id)
        text += repr(value) if part.conversion == ord("r") else str(value)
    return text


def test_the_sample_shows_every_step_rating_dev_takes_in_order() -> None:
    shown = [
        match.group(1)
        for line in make_run_sample()
        if (match := re.fullmatch(r"  • (.+) … ok \(\d+\.\ds\)", line))
    ]
    # `make run` sets neither RATING_DATABASE_URL nor RATING_TEMPORAL_ADDRESS: every step runs.
    assert shown == dev_step_titles()
    assert make_run_sample()[0].startswith("rating dev — data in ")


def test_the_step_reader_sees_the_steps_of_run_dev() -> None:
    titles = dev_step_titles()
    assert titles[0] == "starting PostgreSQL (embedded)"
    assert f"preparing the {dev.DEMO_TENANT!r} tenant" in titles
    assert "starting the gRPC server" in titles
    assert titles[-1] == "starting the web console"


def test_the_sample_shows_what_rating_dev_prints_once_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = make_run_sample()
    up = sample.index("The rating stack is up:")
    elided = sample.index("...")
    database_url = next(line.split()[1] for line in sample if line.startswith("  PostgreSQL"))
    demo_key = sample[elided - 1].strip()
    # `make run` from a checkout: default settings, the data dir relative to it, and the
    # webhook key `rating dev` made on its first run.
    monkeypatch.chdir(tmp_path)
    keys = new_key("dev")
    (tmp_path / ".rating").mkdir()
    (tmp_path / ".rating" / dev.WEBHOOK_KEY_FILE).write_text(keys + "\n")
    settings = Settings().replace(
        database_url=database_url,
        temporal_address="127.0.0.1:7233",
        webhook_secret_keys=keys,
        worker_metrics_address=dev.DEV_WORKER_METRICS,
    )
    temporal = TemporalDevServer(dev.TEMPORAL_PORT, dev.TEMPORAL_UI_PORT, None)
    dev.print_endpoints(
        settings,
        50051,
        9464,
        temporal,
        demo_key,
        console_url="http://127.0.0.1:8080",
        portal_link="http://127.0.0.1:8080/portal/pt1.x",
    )
    printed = capsys.readouterr().out.splitlines()[1:]  # its first line is blank
    assert sample[up:elided] == printed[: elided - up]
    assert sample[-1] == printed[-1]


# ---------------------------------------------------------------------------------------------
# Architecture: the table of where things live


def architecture_paths() -> set[str]:
    """Every path the README's architecture table names (loose modules beside their folder)."""
    text = readme()
    section = text[text.index("## Architecture") : text.index("## Configuration")]
    paths: set[str] = set()
    for row in re.findall(r"^\| (`[^|]+)\|", section, re.M):
        folder = ""
        for name in re.findall(r"`([^`]+)`", row):
            if "/" in name:
                folder = name.rsplit("/", 1)[0] + "/" if not name.endswith("/") else ""
                paths.add(name.rstrip("/"))
            else:
                paths.add(folder + name)
    return paths


def test_the_architecture_table_names_paths_that_exist() -> None:
    missing = sorted(p for p in architecture_paths() if not (ROOT / p).exists())
    assert not missing, f"README.md's architecture table names what is not there: {missing}"


def test_the_architecture_table_names_every_part_of_the_package() -> None:
    package = ROOT / "rating_service"
    parts = {
        f"rating_service/{p.name}"
        for p in package.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.name != "__init__.py")
    }
    unnamed = sorted(parts - architecture_paths())
    assert not unnamed, f"README.md's architecture table does not say what these are: {unnamed}"
