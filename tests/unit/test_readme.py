"""What the README shows is what the code does: its settings table."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from rating_service.settings import Settings, documented_settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

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
