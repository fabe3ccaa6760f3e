"""The widgets without a browser: set values, click buttons, check space, scan and store.

Scans run on ``executor="serial"`` (in-process) or ``"processes"``; nothing here needs
an ipyparallel cluster or a Jupyter kernel. Outside a kernel the widgets update at once
(no event loop to hand updates to), so assertions can follow ``monitor.wait()``.
"""

from __future__ import annotations

import html
import math
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

import notebookscan as ns
import notebookscan.models as models

pytest.importorskip("ipywidgets")

from notebookscan.widgets import (
    Explorer,
    LivePlot,
    RunMonitor,
    ScanApp,
    SweepBuilder,
    builder,
    scan_app,
)
from notebookscan.widgets._model import Exclusion, ParameterSpec, SweepSpec
from notebookscan.widgets._ui import Throttle, UiThread


def model(k: float, tau: float = 0.01, method: str = "rk4", seed: int = 0):
    rng = np.random.default_rng(seed)
    return {"rate": k * tau * 100 + rng.normal(0, 0.1), "cv": 1.0 / (1.0 + k)}


def fragile(k: float, tau: float = 0.01, seed: int = 0):
    if k > 2:
        raise ValueError(f"unstable at k={k}")
    return {"rate": k * tau}


def slow(k: float, delay: float = 0.05):
    time.sleep(delay)
    return {"rate": k}


def failure_rows(monitor) -> str:
    """The HTML of every failed point's row shown by ``monitor``."""
    return "".join(row.value for group in monitor.failure_groups.children
                   for row in group.children[1].children)


def counts(store) -> Counter:
    table = ns.Store(store).table()
    return Counter(table.bookkeeping["status"].tolist())


# --------------------------------------------------------------------------- the form

def test_rows_come_from_the_signature(tmp_path):
    b = builder(model, store=tmp_path / "s")
    assert list(b.rows) == ["k", "tau", "method"]  # seed is supplied by the scan
    spec = b.spec
    assert [p.kind for p in spec.parameters] == ["float", "float", "str"]
    assert spec.parameter("k").mode == "linear"  # no default: a range to start from
    assert spec.parameter("tau").mode == "fixed" and spec.parameter("tau").value == "0.01"
    assert spec.parameter("method").value == "rk4"
    assert b.rows["method"].mode.options == (("fixed value", "fixed"),
                                             ("list of values", "list"))
    assert b.space is not None and len(b.space) == 5
    assert b.spec.stored == 0


def test_each_mode_gives_the_expected_axis():
    p = ParameterSpec(name="k", kind="float")
    p.set(mode="linear", low=0, high=1, count=3)
    assert p.axis == (0.0, 0.5, 1.0)
    p.set(mode="log", low=1, high=100, count=3)
    assert p.axis == (1.0, 10.0, 100.0)
    p.set(mode="list", values="0.1, 0.3 0.2")
    assert p.axis == (0.1, 0.3, 0.2)
    p.set(mode="fixed", value="2.5")
    assert p.axis == (2.5,)
    p.set(mode="random", low=0, high=2)
    assert p.axis is None and p.bounds == (0.0, 2.0) and p.error == ""
    n = ParameterSpec(name="n", kind="int", mode="log", low=1, high=1000, count=4)
    assert n.axis == (1, 10, 100, 1000)
    b = ParameterSpec(name="flag", kind="bool", mode="list", values="False, True")
    assert b.axis == (False, True)


@pytest.mark.parametrize(("fields", "message"), [
    ({"mode": "linear", "low": 2, "high": 1}, "min must be below max"),
    ({"mode": "linear", "low": 0, "high": 1, "count": 0}, "count must be at least 1"),
    ({"mode": "log", "low": 0, "high": 1, "count": 3}, "a log range needs min > 0"),
    ({"mode": "list", "values": "1, x"}, "'x' is not a number"),
    ({"mode": "list", "values": "1, 2, 1"}, "1.0 is listed twice"),
    ({"mode": "list", "values": " "}, "enter one or more values"),
    ({"mode": "fixed", "value": "inf"}, "not a finite number"),
])
def test_invalid_fields_give_inline_errors(tmp_path, fields, message):
    b = SweepBuilder(model, store=tmp_path / "s")
    row = b.rows["k"]
    for name, value in fields.items():
        getattr(row, {"low": "low", "high": "high", "count": "count", "mode": "mode",
                      "values": "values", "value": "value"}[name]).value = value
    assert message in html.unescape(row.error.value)
    assert b.space is None
    assert "fix the field of k" in b.message.value
    with pytest.raises(ValueError, match="the form has an error"):
        b.scan()


