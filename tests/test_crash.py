"""Real killed processes and concurrent writers: nothing finished is lost or duplicated."""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.store import Store
from notebookscan.store.shards import read_shard

SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import notebookscan as ns

    def model(k: float, seed: int):
        time.sleep({sleep})
        rng = np.random.default_rng(seed)
        return {{"y": k * rng.random(), "trace": np.cumsum(rng.normal(size=5))}}

    space = ns.grid(k=np.linspace(0, 1, {n})) * ns.trials(2)

    if __name__ == "__main__":
        ns.Scan(model, space, store=sys.argv[1]).run(
            executor="serial", progress=False, flush_every=5, flush_interval=0.2)
""")

TIMING = ["ns_started", "ns_finished", "ns_duration", "ns_host", "ns_worker", "ns_run"]


def _write_script(tmp_path, n=60, sleep=0.01):
    path = tmp_path / "scan_script.py"
    path.write_text(SCRIPT.format(n=n, sleep=sleep))
    return path


def _comparable(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars(TIMING).drop_attrs()


def _stored_rows(store_path) -> int:
    store = Store(store_path)
    return sum(read_shard(os.path.join(store.shards_dir, n), ["status"]).n
               for n in store.shard_files())


def _wait_for_shards(store_path, count, process, limit=60.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the scan exited early with {process.returncode}")
        if len(Store(store_path).shard_files()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("no shards appeared")


def test_sigkill_mid_scan_loses_only_the_unflushed_batch(tmp_path):
    script = _write_script(tmp_path)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    process = subprocess.Popen([sys.executable, str(script), str(killed)])
    _wait_for_shards(killed, 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = ns.open_store(killed)
    stored = int((partial.ns_status == "done").sum())
    assert 0 < stored < 120, stored
    assert ns.verify(killed).healthy

    # resume in this process: only the missing points run
    module = runpy.run_path(str(script))
    progress = ns.Scan(module["model"], module["space"], store=killed).run(
        executor="serial", progress=False).progress
    assert progress.done == 120 - stored and progress.skipped == stored

    subprocess.run([sys.executable, str(script), str(clean)], check=True)
    xr.testing.assert_identical(_comparable(ns.open_store(killed)),
                                _comparable(ns.open_store(clean)))


def test_two_processes_scanning_one_store(tmp_path):
    script = _write_script(tmp_path, n=50, sleep=0.005)
    store = tmp_path / "shared"
    first = subprocess.Popen([sys.executable, str(script), str(store)])
    second = subprocess.Popen([sys.executable, str(script), str(store)])
    assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0
    assert ns.verify(store).healthy
    ds = ns.open_store(store)
    assert (ds.ns_status == "done").all() and ds.y.size == 100
    ns.compact(store)
    assert _stored_rows(store) == 100  # nothing computed twice is stored twice
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, str(script), str(clean)], check=True)
    xr.testing.assert_identical(_comparable(ns.open_store(store)),
                                _comparable(ns.open_store(clean)))


BIG_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import notebookscan as ns

    cfg = json.loads(sys.argv[1])

    def model(k: int):
        time.sleep(0.001)
        return {"x": np.random.default_rng(k).random(65536)}  # 512 KiB of noise a point

    if __name__ == "__main__":
        scan = ns.Scan(model, ns.grid(k=range(cfg["n"])), store=cfg["store"])
        log = os.open(cfg["reported"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def reported(point, **_):
            os.write(log, f"{point['k']}\\n".encode())

        scan.events.on("point_done", reported)
        scan.run(executor=cfg["executor"], progress=False, chunk_size=4)
""")


@pytest.mark.parametrize("executor,delays", [("serial", (0.0, 0.0, 0.05, 0.13, 0.37)),
                                             ("processes", (0.0, 0.09, 0.23))])
def test_sigkill_while_big_results_stream_into_shards(tmp_path, executor, delays):
    # chunks of 2 MiB take the big-results path: the shard is written (by the loop's
    # thread, or by a pool worker) and fsynced and renamed by the client's publishing
    # thread while the next points run; a kill of the client and its workers at any
    # moment leaves every shard whole or absent, and every point reported is stored
    script = tmp_path / "big.py"
    script.write_text(BIG_SCRIPT)
    env = {**os.environ, "NOTEBOOKSCAN_WORKERS": "2"}
    for trial, delay in enumerate(delays):
        store, reported = tmp_path / f"store{trial}", tmp_path / f"reported{trial}"
        cfg = {"n": 300, "store": str(store), "reported": str(reported),
               "executor": executor}
        proc = subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], env=env,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while not reported.exists() or len(reported.read_text().split()) < 8:
            assert proc.poll() is None, "the scan ended before it was killed"
            assert time.monotonic() < deadline, "nothing reported in 60 s"
            time.sleep(0.002)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)  # the client and its pool workers
        proc.wait()
        report = ns.verify(store)
        assert report.healthy, report
        names = Store(store).shard_files()
        for name in names:  # whole: every shard reads, rows and data intact
            read_shard(os.path.join(Store(store).shards_dir, name))
        said = {int(k) for k in reported.read_text().split()}
        ds = ns.open_store(store)
        held = {int(k) for k in ds.k.values[(ds.ns_status == "done").values]}
        assert said <= held, sorted(said - held)[:10]
        for k in sorted(said)[:: max(1, len(said) // 5)]:
            row = ds.x.sel(k=k).values
            np.testing.assert_array_equal(row, np.random.default_rng(k).random(65536))
