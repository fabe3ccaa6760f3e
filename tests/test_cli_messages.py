"""The command line's messages: config values blamed on the file and key, command-line
advice instead of Python, "did you mean" for typos, and bad counts refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.test_cli import MODEL, run_cli


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "model.py").write_text(MODEL)
    return tmp_path


def _config(workdir: Path, body: str) -> str:
    (workdir / "scan.toml").write_text(textwrap.dedent(body))
    return "scan.toml"


@pytest.mark.parametrize(("line", "key"), [
    ('trials = "3"', "trials"),
    ('executor = "proceses"', "executor"),
    ('engines = "4"', "engines"),
    ('stale = "reus"', "stale"),
    ('retry_failed = "yes"', "retry_failed"),
    ('profile = "p"\nexecutor = "processes"', "profile"),
])
def test_a_bad_config_value_names_the_file_and_key_not_a_flag(workdir: Path, line: str,
                                                               key: str) -> None:
    config = _config(workdir, f'function = "model.py:simulate"\nstore = "s"\n{line}\n'
                              '[axes]\nx = "1:3:3"\n')
    result = run_cli("run", "--config", config, "--dry-run", cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert f"config file scan.toml, key {key}:" in result.stderr
    assert "argument --" not in result.stderr


def test_a_bad_function_in_a_config_names_the_file(workdir: Path) -> None:
    config = _config(workdir, 'function = "model.py:nope"\nstore = "s"\n[axes]\nx = "1:2:2"\n')
    result = run_cli("run", "--config", config, "--dry-run", cwd=workdir)
    assert result.returncode == 2
    assert "config file scan.toml, key function:" in result.stderr
    assert "has no function 'nope'" in result.stderr


def test_the_same_value_on_the_command_line_still_names_the_flag(workdir: Path) -> None:
    result = run_cli("run", "model.py:simulate", "--store", "s", "--axis", "x=1,2",
                     "--executor", "processes", "--profile", "p", cwd=workdir)
    assert result.returncode == 2
    assert "argument --profile:" in result.stderr and "config file" not in result.stderr


def test_a_flag_overrides_the_config_value_it_would_be_blamed_for(workdir: Path) -> None:
    config = _config(workdir, 'function = "model.py:simulate"\nstore = "s"\ntrials = "3"\n'
                              '[axes]\nx = "1:2:2"\n')
    result = run_cli("run", "--config", config, "--trials", "2", "--dry-run", cwd=workdir)
    assert result.returncode == 0, result.stderr


def test_space_errors_give_command_line_advice(workdir: Path) -> None:
    (workdir / "two.py").write_text("def f(k, x):\n    return {'y': k}\n")
    result = run_cli("run", "two.py:f", "--store", "s", "--axis", "k=1,2", "--axis", "j=1",
                     "--dry-run", cwd=workdir)
    assert result.returncode == 2
    assert "--axis x=VALUES" in result.stderr
    assert "remove --axis j" in result.stderr
    assert "grid(" not in result.stderr and "space *" not in result.stderr
    repeated = run_cli("run", "two.py:f", "--store", "s", "--axis", "k=1,1", "--axis", "x=1",
                       "--dry-run", cwd=workdir)
    assert repeated.returncode == 2 and "grid()" not in repeated.stderr
    assert "--axis k has the value 1 twice" in repeated.stderr


@pytest.mark.parametrize(("args", "usage", "suggestion"), [
    (["stauts", "x"], "usage: notebookscan [-h]", "did you mean status?"),
    (["status", "x", "--failres", "3"], "usage: notebookscan status", "did you mean --failures?"),
    (["run", "--dryrun"], "usage: notebookscan run", "did you mean --dry-run?"),
    (["export", "s", "o.nc", "--forse"], "usage: notebookscan export", "did you mean --force?"),
    (["run", "--stale", "reus"], "usage: notebookscan run", "did you mean reuse?"),
])
def test_typos_get_the_nearest_name_and_the_subcommands_usage(tmp_path: Path, args: list[str],
                                                              usage: str,
                                                              suggestion: str) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert suggestion in result.stderr
    assert result.stderr.startswith(usage), result.stderr


def test_an_unknown_config_key_suggests_the_nearest(workdir: Path) -> None:
    config = _config(workdir, 'function = "model.py:simulate"\nstor = "s"\n')
    result = run_cli("run", "--config", config, cwd=workdir)
    assert result.returncode == 2 and "did you mean store?" in result.stderr


def test_status_refuses_a_negative_failures_count(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    result = run_cli("status", "store", "--failures", "-1", cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --failures" in result.stderr and "0 or more" in result.stderr