def test_a_valid_edit_clears_the_error(tmp_path):
    b = SweepBuilder(model, store=tmp_path / "s")
    b.rows["k"].high.value = -1
    assert b.space is None
    b.rows["k"].high.value = 3
    assert b.rows["k"].error.value == "" and b.message.value == ""
    assert len(b.space) == 5


def test_trials_samples_and_exclusions(tmp_path):
    b = SweepBuilder(model, store=tmp_path / "s")
    b.rows["k"].mode.value = "random"
    assert b.sampling.layout.display is None  # the sampling options appear
    b.samples.value, b.method.value, b.seed.value = 8, "sobol", 3
    b.trials.value = 2
    space = b.space
    assert len(space) == 16 and space.layout.kind == "points"
    # tau and method are at their defaults: the function supplies them
    assert space.keys() == (ns.sample(8, method="sobol", seed=3, k=(0.0, 1.0))
                            * ns.trials(2)).keys()
    b.trials.value = 0
    assert "trials must be at least 1" in b.trials_error.value and b.space is None
    b.trials.value = 1
    b.rows["k"].mode.value = "list"
    b.rows["k"].values.value = "1, 2, 3"
    b.rows["method"].mode.value = "list"
    b.rows["method"].values.value = "euler, rk4"
    b.exclusions.value = "k > 2 and method == 'euler'\nk == 1"
    assert b.spec.exclusions_error == ""
    assert sorted((p["k"], p["method"]) for p in b.space) == [
        (2.0, "euler"), (2.0, "rk4"), (3.0, "rk4")]
    b.exclusions.value = "k >> 2"
    assert "only comparisons" in b.exclusions_error.value and b.space is None
    b.exclusions.value = "q > 2"
    assert "'q' is not a parameter" in html.unescape(b.exclusions_error.value)
    b.exclusions.value = "k > 0"
    assert "leave no point" in b.message.value


def test_exclusion_rules():
    rule = Exclusion("amp == 0 and not freq >= 2; amp < -1", names=("amp", "freq"))
    assert not rule({"amp": 0, "freq": 1}) and rule({"amp": 0, "freq": 2})
    assert not rule({"amp": -3, "freq": 5}) and rule({"amp": 1, "freq": 1})
    assert rule.__qualname__ == "exclude[amp == 0 and not freq >= 2; amp < -1]"
    assert Exclusion.from_qualname(rule.__qualname__, ("amp", "freq")).rules == rule.rules
    assert Exclusion.from_qualname("<lambda>", ("amp",)) is None
    with pytest.raises(ValueError, match="compare parameters with numbers"):
        Exclusion("amp == freq.real", names=("amp", "freq"))
    with pytest.raises(ValueError, match="cannot be read"):
        Exclusion("amp ==", names=("amp",))
    assert Exclusion("method < 3", names=("method",))({"method": "rk4"})  # no TypeError


def test_counts_and_estimate_follow_the_store(tmp_path):
    store = tmp_path / "s"
    b = SweepBuilder(fragile, store=store, workers=2)
    b.rows["k"].low.value, b.rows["k"].high.value, b.rows["k"].count.value = 1, 4, 4
    assert (b.spec.size, b.spec.stored) == (4, 0)
    assert "time per point not measured yet" in b.summary.value
    scan = b.scan()
    assert b.scan() is scan  # the same Scan while the form is unchanged
    scan.run(executor="serial", progress=False)
    b.refresh()
    assert (b.spec.stored, b.spec.failed_before) == (2, 2)
    b.rows["k"].count.value = 7  # 1, 1.5, ..., 4: 1, 2, 3, 4 are stored already
    assert (b.spec.size, b.spec.stored, b.spec.failed_before) == (7, 2, 2)
    b.spec.measure_from_store()
    assert b.spec.seconds_per_point > 0
    assert math.isclose(b.spec.estimate, 3 * b.spec.seconds_per_point / 2)
    assert 'data-to-run="3"' in b.summary.value and "2 workers" in b.summary.value
    assert b.scan() is not scan


