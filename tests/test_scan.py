"""The scan loop: skip done points, refine, plans, events, seeds, layouts, executors."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import xarray as xr

import notebookscan as ns

CALLS: list[dict] = []


def counted(k: float, tau: float = 0.01, seed: int = 0):
    CALLS.append({"k": k, "tau": tau, "seed": seed})
    return {"rate": k / tau + np.random.default_rng(seed).normal()}


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()


def test_the_issue_example_end_to_end(tmp_path):
    space = ns.grid(k=np.linspace(1, 20, 20), tau=[0.005, 0.01]) * ns.trials(5)
    scan = ns.Scan(counted, space, store=tmp_path / "rates")
    scan.run(executor="serial", progress=False)
    assert len(CALLS) == 200
    ds = scan.results()
    assert dict(ds.sizes) == {"k": 20, "tau": 2, "trial": 5}
    assert (ds.ns_status == "done").all()
    scan.refine(k=np.linspace(5, 8, 31))
    CALLS.clear()
    progress = scan.run(executor="serial", progress=False).progress
    # 31 new k values, of which 5, 6, 7, 8 were already there: only 27 x 2 x 5 run
    assert len(CALLS) == progress.done == 270 and progress.skipped == 200
    from_disk = ns.open_store(tmp_path / "rates")
    xr.testing.assert_identical(from_disk, scan.results())
    assert from_disk.sizes["k"] == 47


def test_seeds_come_from_points_and_are_stored(tmp_path):
    space = ns.grid(k=[1.0, 2.0]) * ns.trials(3)
    scan = ns.Scan(counted, space, store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    ds = scan.results()
    expected = [[ns.point_seed(ns.point_key({"k": k, "trial": t})) for t in range(3)]
                for k in (1.0, 2.0)]
    assert ds.ns_seed.values.tolist() == expected
    assert sorted(c["seed"] for c in CALLS) == sorted(s for row in expected for s in row)
    assert "trial" not in CALLS[0]  # counted() does not take `trial`, so it is not passed


def test_nothing_is_recomputed_after_a_restart(tmp_path):
    space = ns.grid(k=[1.0, 2.0, 3.0])
    ns.Scan(counted, space, store=tmp_path / "s").run(executor="serial", progress=False)
    CALLS.clear()
    progress = ns.Scan(counted, space, store=tmp_path / "s").run(
        executor="serial", progress=False).progress
    assert CALLS == [] and progress.total == 0 and progress.skipped == 3


def test_plan_lists_what_would_run_and_writes_nothing(tmp_path):
    scan = ns.Scan(counted, ns.grid(k=[1.0, 2.0, 3.0]), store=tmp_path / "s")
    plan = scan.plan()
    assert isinstance(plan, ns.Plan)
    assert len(plan.to_run) == 3 and plan.stored == 0 and CALLS == []
    assert not os.path.exists(tmp_path / "s")
    scan.run(executor="serial", progress=False)
    scan.refine(k=[3.0, 4.0])
    plan = scan.plan()
    assert plan.to_run.k.tolist() == [4.0] and plan.stored == 3
    assert "1 of 4 point(s) would run" in repr(plan)
    # one method, one return type: run() always runs
    with pytest.raises(TypeError, match="dry_run"):
        scan.run(dry_run=True)


def test_invalid_spaces_are_refused_before_any_work(tmp_path):
    with pytest.raises(ns.SpaceError, match="'kk'"):
        ns.Scan(counted, ns.grid(kk=[1.0]), store=tmp_path / "s")
    with pytest.raises(ns.SpaceError, match="requires parameter 'k'"):
        ns.Scan(counted, ns.grid(tau=[1.0]), store=tmp_path / "s")
    with pytest.raises(ns.SpaceError, match="non-finite"):
        ns.Scan(counted, ns.grid(k=[1.0, np.nan]), store=tmp_path / "s")
    assert not os.path.exists(tmp_path / "s") and CALLS == []


def test_bad_run_options_name_the_option(tmp_path):
    scan = ns.Scan(counted, ns.grid(k=[1.0]), store=tmp_path / "s")
    with pytest.raises(ns.ScanError, match="flush_every"):
        scan.run(executor="serial", flush_every=0)
    with pytest.raises(ns.ExecutorError, match="'threads' is not known"):
        scan.run(executor="threads")
    with pytest.raises(ns.ScanError, match="timeout"):
        scan.run(executor="serial", timeout=-1)


def test_a_store_with_other_parameters_is_refused(tmp_path):
    ns.Scan(counted, ns.grid(k=[1.0]), store=tmp_path / "s").run(executor="serial",
                                                                  progress=False)
    with pytest.raises(ns.ScanError, match="holds parameters"):
        ns.Scan(counted, ns.grid(k=[1.0], tau=[0.1]), store=tmp_path / "s")


def test_events_report_every_point_and_progress(tmp_path):
    def half(x: int):
        if x % 2:
            raise RuntimeError("odd")
        return x

    scan = ns.Scan(half, ns.grid(x=range(10)), store=tmp_path / "s")
    seen: dict[str, list] = {"done": [], "failed": [], "flushed": [], "finished": []}
    scan.events.on("point_done", lambda point, **_: seen["done"].append(point["x"]))
    scan.events.on("point_failed", lambda record, **_: seen["failed"].append(record.error))
    scan.events.on("flushed", lambda points, **_: seen["flushed"].append(points))
    scan.events.on("finished", lambda **kw: seen["finished"].append(kw))
    scan.run(executor="serial", progress=False, flush_every=4)
    assert sorted(seen["done"]) == [0, 2, 4, 6, 8]
    assert seen["failed"] == ["RuntimeError: odd"] * 5
    assert sum(seen["flushed"]) == 10 and len(seen["flushed"]) >= 2
    assert seen["finished"][0]["done"] == 5 and seen["finished"][0]["failed"] == 5


def test_first_results_reach_the_disk_at_once_unless_the_scan_is_about_to_end(tmp_path):
    def quick(x: int):
        return x

    def slow(x: int):
        time.sleep(0.03)
        return x

    stored_before_the_end = []
    for function, n in ((quick, 1000), (slow, 20)):
        scan = ns.Scan(function, ns.grid(x=range(n)), store=tmp_path / function.__name__)
        flushes: list[int] = []
        scan.events.on("flushed", lambda points, _seen=flushes, **_: _seen.append(points))
        progress = scan.run(executor="serial", progress=False).progress
        assert progress.done == n and sum(flushes) == n
        stored_before_the_end.append(flushes[:-1])
    quick_early, slow_early = stored_before_the_end
    assert quick_early == []  # 1 000 quick points: one shard, written at the end
    assert slow_early and slow_early[0] <= 2  # 0.6 s of work: the first points at once


def test_the_serial_executor_flushes_before_computing_more(tmp_path):
    """Submitting computes on the serial executor: a full batch is written before the next
    chunks run, so no more than a batch of results is held."""
    log: list[str] = []

    def logged(x: int):
        log.append("point")
        return x

    scan = ns.Scan(logged, ns.grid(x=range(40)), store=tmp_path / "s")
    scan.events.on("flushed", lambda **_: log.append("flush"))
    scan.run(executor="serial", progress=False, chunk_size=5, flush_every=10)
    assert log.index("flush") == 10
    assert log.count("point") == 40 and log.count("flush") == 4


def test_failed_points_run_again_only_when_asked(tmp_path):
    flaky = {"fail": True}

    def sometimes(x: int):
        if flaky["fail"] and x == 1:
            raise ValueError("not yet")
        return x

    scan = ns.Scan(sometimes, ns.grid(x=[0, 1, 2]), store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    flaky["fail"] = False
    assert len(scan.plan().to_run) == 0 and scan.plan().failed_before == 1
    assert scan.plan(retry_failed=True).to_run.x.tolist() == [1]
    with pytest.warns(UserWarning, match="retry_failed=True"):
        assert scan.run(executor="serial", progress=False).progress.total == 0
    assert scan.run(executor="serial", progress=False, retry_failed=True).progress.done == 1
    assert scan.results().ns_status.values.tolist() == ["done"] * 3


def test_per_point_timeout_records_a_failure(tmp_path):
    def slow(x: int):
        if x == 1:
            time.sleep(5)
        return x

    scan = ns.Scan(slow, ns.grid(x=[0, 1, 2]), store=tmp_path / "s")
    t0 = time.monotonic()
    scan.run(executor="serial", progress=False, timeout=0.3)
    assert time.monotonic() - t0 < 3
    ds = scan.results()
    assert ds.ns_status.values.tolist() == ["done", "failed", "done"]
    assert "PointTimeout" in ds.ns_error.sel(x=1).item()


def test_samples_and_unions_use_a_point_dimension(tmp_path):
    def model(a: float, b: float):
        return a + b

    space = ns.sample(20, method="sobol", seed=1, a=(0, 1), b=(1, 10, "log"))
    scan = ns.Scan(model, space, store=tmp_path / "s")
    before = scan.results()
    assert before.sizes["point"] == 20 and (before.ns_status == "missing").all()
    scan.run(executor="serial", progress=False)
    ds = scan.results()
    assert ds.sizes["point"] == 20 and (ds.ns_status == "done").all()
    np.testing.assert_allclose(ds.result.values, ds.a.values + ds.b.values)
    xr.testing.assert_identical(ns.open_store(tmp_path / "s"), ds)


def test_grid_unions_show_missing_cells_and_to_grid_reshapes_points(tmp_path):
    def model(a: int, b: int):
        return a * 10 + b

    space = ns.grid(a=[0, 1], b=[0, 1]) + ns.grid(a=[2], b=[5])
    scan = ns.Scan(model, space, store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    ds = scan.results()
    assert ds.ns_status.sel(a=2, b=0).item() == "excluded"  # no point of the space there
    assert ds.result.sel(a=2, b=5).item() == 25
    points = ns.Scan(model, ns.zip_(a=[0, 1, 2], b=[0, 1, 5]), store=tmp_path / "p")
    points.run(executor="serial", progress=False)
    grid = ns.to_grid(points.results(), ["a", "b"])
    assert grid.result.sel(a=1, b=1).item() == 11 and np.isnan(grid.result.sel(a=0, b=1))


def test_singular_dimension_runs_once(tmp_path):
    def drive(amp: float, freq: float):
        CALLS.append((amp, freq))
        return amp * freq

    space = ns.grid(amp=[0.0, 0.5, 1.0], freq=[1.0, 2.0, 4.0]).where(
        lambda p: p["amp"] > 0 or p["freq"] == 1.0)
    ns.Scan(drive, space, store=tmp_path / "s").run(executor="serial", progress=False)
    assert sorted(c for c in CALLS if c[0] == 0.0) == [(0.0, 1.0)]
    ds = ns.open_store(tmp_path / "s")
    # dropped by where: excluded (no run's space holds them), not missing
    assert ds.ns_status.sel(amp=0.0).values.tolist() == ["done", "excluded", "excluded"]


def test_serial_and_process_pool_give_identical_datasets(tmp_path):
    space = ns.grid(k=[1.0, 2.0, 3.0, 4.0]) * ns.trials(3)
    a = ns.Scan(counted, space, store=tmp_path / "a")
    a.run(executor="serial", progress=False)
    b = ns.Scan(counted, space, store=tmp_path / "b")
    b.run(executor="processes", progress=False)
    timing = ["ns_started", "ns_finished", "ns_duration", "ns_host", "ns_worker", "ns_run"]
    xr.testing.assert_identical(
        a.results().drop_vars(timing).drop_attrs(),
        b.results().drop_vars(timing).drop_attrs(),
    )


def test_functions_defined_in_main_run_in_a_process_pool(tmp_path):
    namespace: dict = {}
    exec("def cube(x: int):\n    return x ** 3\n", namespace)
    cube = namespace["cube"]
    cube.__module__ = "__main__"
    scan = ns.Scan(cube, ns.grid(x=[1, 2, 3]), store=tmp_path / "s")
    scan.run(executor="processes", progress=False)
    assert scan.results().result.values.tolist() == [1, 8, 27]


def test_stop_keeps_finished_points_and_run_resumes(tmp_path):
    def slowish(x: int):
        time.sleep(0.05)
        return x

    scan = ns.Scan(slowish, ns.grid(x=range(40)), store=tmp_path / "s")
    seen = []

    def stop_after_some(done, **_):
        seen.append(done)
        if done >= 5:
            scan.stop(wait=False)

    scan.events.on("progress", stop_after_some)
    progress = scan.run(executor="serial", progress=False, chunk_size=1).progress
    assert progress.stopped and 5 <= progress.done < 40
    assert scan.status()["done"] == progress.done
    scan.events.off("progress", stop_after_some)
    resumed = scan.run(executor="serial", progress=False).progress
    assert resumed.done == 40 - progress.done
    assert scan.results().result.values.tolist() == list(range(40))


def _slow_point(x: int):
    time.sleep(0.2)
    return x


def test_stop_now_on_a_process_pool_returns_and_keeps_what_finished(tmp_path):
    scan = ns.Scan(_slow_point, ns.grid(x=range(16)), store=tmp_path / "s")
    run = scan.run(executor="processes", progress=False, wait=False, flush_interval=0.2)
    deadline = time.monotonic() + 30
    while run.progress.done < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    run.stop(now=True, wait=False)
    progress = run.wait(timeout=20)  # cancelled tasks count as ended: no hang
    assert time.monotonic() - started < 10
    assert progress.stopped and 2 <= progress.done < 16
    assert scan.status()["done"] == progress.done
    assert scan.run(executor="serial", progress=False).progress.done == 16 - progress.done


def test_background_run_can_be_awaited(tmp_path):
    import asyncio

    def model(x: int):
        time.sleep(0.01)
        return x

    async def main():
        scan = ns.Scan(model, ns.grid(x=range(20)), store=tmp_path / "s")
        run = scan.run(executor="processes", progress=False, wait=False)
        assert not run.done()
        progress = await scan
        return progress

    progress = asyncio.run(main())
    assert progress.done == 20


def test_results_before_running_show_every_point_missing(tmp_path):
    grid_scan = ns.Scan(counted, ns.grid(k=[1.0, 2.0], tau=[0.1]), store=tmp_path / "g")
    ds = grid_scan.results()
    assert dict(ds.sizes) == {"k": 2, "tau": 1}
    assert ds.k.dtype == np.float64 and (ds.ns_status == "missing").all()
    assert ds.ns_started.isnull().all()
    sampled = ns.Scan(counted, ns.sample(4, seed=3, k=(1, 2)), store=tmp_path / "p")
    ds = sampled.results()
    assert ds.sizes["point"] == 4 and ds.k.dtype == np.float64
    assert ds.ns_seed.values.tolist() == sampled.space.seeds()


def test_a_scan_where_every_point_fails_still_gives_a_dataset(tmp_path):
    def broken(k: float, flag: bool):
        raise ZeroDivisionError("nope")

    scan = ns.Scan(broken, ns.grid(k=[1.0, 2.0], flag=[True, False]), store=tmp_path / "s")
    scan.run(executor="serial", progress=False)
    ds = scan.results()
    assert (ds.ns_status == "failed").all() and ds.flag.dtype == bool
    assert (ds.ns_error == "ZeroDivisionError: nope").all()


def test_workers_can_write_their_own_shards(tmp_path):
    def model(k: float, seed: int):
        return {"trace": np.random.default_rng(seed).random(200_000), "mean": k}

    space = ns.grid(k=[1.0, 2.0, 3.0, 4.0, 5.0])
    by_client = ns.Scan(model, space, store=tmp_path / "client")
    by_client.run(executor="processes", progress=False, writer="client")
    by_workers = ns.Scan(model, space, store=tmp_path / "workers")
    by_workers.run(executor="processes", progress=False, writer="workers")
    writers = {name.split(".")[2] for name in ns.Store(tmp_path / "workers").shard_files()}
    assert str(os.getpid()) not in writers  # every shard came from a pool process
    timing = ["ns_started", "ns_finished", "ns_duration", "ns_host", "ns_worker", "ns_run"]
    xr.testing.assert_identical(by_client.results().drop_vars(timing).drop_attrs(),
                                by_workers.results().drop_vars(timing).drop_attrs())
    with pytest.raises(ns.ScanError, match="writer must be"):
        by_client.run(executor="serial", writer="engines")


def test_cells_outside_the_space_are_excluded_not_missing(tmp_path):
    def drive(amp: float, freq: float):
        return amp * freq

    space = ns.grid(amp=[0.0, 1.0], freq=[1.0, 2.0]).where(
        lambda p: p["amp"] > 0 or p["freq"] == 1.0)
    scan = ns.Scan(drive, space, store=tmp_path / "s")
    assert scan.results().ns_status.values.tolist() == [["missing", "excluded"],
                                                      ["missing", "missing"]]
    scan.run(executor="serial", progress=False)
    assert scan.results().ns_status.values.tolist() == [["done", "excluded"], ["done", "done"]]
    assert scan.status() == {"done": 3, "failed": 0, "missing": 0}


def _observed_chunker(seconds_per_point: float, points: int = 100):
    from notebookscan.run.loop import LoopSettings
    from notebookscan.run.points import MIN_CHUNK_SECONDS, _Chunker
    from notebookscan.run.worker import ChunkResult

    chunker = _Chunker(LoopSettings(), workers=2, min_seconds=MIN_CHUNK_SECONDS)
    assert chunker.next_size(10_000) == 1  # nothing measured yet: one point probes
    started = np.zeros(points)
    finished = np.full(points, seconds_per_point * points)
    chunker.observe(ChunkResult(np.ones(points, bool), started, finished, {}, {}, {}, "h", "w"))
    return chunker


def test_chunk_sizes_follow_the_time_per_point():
    from notebookscan.run.points import MAX_CHUNK, MIN_CHUNK_SECONDS

    slow = _observed_chunker(0.01)  # 10 ms a point: ~0.2 s chunks, shared fairly at the end
    assert slow.next_size(10_000) == 20
    assert slow.next_size(12) == 3
    assert slow.next_size(1) == 1
    fast = _observed_chunker(1e-6)  # 1 µs a point: big chunks, never split below 10 ms
    assert fast.next_size(10**7) == MAX_CHUNK
    assert round(MIN_CHUNK_SECONDS / 1e-6) > 4_000
    assert fast.next_size(4_000) == 4_000  # 4 ms of work left: one chunk, not four
    assert fast.next_size(400) == 400
