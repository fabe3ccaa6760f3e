"""Stored results from other code than the function scanned now are noticed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

import notebookscan as ns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = ns.grid(x=[1.0, 2.0, 3.0])


def _model(tmp_path, body: str, name: str = "drive", tag: str = "m"):
    """``name(x)`` returning ``body``, from its own file (so it has a source)."""
    path = tmp_path / f"{tag}_{abs(hash((body, name)))}.py"
    path.write_text(textwrap.dedent(f"""
        def {name}(x: float):
            return {body}
    """))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def _run(function, store, **options):
    return ns.Scan(function, SPACE, store=store).run(executor="serial", progress=False,
                                                     **options)


def _values(store) -> list[float]:
    return ns.open_store(store).result.values.tolist()


def test_an_edited_function_warns_and_reuses_by_default(tmp_path):
    store = tmp_path / "s"
    _run(_model(tmp_path, "x"), store)
    edited = _model(tmp_path, "10 * x")
    with pytest.warns(ns.StaleResultsWarning, match=r"3 stored point\(s\) came from other code"):
        progress = _run(edited, store).progress
    assert progress.done == 0 and _values(store) == [1.0, 2.0, 3.0]
    assert ns.Scan(edited, SPACE, store=store).stale().count == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(edited, store, stale="reuse")  # chosen: no warning
        _run(_model(tmp_path, "x"), store)  # the code that stored them: nothing stale


def test_error_refuses_before_running_anything(tmp_path):
    store = tmp_path / "s"
    _run(_model(tmp_path, "x"), store)
    shards = sorted(os.listdir(store / "shards"))
    with pytest.raises(ns.ScanError, match=r"Nothing was run.*new store"):
        _run(_model(tmp_path, "10 * x"), store, stale="error")
    assert sorted(os.listdir(store / "shards")) == shards
    with pytest.raises(ns.ScanError, match="stale must be one of"):
        _run(_model(tmp_path, "x"), store, stale="sometimes")


def test_recompute_runs_them_again_and_the_new_versions_are_read(tmp_path):
    """The recomputed rows must win over the stale ones for every reader (today: the
    later finished done row; the rule the store's version ordering must keep)."""
    store = tmp_path / "s"
    _run(_model(tmp_path, "x"), store)
    edited = _model(tmp_path, "10 * x")
    scan = ns.Scan(edited, SPACE + ns.grid(x=[4.0]), store=store)
    planned = scan.plan(stale="recompute")
    assert len(planned.to_run) == 4 and planned.stale.count == 3 and planned.stored == 0
    progress = scan.run(executor="serial", progress=False, stale="recompute").progress
    assert progress.done == 4
    assert _values(store) == [10.0, 20.0, 30.0, 40.0]
    assert ns.open_store(store, lazy=True).result.values.tolist() == [10.0, 20.0, 30.0, 40.0]
    assert scan.results().result.values.tolist() == [10.0, 20.0, 30.0, 40.0]
    assert scan.stale().count == 0
    ns.compact(store)
    assert _values(store) == [10.0, 20.0, 30.0, 40.0] and scan.stale().count == 0


def test_points_of_another_function_are_named_clearly(tmp_path):
    store = tmp_path / "s"
    _run(_model(tmp_path, "x", name="other_model"), store)
    scan = ns.Scan(_model(tmp_path, "x * x"), SPACE, store=store)
    report = scan.stale()
    assert report.count == 3 and report.other_function == 3
    assert "computed by another function" in report.message()
    assert "other_model" in report.message()
    with pytest.raises(ns.ScanError, match="another function"):
        scan.run(executor="serial", progress=False, stale="error")


def test_cli_run_offers_the_choice(tmp_path):
    model = tmp_path / "model.py"
    model.write_text("def drive(x: float):\n    return x\n")
    env = {**os.environ, "PYTHONPATH": ROOT}

    def run(*extra):
        return subprocess.run(
            [sys.executable, "-m", "notebookscan", "run", f"{model}:drive", "--store",
             str(tmp_path / "s"), "--axis", "x=1,2,3", "--executor", "serial", "--no-progress",
             *extra], capture_output=True, text=True, timeout=120, env=env)

    assert run().returncode == 0
    model.write_text("def drive(x: float):\n    return 10 * x\n")
    reused = run()
    assert reused.returncode == 0 and "3 stored point(s) came from other code" in reused.stderr
    assert "--stale=recompute" in reused.stderr
    refused = run("--stale=error")
    assert refused.returncode == 1 and "Nothing was run" in refused.stderr
    assert run("--stale=recompute").returncode == 0
    assert _values(tmp_path / "s") == [10.0, 20.0, 30.0]
    assert "other code" not in run().stderr
    from notebookscan.cli import parser, running
    from notebookscan.run import stale

    assert parser.STALE_CHOICES is running.STALE_CHOICES is stale.STALE_CHOICES


def test_run_monitor_shows_the_notice_and_passes_the_choice(tmp_path):
    from notebookscan.widgets import RunMonitor

    store = tmp_path / "s"
    _run(_model(tmp_path, "x"), store)
    scan = ns.Scan(_model(tmp_path, "10 * x"), SPACE, store=store)
    monitor = RunMonitor(scan, executor="serial")
    assert monitor.stale_count == 3 and monitor.stale_box.layout.display == "flex"
    assert "3 stored point(s)" in monitor.stale_html.value
    monitor.stale_choice.value = "error"
    monitor.run_button.click()
    monitor.wait(60)
    assert monitor.state == "error" and "Nothing was run" in monitor.message
    monitor.stale_choice.value = "recompute"
    monitor.run_button.click()
    assert monitor.wait(60).done == 3
    assert _values(store) == [10.0, 20.0, 30.0]
    assert monitor.stale_count == 0 and monitor.stale_box.layout.display == "none"