def test_reattach_fills_the_form_from_the_store(tmp_path):
    store = tmp_path / "s"
    space = (ns.grid(k=np.linspace(1, 3, 5), tau=[0.01, 0.02], method="rk4")
             * ns.trials(2)).where(Exclusion("k > 2 and tau > 0.015", ("k", "tau", "method")))
    ns.Scan(model, space, store).run(executor="serial", progress=False)
    b = SweepBuilder(model, store=store)
    assert b.restored == "Form filled from the store's last run."
    k = b.spec.parameter("k")
    assert (k.mode, k.low, k.high, k.count) == ("linear", 1.0, 3.0, 5)
    assert b.spec.parameter("tau").values == "0.01, 0.02"
    assert b.trials.value == 2
    assert b.exclusions.value == "k > 2 and tau > 0.015"
    assert b.space.keys() == space.keys()
    assert (b.spec.size, b.spec.stored) == (len(space), len(space))


def test_reattach_fills_the_form_from_long_axes_stored_as_rules(tmp_path):
    store = tmp_path / "s"
    space = ns.grid(k=np.linspace(1, 3, 101), tau=np.geomspace(0.01, 0.1, 65), method="rk4")
    ns.Scan(model, space, store).run(executor="serial", progress=False)
    (run,) = ns.Store(store).table().runs.values()
    assert run["space"]["node"]["axes"]["k"] == {"linspace": [1.0, 3.0, 101]}
    b = SweepBuilder(model, store=store)
    assert b.restored == "Form filled from the store's last run."
    k, tau = b.spec.parameter("k"), b.spec.parameter("tau")
    assert (k.mode, k.low, k.high, k.count) == ("linear", 1.0, 3.0, 101)
    assert (tau.mode, tau.count) == ("log", 65)
    assert b.space.keys() == space.keys()
    assert b.spec.stored == len(space)


def test_reattach_keeps_a_refined_space_until_the_form_is_edited(tmp_path):
    store = tmp_path / "s"
    scan = ns.Scan(model, ns.grid(k=[1.0, 2.0], tau=0.01, method="rk4"), store)
    scan.run(executor="serial", progress=False)
    scan.refine(k=[1.0, 1.5, 2.0]).run(executor="serial", progress=False)
    b = SweepBuilder(model, store=store)
    assert b.spec.base_space is not None
    assert "Using the space of the store's last run" in html.unescape(b.summary.value)
    assert sorted(p["k"] for p in b.space) == [1.0, 1.5, 2.0]
    assert b.spec.stored == 3
    b.rows["k"].values.value = "1, 2, 3"  # editing the form replaces it
    assert b.spec.base_space is None and len(b.space) == 3


def test_the_builder_rejects_a_store_of_other_parameters(tmp_path):
    store = tmp_path / "s"
    ns.Scan(slow, ns.grid(k=[1.0], delay=0.0), store).run(executor="serial", progress=False)
    b = SweepBuilder(model, store=store)
    assert b.spec.stored == 0
    monitor = RunMonitor(scan_factory=b.scan, executor="serial")
    monitor.run_button.click()
    assert monitor.state == "error"
    assert "holds parameters" in monitor.message_html.value


def test_sweepspec_without_widgets():
    spec = SweepSpec.for_function(lambda a, b=2, flag=True: a)
    assert [(p.name, p.kind, p.mode) for p in spec.parameters] == [
        ("a", "float", "linear"), ("b", "int", "fixed"), ("flag", "bool", "fixed")]
    assert spec.space.names == ("a",)  # b and flag are left at their defaults


# --------------------------------------------------------------------------- running

