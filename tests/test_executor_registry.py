"""The named executors: one table read by Scan.run, the command line and the widgets."""

from __future__ import annotations

import pytest

from notebookscan import cli
from notebookscan.cli.common import EXECUTORS
from notebookscan.cli.parser import build_parser
from notebookscan.errors import ExecutorError
from notebookscan.executors import resolve_executor
from notebookscan.executors.futures import FuturesExecutor
from notebookscan.executors.registry import (
    EXECUTOR_HELP,
    EXECUTOR_KINDS,
    EXECUTOR_NAMES,
    WIDGET_OPTIONS,
    executor_kind,
)
from notebookscan.executors.serial import SerialExecutor


def test_every_front_end_offers_exactly_the_registered_names():
    assert EXECUTOR_NAMES == ("local", "processes", "serial")
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    action = next(a for a in run._actions if "--executor" in a.option_strings)
    assert tuple(action.choices) == EXECUTOR_NAMES
    assert action.help == EXECUTOR_HELP
    assert EXECUTORS == EXECUTOR_NAMES
    assert tuple(name for _, name in WIDGET_OPTIONS) == EXECUTOR_NAMES
    for name, kind in EXECUTOR_KINDS.items():
        assert kind.name == name and kind.description in EXECUTOR_HELP


def test_names_resolve_through_the_table():
    executor, owned = resolve_executor("serial")
    assert isinstance(executor, SerialExecutor) and owned
    assert not executor_kind("serial").parallel
    executor, owned = resolve_executor("processes")
    try:
        assert isinstance(executor, FuturesExecutor) and owned
        assert executor_kind("processes").parallel
        assert not executor_kind("processes").needs_cluster
        assert executor_kind("local").needs_cluster and not executor_kind("local").owned
    finally:
        executor.shutdown()


@pytest.mark.parametrize("spec", ["gpu", "Serial", "", " processes"])
def test_an_unknown_name_is_an_error_that_lists_the_choices(spec):
    with pytest.raises(ExecutorError) as info:
        resolve_executor(spec)
    message = str(info.value)
    assert repr(spec) in message
    for name in EXECUTOR_NAMES:
        assert repr(name) in message


def test_unknown_executor_on_the_command_line_names_the_choices(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "model.py:f", "--store", "s", "--axis", "x=1", "--executor", "gpu"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for name in EXECUTOR_NAMES:
        assert name in err
