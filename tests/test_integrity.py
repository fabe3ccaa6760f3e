"""The store never loses a finished point: result forms, version order, concurrent reads.

Real files, real subprocesses; shards from "other code" or "other machines" are written
through notebookscan.store's own APIs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import xarray as xr

import notebookscan as ns
from notebookscan.errors import ScanError, StoreWarning
from notebookscan.keys import KEY_DTYPE
from notebookscan.store import Store
from notebookscan.store.maintenance import check_written, compact_store
from notebookscan.store.shards import ShardData, read_shard


def run(fn, space, path, **kwargs):
    return ns.Scan(fn, space, store=path).run(executor="serial", progress=False, **kwargs)


def done_values(path, name):
    """Per done point of the store: does ``name`` hold a value (any non-missing entry)?"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        ds = ns.open_store(path)
    done = (ds.ns_status == "done").values
    var = ds[name]
    other = [d for d in var.dims if d not in ds.ns_status.dims]
    present = var.notnull().any(other) if other else var.notnull()
    return int(done.sum()), int((present.values & done).sum())


def all_rows(path):
    """Every row of every shard: (key, run, first value of 'v'/'result')."""
    store = Store(path)
    rows = []
    for name in store.shard_files():
        shard = read_shard(os.path.join(store.shards_dir, name))
        for i in range(shard.n):
            rows.append((str(shard.bookkeeping["key"][i]), str(shard.bookkeeping["run"][i]),
                         float(np.ravel(shard.results["v"][i])[0])))
    return rows


# ------------------------------------------------------------------ 1a: result forms

def scalar(x: int):
    return x * 0.5


def labelled(x: int):
    return xr.DataArray(np.arange(3.0) + x, dims="time", coords={"time": [0.0, 1.0, 2.0]})


def two_d(x: int):
    return np.ones((2, 3)) * x


def one_d(x: int):
    return np.ones(3) * x


def flag(x: int):
    return x > 3


def text(x: int):
    return f"x={x}"


@pytest.mark.parametrize("old, new, words", [
    (scalar, labelled, ["scalar number", "('time',)"]),
    (one_d, two_d, ["dims ('result_index',)", "('result_dim_0', 'result_dim_1')"]),
    (scalar, flag, ["scalar number", "scalar bool"]),
    (scalar, text, ["scalar number", "scalar str"]),
])
def test_form_change_is_refused_before_writing(tmp_path, old, new, words):
    path = tmp_path / "s"
    run(old, ns.grid(x=list(range(40))), path, flush_every=2)  # > 16 shards: compacts
    before = {n: os.path.getmtime(os.path.join(Store(path).shards_dir, n))
              for n in Store(path).shard_files()}
    with pytest.raises(ScanError) as info:
        run(new, ns.grid(x=list(range(40, 60))), path, flush_every=2)
    message = str(info.value)
    assert "'result'" in message and "another store" in message
    assert all(w in message for w in words), message
    after = {n: os.path.getmtime(os.path.join(Store(path).shards_dir, n))
             for n in Store(path).shard_files()}
    assert after == before  # nothing written, nothing touched
    Store(path).compact()
    assert done_values(path, "result") == (40, 40)


def test_form_change_checked_where_workers_write(tmp_path):
    path = tmp_path / "s"
    run(scalar, ns.grid(x=[1, 2, 3]), path)
    with pytest.raises(ScanError, match="changed form"):
        ns.Scan(labelled, ns.grid(x=[4, 5, 6]), store=path).run(
            executor="processes", progress=False, writer="workers")
    assert done_values(path, "result") == (3, 3)


def form_shard(keys, xs, run_id, values, dims=()):
    n = len(keys)
    bookkeeping = {
        "key": np.asarray(keys).astype(KEY_DTYPE), "status": np.full(n, b"done"),
        "error": np.zeros(n, "S1"), "traceback": np.zeros(n, "S1"), "host": np.full(n, b"h"),
        "worker": np.full(n, b"pid 1"), "run": np.full(n, run_id.encode()),
        "seed": np.zeros(n, np.int64), "started": np.zeros(n), "finished": np.ones(n),
        "duration": np.ones(n)}
    values = np.asarray(values)
    lengths = {d: np.full(n, values.shape[1 + i], np.int32) for i, d in enumerate(dims)}
    return ShardData(n, {"x": np.asarray(xs, dtype=np.int64)}, bookkeeping, {"v": values},
                     {"v": tuple(dims)}, {"v": {}}, lengths, {})