def test_run_monitor_runs_in_the_background_and_counts(tmp_path):
    scan = ns.Scan(fragile, ns.grid(k=[1.0, 2.0, 3.0, 4.0]) * ns.trials(2), tmp_path / "s")
    monitor = RunMonitor(scan, executor="serial")
    assert monitor.state == "idle" and monitor.stop_button.disabled
    monitor.run_button.click()
    progress = monitor.wait(timeout=30)
    assert monitor.state == "finished"
    assert (monitor.done, monitor.failed, monitor.total, monitor.remaining) == (4, 4, 8, 0)
    assert progress.done == 4
    assert 'data-state="finished"' in monitor.progress_html.value
    assert 'data-count="4"' in monitor.failures_html.value
    assert "ValueError: unstable at k=3.0" in failure_rows(monitor)
    assert "Traceback" in failure_rows(monitor)
    assert monitor.workers == 1 and monitor.busy == 0
    assert not monitor.run_button.disabled and monitor.stop_button.disabled
    # a second run has nothing to do; failed points are kept unless asked
    monitor.run_button.click()
    monitor.wait(timeout=30)
    assert monitor.total == 0 and monitor.skipped == 8
    assert "failed in earlier runs" in monitor.message_html.value
    monitor.retry.value = True
    monitor.run_button.click()
    monitor.wait(timeout=30)
    assert monitor.total == 4 and monitor.failed == 4


def test_a_flood_of_failures_is_bounded_and_throttled(tmp_path):
    scan = ns.Scan(fragile, ns.grid(k=np.linspace(3, 4, 600)), tmp_path / "s")
    monitor = RunMonitor(scan, executor="serial")
    monitor.run_button.click()
    monitor.wait(timeout=60)
    assert monitor.failed == 600 and monitor.failures_total == 600
    assert failure_rows(monitor).count("<details") == 50
    assert "and 550 more" in monitor.failures_html.value
    assert monitor._failures_throttle.calls < 20
    assert monitor._progress_throttle.calls < 60


def test_stop_keeps_what_finished_and_resume_runs_the_rest(tmp_path):
    store = tmp_path / "s"
    scan = ns.Scan(slow, ns.grid(k=np.arange(30.0), delay=0.05), store)
    monitor = RunMonitor(scan, executor="processes")
    monitor.run_button.click()
    deadline = time.monotonic() + 30
    while scan.progress is None or scan.progress.done < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    monitor.stop_button.click()
    assert monitor.state == "stopping" and monitor.stop_button.description == "Stop now"
    monitor.wait(timeout=30)
    assert monitor.state == "stopped"
    assert not monitor.resume_button.disabled and monitor.running == 0
    assert 4 <= monitor.done < 30
    stored = counts(store)
    assert stored == Counter({"done": monitor.done})
    keys = ns.Store(store).table().bookkeeping["key"].tolist()
    assert len(keys) == len(set(keys))
    monitor.resume_button.click()
    monitor.wait(timeout=60)
    assert monitor.state == "finished" and monitor.total == 30 - stored["done"]
    assert counts(store) == Counter({"done": 30})


def test_errors_are_shown_not_raised(tmp_path):
    def broken_factory():
        raise ValueError("the form has an error: fix the field of k")

    monitor = RunMonitor(scan_factory=broken_factory, executor="serial")
    monitor.run_button.click()
    assert monitor.state == "error"  # in the error style, not a grey note
    assert "fix the field of k" in monitor.message_html.value
    assert "nbscan-error" in monitor.message_html.value
    scan = ns.Scan(slow, ns.grid(k=[1.0], delay=0.0), tmp_path / "s")
    odd = RunMonitor(scan, executor=object())
    odd.run_button.click()
    assert odd.state == "error"
    assert "cannot run a scan" in odd.message_html.value


def test_throttle_merges_bursts_and_keeps_the_last_call():
    calls = []
    throttle = Throttle(lambda: calls.append(time.monotonic()), interval=0.2, ui=UiThread())
    for _ in range(100):
        throttle.request()
    assert len(calls) == 1
    time.sleep(0.35)
    assert len(calls) == 2  # the trailing call shows the last state
    throttle.now()
    assert len(calls) == 3


# --------------------------------------------------------------------------- live plot

def test_live_plot_redraws_as_batches_land_at_most_twice_a_second(tmp_path):
    scan = ns.Scan(slow, ns.grid(k=np.arange(60.0), delay=0.02), tmp_path / "s")
    live = LivePlot(scan)
    start = time.monotonic()
    scan.run(executor="serial", progress=False, flush_every=1)
    elapsed = time.monotonic() - start
    assert live.wait_idle(10)
    time.sleep(0.05)
    assert 2 <= live.renders <= elapsed / 0.5 + 2
    assert "image/png" in live.output.outputs[0]["data"]
    assert "60 done, 0 failed of 60 points" in live.note.value
    assert (live.var.value, live.x.value, live.y.value) == ("rate", "k", "—")
    live.close()


