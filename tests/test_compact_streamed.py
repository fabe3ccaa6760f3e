"""Compaction combines its shards a few variables at a time (store/compaction.py): the
same shard as combining them whole, in a fraction of the memory."""

from __future__ import annotations

import os
import tracemalloc
import warnings

import numpy as np
import xarray as xr

import notebookscan as ns
from notebookscan.errors import StoreWarning
from notebookscan.keys import KEY_DTYPE
from notebookscan.store import Store
from notebookscan.store.maintenance import check_written, compact_store
from notebookscan.store.shards import ShardData, read_shard
from notebookscan.store.table import combine_shards, table_to_shard


def run_serial(fn, space, path, **kwargs):
    ns.Scan(fn, space, store=path).run(executor="serial", progress=False, **kwargs)


def model(x: int):
    return {"y": x * 0.5, "flag": x % 2 == 0, "label": f"p{x}" * (1 + x % 3),
            "n": x, "v": np.arange(x % 5 + 1.0)}


def other(x: int):  # other values for some points: conflicts once merged
    out = model(x)
    if x % 3 == 0:
        out["y"] = -1.0
    if x % 4 == 0:
        out["v"] = np.arange(x % 5 + 1.0) + 0.25
    return out


def whole(store: Store) -> ShardData:
    """The store's shards combined whole, as compaction did before it streamed."""
    shards = [read_shard(os.path.join(store.shards_dir, name), text_as_bytes=True)
              for name in store.shard_files()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        table = combine_shards(shards, store.metadata().get("names"),
                               rules=store.read_rules(), keep_conflicts=True)
    return table_to_shard(table)


def test_compacted_shard_is_the_shards_combined_whole(tmp_path):
    path, merged = tmp_path / "s", tmp_path / "t"
    run_serial(model, ns.grid(x=range(40)), path, flush_every=4)
    run_serial(other, ns.grid(x=range(30, 52)), merged, flush_every=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        ns.merge(merged, path)
    store = Store(path)
    assert len(store.shard_files()) >= 4
    conflicts = store.conflicts()
    assert len(conflicts) >= 5  # x = 30, 32, 33, 36, 39, ...
    before = ns.open_store(path)
    expected = whole(store)
    report = Store(path).compact()
    assert (report.shards_after, report.problems) == (1, []), report
    store = Store(path)
    (name,) = store.shard_files()
    assert check_written(store, name, expected) == ""  # the same rows, order, values
    assert read_shard(os.path.join(store.shards_dir, name)).n == 52 + len(conflicts)
    xr.testing.assert_identical(ns.open_store(path), before)
    assert store.conflicts() == conflicts


def test_compaction_holds_a_fraction_of_its_shards(tmp_path):
    store = Store(tmp_path / "s")
    store.prepare(ns.Layout("points", ("x",)), ["x"])
    n, shards = 60_000, 30
    keys = ns.grid(x=range(n)).keys()
    for part in np.array_split(np.arange(n), shards):
        m = len(part)
        bookkeeping = {
            "key": np.asarray([keys[i] for i in part]).astype(KEY_DTYPE),
            "status": np.full(m, b"done"), "error": np.zeros(m, "S1"),
            "traceback": np.zeros(m, "S1"), "host": np.full(m, b"h"),
            "worker": np.full(m, b"pid 1"), "run": np.full(m, b"r"),
            "seed": np.arange(m, dtype=np.int64), "started": np.zeros(m),
            "finished": np.ones(m), "duration": np.ones(m)}
        store.write(ShardData(m, {"x": part.astype(np.int64)}, bookkeeping,
                              {"y": part * 0.5, "z": part * 2.0}, {"y": (), "z": ()},
                              {"y": {}, "z": {}}, {}, {}))
    data = sum(read_shard(os.path.join(store.shards_dir, name)).nbytes
               for name in store.shard_files())
    before = ns.open_store(store.path)
    tracemalloc.start()
    try:
        report = compact_store(Store(store.path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (report.shards_after, report.points) == (1, n), report
    # combined whole, the shards and the table were each held, and more: 2.7x the data
    assert peak < 1.5 * data, (peak, data)
    xr.testing.assert_identical(ns.open_store(store.path), before)


def test_text_and_bool_parameters_compact_as_combined_whole(tmp_path):
    def fn(x: int, kind: str, on: bool):
        return {"y": x * (2.0 if on else 1.0), "v": np.arange(x % 3 + 1) * 1.0}

    path = tmp_path / "s"
    space = ns.grid(x=range(12), kind=["a", "b|c"], on=[False, True])
    run_serial(fn, space, path, flush_every=6)
    run_serial(fn, ns.grid(x=range(12, 20), kind=["a"], on=[True]), path)
    store = Store(path)
    assert len(store.shard_files()) >= 2
    before = ns.open_store(path)
    expected = whole(store)
    assert compact_store(store).shards_after == 1
    (name,) = Store(path).shard_files()
    assert check_written(Store(path), name, expected) == ""
    xr.testing.assert_identical(ns.open_store(path), before)