def test_every_form_is_read_and_compacted_without_loss(tmp_path):
    """Shards of older versions or merged stores may hold two forms: nothing dropped."""
    path = tmp_path / "s"
    store = Store(path)
    store.prepare(ns.Layout("points", ("x",)), ["x"])
    space = ns.points([{"x": x} for x in range(23)])
    keys = space.keys()
    for x in range(3):  # the old form: scalars
        store.write(form_shard(keys[x:x + 1], [x], "old", [x * 1.0]))
    for x in range(3, 23):  # the new form, for new points: arrays over `time`
        store.write(form_shard(keys[x:x + 1], [x], "new", [[x, x, x]], ("time",)))
    table = store.table()
    assert table.result_dims == {"v": (), "v__form2": ("time",)}
    for _ in range(2):
        report = store.compact()
        assert not report.problems
        assert done_values(path, "v") == (23, 3)
        assert done_values(path, "v__form2") == (23, 20)
    assert len(store.shard_files()) == 2  # one per form, never combined


def test_other_form_merged_in_is_kept(tmp_path):
    run(scalar, ns.grid(x=list(range(10))), tmp_path / "a", flush_every=1)
    run(labelled, ns.grid(x=list(range(10, 30))), tmp_path / "b", flush_every=1)
    ns.merge(tmp_path / "b", tmp_path / "a")
    ns.compact(tmp_path / "a")
    assert done_values(tmp_path / "a", "result") == (30, 10)
    assert done_values(tmp_path / "a", "result__form2") == (30, 20)


# ------------------------------------------------------------------ 1b: version order

def clocked_store(path, run_id, value, finished, xs=(1, 2, 3)):
    store = Store(path)
    store.prepare(ns.Layout("points", ("x",)), ["x"])
    keys = ns.points([{"x": x} for x in xs]).keys()
    shard = form_shard(keys, list(xs), run_id, [value] * len(xs))
    shard.bookkeeping["finished"] = np.full(len(xs), finished)
    store.write(shard)
    return store


def test_merge_conflicts_ordered_without_clocks_and_resolved(tmp_path):
    now = time.time()
    clocked_store(tmp_path / "a", "buggy", 1.0, now)  # correct clock, old code
    clocked_store(tmp_path / "b", "fixed", 2.0, now - 86400)  # clock a day behind
    report = ns.merge(tmp_path / "b", tmp_path / "a")
    assert len(report.conflicts) == 3
    assert {(c.shown, c.other) for c in report.details} == {("fixed", "buggy")}
    assert "x=1" in str(report)
    dest = Store(tmp_path / "a")
    with pytest.warns(StoreWarning, match=r"x=2 .*shown run fixed, kept run buggy"):
        assert dest.table().results["v"].tolist() == [2.0, 2.0, 2.0]  # merged last
    dest.compact()
    dest.compact()
    assert sorted(all_rows(tmp_path / "a"))[:0] == []
    assert sorted(r[1:] for r in all_rows(tmp_path / "a")) == [("buggy", 1.0)] * 3 + [
        ("fixed", 2.0)] * 3  # the losing version is still in the shards
    assert len(dest.conflicts()) == 3
    assert len(dest.verify().conflicts) == 3
    resolved = dest.resolve(keep="buggy")
    assert len(resolved.keys) == 3 and resolved.rows_removed == 3
    assert dest.conflicts() == []
    assert dest.table().results["v"].tolist() == [1.0, 1.0, 1.0]  # the user's choice
    assert os.listdir(tmp_path / "a" / "superseded")  # the other version is recoverable


def test_later_run_wins_whatever_its_clock(tmp_path):
    store = clocked_store(tmp_path / "s", "first", 1.0, time.time())
    clocked_store(tmp_path / "s", "second", 2.0, time.time() - 86400)
    assert store.run_order() == {"first": 1, "second": 2}
    with pytest.warns(StoreWarning):
        assert store.table().results["v"].tolist() == [2.0, 2.0, 2.0]


def test_equal_versions_are_no_conflict(tmp_path):
    clocked_store(tmp_path / "a", "one", 1.0, time.time())
    clocked_store(tmp_path / "b", "two", 1.0, time.time() - 86400)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        report = ns.merge(tmp_path / "b", tmp_path / "a")
        assert report.conflicts == []
        ns.compact(tmp_path / "a")
        assert Store(tmp_path / "a").table().results["v"].tolist() == [1.0, 1.0, 1.0]
    assert len(all_rows(tmp_path / "a")) == 3  # duplicates of equal values are merged


# ------------------------------------------------------------------ 5: concurrent reads

def small_shards(path, points=120, shards=40):
    store = Store(path)
    store.prepare(ns.Layout("points", ("x",)), ["x"])
    keys = ns.points([{"x": x} for x in range(points)]).keys()
    for part in np.array_split(np.arange(points), shards):
        store.write(form_shard([keys[i] for i in part], part, "r", part * 1.0))
    return store


class ListingThenCompacting(Store):
    """A Store whose first listing is followed by a compaction, as if another process
    compacted between this reader's listing and its reads."""

    fired = False

    def shard_files(self):
        names = super().shard_files()
        if not self.fired:
            self.fired = True
            compact_store(Store(self.path))
        return names


def test_index_counts_shards_compacted_between_listing_and_reading(tmp_path):
    small_shards(tmp_path / "s")
    assert len(ListingThenCompacting(tmp_path / "s").index().done) == 120
    small_shards(tmp_path / "t")
    assert len(ListingThenCompacting(tmp_path / "t").table()) == 120