def test_live_plot_choices(tmp_path):
    scan = ns.Scan(model, ns.grid(k=[1.0, 2.0], tau=[0.01, 0.02], method="rk4") * ns.trials(2),
                   tmp_path / "s")
    live = LivePlot(scan, var="cv", y="tau")
    scan.run(executor="serial", progress=False)
    live.redraw()
    assert (live.var.value, live.x.value, live.y.value) == ("cv", "k", "tau")
    assert list(live.var.options) == ["rate", "cv"]
    live.close()


# --------------------------------------------------------------------------- explorer

@pytest.fixture
def finished_scan(tmp_path):
    space = ns.grid(k=[1.0, 2.0, 3.0, 4.0], tau=[0.01, 0.02], method="rk4") * ns.trials(3)
    scan = ns.Scan(fragile_model, space, tmp_path / "store")
    scan.run(executor="serial", progress=False)
    return scan


def fragile_model(k: float, tau: float = 0.01, method: str = "rk4", seed: int = 0):
    if k == 4.0 and tau == 0.02:
        raise ValueError("unstable")
    return model(k, tau, method, seed)


def test_explorer_controls_from_a_store_path(finished_scan):
    ex = Explorer(str(finished_scan.store.path), interactive=False)
    assert list(ex.var.options) == ["rate", "cv"]
    assert (ex.var.value, ex.x.value, ex.y.value) == ("rate", "k", "—")
    assert list(ex.sliders) == ["tau"] and ex.average.value
    assert "fixed: method = rk4" in ex.slice_box.children[-1].value
    fig = ex.figure()
    assert fig.axes[0].get_ylabel() == "rate (mean over 3 trials)"
    ex.sliders["tau"].value = 0.02
    assert ex.figure().axes[0].get_title() == "rate at tau=0.02, method=rk4"
    ex.average.value = False
    assert set(ex.sliders) == {"tau", "trial"}
    ex.y.value = "tau"
    assert set(ex.sliders) == {"trial"} and len(ex.figure().axes) == 2
    ex.mode.value = "status"
    # trials are not averaged: the map shows the chosen trial
    assert ex.figure().axes[0].get_title() == "status: 7 done, 1 failed, 0 missing"
    ex.average.value = True
    assert ex.figure().axes[0].get_title() == "status: 21 done, 3 failed, 0 missing"
    assert "image/png" in ex.output.outputs[0]["data"]


def test_explorer_on_a_dataset_with_points_layout(tmp_path):
    scan = ns.Scan(model, ns.sample(20, seed=2, k=(0.0, 1.0), tau=(0.01, 0.02))
                   * ns.grid(method="rk4"), tmp_path / "s")
    scan.run(executor="serial", progress=False)
    ex = Explorer(scan.results(), interactive=False)
    assert ex.refine is None
    assert list(ex.x.options) == ["k", "tau", "method"]
    ex.y.value = "tau"
    assert ex.figure().axes[0].get_title() == "rate (20 points)"
    assert ex.error.value == ""


def test_explorer_reports_a_bad_path_inline(tmp_path):
    ex = Explorer(str(tmp_path / "nope"), interactive=False)
    assert "is not a notebookscan store" in ex.error.value


def test_refine_runs_only_new_points_into_the_same_store(finished_scan):
    monitor = RunMonitor(finished_scan, executor="serial")
    ex = Explorer(finished_scan, monitor=monitor, interactive=False)
    monitor.on_end(lambda m: ex.reload())
    refine = ex.refine
    assert set(refine.axes) == {"k", "tau"}
    assert refine.button.disabled
    row = refine.axes["k"]
    row["use"].value = True
    row["span"].value = (1.0, 2.0)
    row["count"].value = 5  # 1, 1.25, 1.5, 1.75, 2: three new values
    assert refine.preview == 3 * 2 * 3 and not refine.button.disabled
    refine.trials.value = 4  # and four trials in the refined part
    assert refine.preview == 5 * 2 * 4 - 2 * 2 * 3
    row["span"].value = (1.5, 1.5)
    assert "choose a range with min below max" in refine.preview_html.value
    assert refine.button.disabled
    row["span"].value = (1.0, 2.0)
    expected = refine.preview
    refine.button.click()
    monitor.wait(timeout=60)
    assert monitor.total == expected and monitor.skipped == 4 * 2 * 3
    data = finished_scan.results()
    assert data.sizes["k"] == 7 and data.sizes["trial"] == 4
    assert int(data.ns_status.isin(["done", "failed"]).sum()) == 4 * 2 * 3 + 28
    assert ex.view.sizes["k"] == 7  # the explorer shows old and new together
    assert refine.preview == 0


