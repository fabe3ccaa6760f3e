"""Reading a store from several threads while a scan loop writes it in another.

HDF5 inside the netCDF4 wheels is not thread-safe and netCDF4 releases the GIL, so any
HDF5 call made outside the store's lock (a Dataset closed by the garbage collector, a
file opened by xarray under its own lock) can crash the interpreter. A crash would
kill pytest, so the stress runs in a subprocess with faulthandler on, and a segfault
fails the test with the threads' tracebacks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import notebookscan as ns
from notebookscan.store.shards import hdf5_lock, open_dataset

STRESS = textwrap.dedent('''
    import faulthandler, os, sys, threading, time
    faulthandler.enable()
    import dask.array  # first imported by several threads at once, dask half-initialises
    import numpy as np
    import xarray as xr
    import notebookscan as ns
    from notebookscan.store.shards import hdf5_lock
    from notebookscan.store import Store

    path, points, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

    def model(x: int):
        time.sleep(0.0005)
        # random int64: noise, stored uncompressed (its codec is chosen from a sample)
        noise = np.random.default_rng(x).integers(-2**62, 2**62, 1024)
        return {"v": np.full(2000, float(x)), "noise": noise, "s": x * 1.0,
                "name": str(x)}

    scan = ns.Scan(model, ns.grid(x=range(points)), store=path)
    run = scan.run(executor="serial", progress=False, wait=False, flush_every=5)
    errors, reads = [], [0]
    deadline = time.monotonic() + seconds

    def read(kind):
        while not run.done() and time.monotonic() < deadline:
            try:
                if kind == "results":
                    ds = scan.results()
                    if "v" in ds:
                        done = ds.ns_status == "done"
                        first = ds.v.isel(v_index=0).where(done)
                        assert (first == ds.x.where(done)).sum() == done.sum()
                elif kind == "table":
                    Store(path).table()
                elif kind == "lazy":  # xarray and dask open the shards under our lock
                    if Store(path).shard_files():
                        Store(path).dataset(lazy=True).s.values
                elif kind == "xarray":
                    # user code opening a shard itself: xarray reads metadata outside
                    # any lock, so the opening needs ours; loading and closing take
                    # xarray's own locks, which ours holds too
                    files = Store(path).shard_files()
                    if files:
                        with hdf5_lock():
                            ds = xr.open_dataset(os.path.join(path, "shards", files[-1]),
                                                 engine="netcdf4")
                        with ds:
                            ds.load()
                reads[0] += 1
            except FileNotFoundError:
                pass  # a shard listed a moment ago vanished: not what this test is about
            except Exception as exc:
                errors.append(f"{kind}: {exc!r}")

    threads = [threading.Thread(target=read, args=(k,))
               for k in ("results", "table", "lazy", "xarray")]
    for t in threads:
        t.start()
    run.wait()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert (scan.results().ns_status == "done").all()
    print("ok", reads[0], "reads")
''')


def test_reading_from_threads_while_the_loop_thread_writes(tmp_path):
    script = tmp_path / "stress.py"
    script.write_text(STRESS)
    # ~300 flushes; without the fixes this crashed within the first second
    _run_ok(script, tmp_path / "s", "1500", "20")


def _run_ok(script, *args):
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run([sys.executable, str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)
    # blosc prints a line per refused chunk: keep the report readable
    stderr = "\n".join(line for line in proc.stderr.splitlines() if "Blosc_Filter" not in line)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{stderr[-6000:]}"
    assert proc.stdout.startswith("ok"), proc.stdout


REOPEN = textwrap.dedent('''
    import faulthandler, gc, sys
    faulthandler.enable()
    import numpy as np
    import notebookscan as ns
    from notebookscan.store import Store

    path = sys.argv[1]
    ns.Scan(lambda x: {"v": np.full(3, float(x)), "s": str(x)}, ns.grid(x=range(4)),
            store=path).run(executor="serial", progress=False, flush_every=2)
    for _ in range(3):
        a = ns.open_store(path, lazy=True)
        Store(path).table()
        b = ns.open_store(path, lazy=True)
        del a
        gc.collect()
        c = ns.open_store(path, lazy=True)
        c.load()
        b.load()
        del b, c
        gc.collect()
    print("ok")
''')


def test_reading_a_store_while_it_is_open_lazily(tmp_path):
    """One thread is enough: the HDF5 in the wheels segfaults when a shard is open twice
    (here: in xarray's file cache and by the eager reader) and handles come and go."""
    script = tmp_path / "reopen.py"
    script.write_text(REOPEN)
    _run_ok(script, tmp_path / "s")


def test_a_dataset_whose_close_fails_is_closed_under_the_lock(tmp_path):
    """netCDF4 leaves a Dataset open when close() fails (blosc refusing a chunk when it
    is flushed); its __dealloc__ would close it later, from whatever thread drops the
    last reference, without the lock. open_dataset() closes it for good, inside."""
    path = str(tmp_path / "f.nc")
    noise = np.random.default_rng(0).integers(-2**62, 2**62, (2, 4096))
    with pytest.raises(RuntimeError), open_dataset(path, "w") as nc:
        nc.createDimension("point", 2)
        nc.createDimension("n", 4096)
        var = nc.createVariable("v", "i8", ("point", "n"), compression="blosc_lz4",
                                complevel=1, shuffle=True, chunksizes=(1, 4096))
        var[...] = noise
        kept = nc
    assert not kept.isopen()


def test_xarrays_netcdf_locks_are_the_store_lock():
    """xarray's reads under its own locks exclude the store's HDF5 calls, and code holding
    the store's lock can call xarray (re-entrant: no deadlock)."""
    from xarray.backends.locks import HDF5_LOCK, NETCDFC_LOCK

    got = []
    with hdf5_lock(), HDF5_LOCK, NETCDFC_LOCK:  # re-entrant
        thread = threading.Thread(target=lambda: got.append(
            (HDF5_LOCK.acquire(blocking=False), NETCDFC_LOCK.acquire(blocking=False),
             hdf5_lock().acquire(blocking=False))))
        thread.start()
        thread.join()
    assert got == [(False, False, False)]
    assert not hdf5_lock().locked()


def test_store_index_from_threads(tmp_path):
    """The per-Store index cache is shared by the loop and readers in other threads."""
    store = tmp_path / "s"
    scan = ns.Scan(lambda x: x * 1.0, ns.grid(x=range(200)), store=store)
    run = scan.run(executor="serial", progress=False, wait=False, flush_every=3)
    errors = []

    def read():
        while not run.done():
            try:
                scan.store.index()
            except Exception as exc:  # collected and reported below
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    run.wait()
    for reader in readers:
        reader.join()
    assert errors == []
    assert len(scan.store.index().done) == 200


@pytest.mark.parametrize("reader", [True, False])
def test_a_run_that_ends_before_another_starts_makes_no_point_run_twice(tmp_path, reader):
    """A run skips what was stored when it decided its points, and drops what other
    writers store later, even a whole run that started and ended in between (it holds
    no lease any more to tell of it). A reader of the same Store object (the app's
    monitor, another thread) that indexes that run's shard in between must not make the
    run believe it decided from that shard: its points would run twice."""
    path = tmp_path / "s"
    calls: list[int] = []

    def fn(x):
        calls.append(x)
        return float(x)

    class ReaderInBetween(ns.Scan):
        def _to_run(self, *args, **kwargs):
            decided = super()._to_run(*args, **kwargs)
            # another writer stores points 0..4 now; a reader of this store sees them
            ns.Scan(lambda x: float(x), ns.grid(x=range(5)), store=path).run(
                executor="serial", progress=False)
            if reader:
                self.store.index()
            return decided

    scan = ReaderInBetween(fn, ns.grid(x=range(10)), store=path)
    run = scan.run(executor="serial", progress=False)
    assert sorted(calls) == [5, 6, 7, 8, 9], "points stored by the other writer ran again"
    assert run.progress.skipped == 5 and run.progress.done == 5
    assert ns.open_store(path).sizes["x"] == 10