COMPACTOR = textwrap.dedent("""
    import os, sys
    import numpy as np
    import notebookscan as ns
    from notebookscan.store import Store
    from notebookscan.store.shards import ShardData, read_shard
    path, stop, rounds_file = sys.argv[1:]

    def take(s, rows):
        pick = lambda part: {k: v[rows] for k, v in part.items()}
        return ShardData(len(rows), pick(s.params), pick(s.bookkeeping), pick(s.results),
                         s.result_dims, s.result_attrs, pick(s.lengths), s.coords, s.attrs)

    store = Store(path)
    rounds = 0
    while not os.path.exists(stop):
        ns.compact(path)
        rounds += 1
        with open(rounds_file, "w") as f:
            f.write(str(rounds))
        # split the compacted shard again (written first, deleted after), to compact anew
        for name in store.shard_files():
            shard = read_shard(os.path.join(store.shards_dir, name))
            for part in np.array_split(np.arange(shard.n), 40):
                store.write(take(shard, part))
            os.unlink(os.path.join(store.shards_dir, name))
""")


def test_index_sees_every_point_while_another_process_compacts(tmp_path):
    path = tmp_path / "s"
    small_shards(path)
    stop, rounds = tmp_path / "stop", tmp_path / "rounds"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    compactor = subprocess.Popen(
        [sys.executable, "-c", COMPACTOR, str(path), str(stop), str(rounds)], env=env)
    try:
        reused = Store(path)
        counts = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                rounds.exists() and int(rounds.read_text() or 0) >= 2):
            counts.append(len(Store(path).index().done))
            counts.append(len(reused.index().done))
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)
            counts.append(len(Store(path).table()))
            counts.append(int((Store(path).dataset().ns_status == "done").sum()))
    finally:
        stop.touch()
        compactor.wait(timeout=60)
    assert int(rounds.read_text()) >= 2  # it really compacted meanwhile
    assert len(counts) > 10
    assert set(counts) == {120}, sorted(set(counts))


def test_check_written_finds_changed_rows(tmp_path):
    store = small_shards(tmp_path / "s", points=10, shards=1)
    name = store.shard_files()[0]
    shard = read_shard(os.path.join(store.shards_dir, name), text_as_bytes=True)
    assert check_written(store, name, shard) == ""
    changed = read_shard(os.path.join(store.shards_dir, name), text_as_bytes=True)
    changed.results["v"][3] = 99.0
    assert "checksum of 'v'" in check_written(store, name, changed)
    changed.bookkeeping["key"][4] = changed.bookkeeping["key"][3]
    assert "rows per key" in check_written(store, name, changed)


def test_check_written_reads_back_a_few_variables_at_a_time(tmp_path):
    # a compaction's read-back check holds ~CHECK_BYTES of the written shard, not all of it
    import tracemalloc

    store = small_shards(tmp_path / "s", points=10, shards=1)
    shard = read_shard(os.path.join(store.shards_dir, store.shard_files()[0]),
                       text_as_bytes=True)
    rng = np.random.default_rng(1)
    for i in range(4):  # 4 results of 3 MB each
        shard.results[f"b{i}"] = rng.random((10, 37_500))
        shard.result_dims[f"b{i}"] = ("s",)
        shard.result_attrs[f"b{i}"] = {}
    name = store.write(shard, register_runs=False)
    tracemalloc.start()
    try:
        assert check_written(store, name, shard) == ""
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * 2**20, peak  # the whole shard read back is 12 MB
    shard.results["b3"][9, 5] += 1.0  # a change in the last group read is found
    assert "checksum of 'b3'" in check_written(store, name, shard)
    del shard.results["b2"]  # a variable the file holds but the shard does not
    assert "['b2'] missing or extra" in check_written(store, name, shard)
    shard.bookkeeping["status"] = shard.bookkeeping["status"].copy()
    shard.bookkeeping["status"][0] = b"failed"
    shard.results["b2"] = shard.results["b3"]
    assert "checksum of " in check_written(store, name, shard)


def test_checksum_in_slices_ignores_how_text_and_numbers_were_read():
    from notebookscan.store.maintenance import _checksum

    words = np.array([f"w{i % 977}" for i in range(300_000)], dtype=object)  # many slices
    as_bytes = np.array([w.encode() for w in words], dtype="S8")
    assert _checksum(words) == _checksum(as_bytes)
    changed = as_bytes.copy()
    changed[299_999] = b"x"
    assert _checksum(changed) != _checksum(as_bytes)
    numbers = np.arange(300_000, dtype=np.int32)
    assert _checksum(numbers) == _checksum(numbers.astype(np.int64))
    floats = np.where(numbers % 7 == 0, np.nan, numbers).astype(np.float32)
    assert _checksum(floats) == _checksum(floats.astype(np.float64))