# --------------------------------------------------------------------------- the app

def test_app_runs_and_reattaches(tmp_path):
    store = tmp_path / "s"
    app = scan_app(fragile, store=store, executor="serial")
    assert isinstance(app, ScanApp) and app.tabs.titles == ("1 · Define", "2 · Run",
                                                            "3 · Explore")
    app.builder.rows["k"].low.value = 1
    app.builder.rows["k"].high.value = 4
    app.builder.rows["k"].count.value = 4
    app.run_shortcut.click()
    app.monitor.wait(timeout=30)
    assert app.tabs.selected_index == 1
    assert 'data-done="2"' in app.header.value and 'data-total="4"' in app.header.value
    assert app.explorer.var.value == "rate"
    assert app.live.wait_idle() and app.live.renders >= 1

    # a new app (as in a new kernel) on the same store: form restored, counts shown
    again = ScanApp(fragile, store=store, executor="serial")
    assert again.builder.spec.parameter("k").count == 4
    assert 'data-done="2"' in again.header.value
    assert again.monitor.resume_button.disabled  # nothing missing (2 done, 2 failed)
    again.builder.rows["k"].count.value = 7  # finer: 3 new points, resumable
    assert not again.monitor.resume_button.disabled
    assert "the store holds 4 of 7 points; Resume runs the other 3" in again.monitor.message
    assert again.live.renders == 1  # the earlier results, before anything runs
    again.monitor.resume_button.click()
    again.monitor.wait(timeout=30)
    assert again.monitor.total == 3
    assert counts(store) == Counter({"done": 3, "failed": 4})  # 1.5 (done), 2.5/3.5 fail


def test_app_from_a_scan_keeps_that_scan(tmp_path):
    scan = ns.Scan(model, ns.grid(k=[1.0, 2.0], tau=0.01, method="rk4"), tmp_path / "s")
    app = ScanApp(scan, executor="serial")
    assert app.builder.scan() is scan
    app.monitor.run_button.click()
    app.monitor.wait(timeout=30)
    assert app.monitor.scan is scan and scan.status()["done"] == 2


def _view_id(output) -> str:
    return output.outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]


def test_explorer_uses_ipympl_when_installed(finished_scan):
    """The zoomable path: one canvas, kept for every redraw (the front end keeps its
    view, no "Loading widget…"), with the new figure, zoom and pan working on it."""
    pytest.importorskip("ipympl")
    ex = Explorer(finished_scan)
    assert ex.interactive
    first = _view_id(ex.output)
    canvas = ex.output._nbscan_canvas
    old = canvas.figure
    ex.y.value = "tau"
    assert _view_id(ex.output) == first
    assert ex.output._nbscan_canvas is canvas
    fig = canvas.figure
    assert fig is not old and fig.canvas is canvas and old.canvas is not canvas
    assert fig.axes[0].get_ylabel().startswith("tau")
    # the toolbar's zoom/pan handlers are connected to the figure now shown
    handlers = fig._canvas_callbacks.callbacks["button_press_event"].values()
    assert any(getattr(ref(), "__func__", None) is type(canvas.toolbar)._zoom_pan_handler
               for ref in handlers)
    assert canvas.toolbar._nav_stack() is None  # zoom history of the old figure dropped
    # the toolbar floats at the top left: a margin left of the figure holds it
    assert canvas.toolbar_position == "left" and canvas.layout.padding.endswith("40px")
    assert not canvas.header_visible


def test_explorer_png_path_replaces_the_image(finished_scan):
    ex = Explorer(finished_scan, interactive=False)
    first = ex.output.outputs[0]["data"]["image/png"]
    ex.y.value = "tau"
    assert ex.output.outputs[0]["data"]["image/png"] != first
    assert "application/vnd.jupyter.widget-view+json" not in ex.output.outputs[0]["data"]
    assert not hasattr(ex.output, "_nbscan_canvas")


