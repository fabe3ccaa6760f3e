"""docs/cli.md and the parser agree: every option of every subcommand is documented in
that subcommand's section, and every exit code the command uses is in the table."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from notebookscan.cli import common
from notebookscan.cli.parser import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _section(command: str) -> str:
    """The text of the ``## `command ...``` section of docs/cli.md (up to the next ##)."""
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.M)
    found = [p for p in parts if re.match(rf"[^\n]*`{command}\b", p)]
    assert found, f"docs/cli.md has no section for `{command}`"
    return "\n".join(found)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_option_is_documented_in_its_commands_section(command: str) -> None:
    parser = _subcommands()[command]
    options = sorted({o for a in parser._actions for o in a.option_strings
                      if o.startswith("--") and o != "--help"})
    section = _section(command)
    missing = [o for o in options if not re.search(rf"{re.escape(o)}(?![\w-])", section)]
    assert not missing, f"docs/cli.md, section {command}: options not documented: {missing}"


def test_every_exit_code_is_in_the_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    codes = {name: value for name, value in vars(common).items() if name.startswith("EXIT_")}
    assert len(codes) >= 6
    missing = [f"{name} = {value}" for name, value in codes.items()
               if not re.search(rf"^\| {value} \|", text, flags=re.M)]
    assert not missing, f"exit codes missing from the table in docs/cli.md: {missing}"


def test_the_documented_quoting_keeps_values_text() -> None:
    from notebookscan.cli.inputs import _axis_from_config, parse_axis

    text = DOC.read_text(encoding="utf-8")
    assert "--axis 'id=\"007\"'" in text and "id = '\"007\"'" in text
    assert parse_axis('id="007"') == ("id", "007")
    assert parse_axis("id='007'") == ("id", "007")
    assert parse_axis('tag="1","2"') == ("tag", ["1", "2"])
    assert _axis_from_config("id", '"007"', log=False, path="scan.toml") == "007"
    assert _axis_from_config("id", "007", log=False, path="scan.toml") == 7
    assert _axis_from_config("tag", ["1", "2"], log=False, path="scan.toml") == ["1", "2"]


def test_config_paths_are_relative_to_the_current_directory(tmp_path: Path) -> None:
    # the documented rule: a config in a subdirectory names paths from where the command runs
    from tests.test_cli import MODEL, run_cli

    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "scan.toml").write_text(
        'function = "model.py:simulate"\nstore = "results/sim"\n[axes]\nx = "1:2:2"\n')
    result = run_cli("run", "--config", "conf/scan.toml", "--executor", "serial", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results" / "sim").is_dir() and not (tmp_path / "conf" / "results").exists()
    assert "relative to the current directory" in DOC.read_text(encoding="utf-8")