def test_a_closed_canvas_is_replaced(finished_scan):
    pytest.importorskip("ipympl")
    ex = Explorer(finished_scan)
    ex.output._nbscan_canvas.close()
    first = _view_id(ex.output)
    ex.y.value = "tau"
    assert _view_id(ex.output) != first


def test_errors_wrap_beside_their_fields(tmp_path):
    """Every invalid field has its own error, in a box that takes the room left in the
    row (so a long message wraps instead of squeezing the fields)."""
    b = SweepBuilder(models.firing_rate, store=tmp_path / "s")
    b.rows["k"].high.value = -1
    b.rows["tau"].value.value = "abc"
    b.rows["n_neurons"].value.value = "1.5"
    b.trials.value = 0
    for name in ("k", "tau", "n_neurons"):
        row = b.rows[name]
        assert "nbscan-error" in row.error.value
        assert row.error.layout.flex == "1 1 0%" and row.error.layout.min_width == "0"
        assert {c.layout.flex for c in (row.label, row.mode, row.fields)} == {"0 0 auto"}
    assert "nbscan-error" in b.trials_error.value and b.trials_error.layout.flex == "1 1 0%"
    assert b.rows["duration"].error.value == ""


def test_disabled_buttons_are_styled(tmp_path):
    """Builder and monitor each carry the style sheet that greys disabled buttons."""
    from notebookscan.widgets._ui import STYLE

    assert ".jupyter-button:disabled" in STYLE
    b = SweepBuilder(model, store=tmp_path / "s")
    for widget in (b, RunMonitor(scan_factory=b.scan, executor="serial")):
        styles = [c for c in widget.children if "nbscan-style" in c._dom_classes]
        assert len(styles) == 1 and STYLE in styles[0].value
        assert styles[0].layout.display == "none"


def test_core_does_not_import_widgets():
    code = ("import sys; sys.modules['ipywidgets'] = None; import notebookscan; "
            "import notebookscan.plotting; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# --------------------------------------------------------------------------- issue 15

@pytest.mark.parametrize("name", models.__all__)
def test_every_public_model_builds_a_valid_scan(tmp_path, name):
    function = getattr(models, name)
    spec = SweepSpec.for_function(function, store=str(tmp_path / "s"))
    assert spec.error == "" and spec.space is not None and spec.size > 0
    spec.space.validate(function)
    spec.space.describe()
    # the parameters left at their defaults are not one-value axes
    at_default = {p.name for p in spec.parameters if p.at_default}
    assert at_default and not at_default & set(spec.space.names)
    assert all(len(set(values)) > 1 for values in spec.space.columns().values())
    app = ScanApp(function, store=tmp_path / "s", executor="serial")
    assert app.builder.spec.error == "" and not app.run_shortcut.disabled
    assert not app.monitor.run_button.disabled


def test_defaults_are_fixed_values_not_length_one_dims(tmp_path):
    b = SweepBuilder(model, store=tmp_path / "s")
    b.rows["k"].count.value = 3
    b.scan().run(executor="serial", progress=False)
    ds = ns.open_store(tmp_path / "s")
    assert dict(ds.sizes) == {"k": 3}  # tau and method came from the function's defaults
    assert "tau" not in ds.coords and "method" not in ds.coords
    np.testing.assert_allclose(ds["cv"].values, 1.0 / (1.0 + np.array([0.0, 0.5, 1.0])))
    # a default changed in the form is an axis; a store of earlier runs keeps its names
    b.rows["tau"].value.value = "0.02"
    assert b.space.names == ("k", "tau")
    old = tmp_path / "old"
    ns.Scan(model, ns.grid(k=[1.0], tau=0.01), old).run(executor="serial", progress=False)
    again = SweepBuilder(model, store=old)
    assert again.space.names == ("k", "tau") and again.spec.stored == 1


def test_widget_shows_the_scans_own_space(tmp_path):
    space = ns.grid(k=np.linspace(1, 20, 20), tau=[0.005, 0.01])
    scan = ns.Scan(models.firing_rate, space, tmp_path / "s")
    app = scan.widget(executor="serial")
    spec = app.builder.spec
    k, tau = spec.parameter("k"), spec.parameter("tau")
    assert (k.mode, k.low, k.high, k.count) == ("linear", 1.0, 20.0, 20)
    assert tau.mode == "list" and tau.axis == (0.005, 0.01)
    assert spec.base_space is None  # the form says it all
    assert spec.size == len(scan.space) == 40
    assert 'data-size="40"' in app.builder.summary.value
    assert spec.space.keys() == scan.space.keys() and app.builder.scan() is scan
    # a scan naming a parameter at its default keeps it: the form gives the same space
    fixed = ns.Scan(model, ns.grid(k=[1.0, 2.0], tau=0.01), tmp_path / "t")
    same = ScanApp(fixed, executor="serial").builder.spec
    assert same.space.keys() == fixed.space.keys() and same.space.names == ("k", "tau")


def test_a_linear_range_from_zero_runs(tmp_path):
    b = SweepBuilder(model, store=tmp_path / "s")
    b.rows["k"].low.value, b.rows["k"].high.value, b.rows["k"].count.value = 0.0, 1.0, 120
    assert b.spec.error == "" and len(b.space) == 120
    b.space.describe()  # raised "Geometric sequence cannot include zero"
    b.scan().run(executor="serial", progress=False)
    assert ns.Scan(model, b.space, tmp_path / "s").status()["done"] == 120


def test_a_space_the_form_cannot_show_is_named_in_the_summary(tmp_path):
    space = ns.grid(k=[1.0, 2.0]) + ns.grid(k=[3.0])
    app = ScanApp(ns.Scan(model, space, tmp_path / "s"), executor="serial")
    assert app.builder.spec.base_space is space and app.builder.spec.size == 3
    assert "more than the form can show" in app.builder.summary.value
    app.builder.rows["k"].values.value = "1, 2, 5, 6"  # an edit replaces it, as the note says
    assert app.builder.spec.base_space is None and app.builder.spec.size == 4


def test_a_default_the_form_cannot_hold_is_left_to_the_function():
    def f(k: float, x=None, arr=(0.0, 1.0), n: int = 3):
        return k
    spec = SweepSpec.for_function(f)
    assert spec.error == "" and spec.space.names == ("k",)
    assert spec.parameter("x").error == "" and spec.parameter("x").at_default
    spec.parameter("n").value = "4"  # a value other than the default is part of the space
    assert spec.space.names == ("k", "n") and spec.space.columns()["n"] == [4] * 5
    spec.parameter("x").value = "none"
    assert "not a number" in spec.parameter("x").error and spec.space is None


def test_the_form_keeps_the_units_of_the_scan_it_shows(tmp_path):
    """Editing the form of a scan whose space declares units builds spaces with them."""
    def model(k: float, tau: float = 0.01):
        return k * tau

    space = ns.grid(k=[1.0, 2.0], tau=[0.01, 0.02]).with_attrs(
        tau={"units": "s", "long_name": "membrane time constant"})
    builder = SweepBuilder(model, store=str(tmp_path / "s"), space=space)
    assert builder.spec.space.attrs == {"tau": {"units": "s",
                                                "long_name": "membrane time constant"}}
    builder.spec.parameter("k").set(mode="list", values="1, 2, 3")
    edited = builder.spec.space
    assert len(edited) == 6 and edited.attrs["tau"]["units"] == "s"
    ns.Scan(model, edited, store=tmp_path / "s").run(executor="serial", progress=False)
    assert ns.open_store(tmp_path / "s").tau.attrs["units"] == "s"


def test_the_form_shows_the_units_a_store_records(tmp_path):
    """A new builder on a store with units labels its rows with them and keeps them."""
    def model(k: float, tau: float = 0.01):
        return k * tau

    store = tmp_path / "s"
    space = ns.grid(k=[1.0, 2.0], tau=[0.01, 0.02]).with_attrs(
        tau={"units": "s", "long_name": "membrane time constant"})
    ns.Scan(model, space, store=store).run(executor="serial", progress=False)
    builder = SweepBuilder(model, store=str(store))
    assert "[s]" in builder.rows["tau"].label.value
    assert "membrane time constant" in builder.rows["tau"].label.value
    assert "[" not in builder.rows["k"].label.value.split("</b>")[1].split("<span")[0]
    builder.spec.parameter("k").set(mode="list", values="1, 2, 3")
    assert builder.spec.space.attrs["tau"]["units"] == "s"
