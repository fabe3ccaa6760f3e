"""Killed clients, killed compactions, damaged shards, concurrent writers, merges, full disks."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import notebookscan as ns
from notebookscan.store import Store

from .conftest import SCALE, VARIANTS
from .harness import (
    COMPACT_SCRIPT,
    ScanProcess,
    assert_same_as,
    check_and_finish,
    clean_store,
    copy_store,
    rng_for,
    run_and_kill,
    start,
    stored_rows,
)

N = 40


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_client_killed_at_random_moments(tmp_path, counts, variant, executor):
    """A scan process SIGKILLed again and again, resumed each time: nothing acked is lost."""
    rng = rng_for(f"client-{executor}-{variant}")
    clean = clean_store(tmp_path, N)
    sleep = 0.02
    full = ScanProcess(tmp_path, "timing", n=N, executor=executor, sleep=sleep).timed_run()
    campaigns = 5 * SCALE[variant]
    kills_per_campaign = 5 if executor == "serial" else 4
    for campaign in range(campaigns):
        scan = ScanProcess(tmp_path, f"{executor}-{campaign}", n=N, executor=executor,
                           sleep=sleep)
        for _ in range(kills_per_campaign):
            counts.runs += 1
            if run_and_kill(scan.start(), rng.uniform(0.1, full), counts):
                counts.fault(f"sigkill client ({executor})")
            report = ns.verify(scan.store) if Store(scan.store).exists else None
            assert report is None or report.healthy, str(report)
            lost = scan.lost()
            counts.lost += len(lost)
            assert not lost, f"lost {sorted(lost)[:5]}"
        check_and_finish(scan, clean, counts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compaction_killed_at_random_moments(tmp_path, counts, variant):
    """``ns.compact`` in a subprocess, SIGKILLed while it reads, writes or deletes."""
    rng = rng_for(f"compact-{variant}")
    clean = clean_store(tmp_path, N)
    # one shard per point (three stores merged: a run compacts itself above 16 shards)
    parts = [ScanProcess(tmp_path, f"part{i}", n=N, flush_every=1, flush_interval=0.001,
                         chunk_size=1, window=(i * 0.014, (i + 1) * 0.014)) for i in range(3)]
    for part in parts:
        part.run()
    ns.merge([part.store for part in parts], tmp_path / "many")
    acked = set().union(*(part.acked() for part in parts))
    source = tmp_path / "many"
    assert len(Store(source).shard_files()) >= 15
    script = tmp_path / "compact.py"
    script.write_text(COMPACT_SCRIPT)
    began = time.monotonic()
    subprocess.run([sys.executable, str(script), str(copy_store(source, tmp_path / "t"))],
                   check=True)
    full = time.monotonic() - began  # how long one whole compaction takes here
    for campaign in range(6 * SCALE[variant]):
        store = copy_store(source, tmp_path / f"c{campaign}")
        for _ in range(4):
            counts.runs += 1
            proc = start(str(script), str(store), log=str(tmp_path / "compact.log"))
            if run_and_kill(proc, rng.uniform(0.1, full * 1.1)):
                counts.fault("sigkill compaction")
            assert ns.verify(store).healthy
            missing = acked - set(Store(store).index().done)
            counts.lost += len(missing)
            assert not missing
        ns.compact(store)
        rows, distinct = stored_rows(store)
        counts.stored_twice_after_compaction += rows - distinct
        assert rows == distinct == N
        assert not [f for f in os.listdir(Store(store).shards_dir) if f.startswith(".tmp-")]
        assert_same_as(store, clean)


def _damage(path: str, how: str, rng) -> None:
    size = os.path.getsize(path)
    if how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(rng.randrange(0, size))
    else:  # garble the superblock / header region
        with open(path, "r+b") as f:
            f.seek(rng.randrange(0, 64))
            f.write(bytes(rng.randrange(256) for _ in range(256)))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_damaged_shard_is_set_aside_and_the_rerun_completes(tmp_path, counts, variant, how):
    rng = rng_for(f"damage-{how}-{variant}")
    clean = clean_store(tmp_path, N)
    source = ScanProcess(tmp_path, "src", n=N, flush_every=8)
    source.run()
    for rep in range(3 * SCALE[variant]):
        scan = ScanProcess(tmp_path, "src", n=N, flush_every=8)
        scan.store = copy_store(source.store, tmp_path / f"d{rep}")
        scan.cfg = {**scan.cfg, "store": str(scan.store), "ack": str(tmp_path / f"d{rep}.ack"),
                    "calls": str(tmp_path / f"d{rep}.calls")}
        store = Store(scan.store)
        victim = rng.choice(store.shard_files())
        _damage(os.path.join(store.shards_dir, victim), how, rng)
        counts.fault(f"{how} shard")
        assert not ns.verify(scan.store).healthy  # reported by name
        with pytest.warns(ns.StoreWarning, match=victim):
            ns.open_store(scan.store)
        assert victim not in store.shard_files()
        assert os.path.exists(os.path.join(store.quarantine_dir, victim))
        assert ns.verify(scan.store).healthy
        counts.runs += 1
        scan.run()
        assert ns.verify(scan.store).healthy
        with warnings.catch_warnings():
            warnings.simplefilter("error", ns.StoreWarning)
            assert_same_as(scan.store, clean)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_writers_into_one_store(tmp_path, counts, variant, writers):
    clean = clean_store(tmp_path, N)
    for rep in range(SCALE[variant]):
        scan = ScanProcess(tmp_path, f"shared{rep}", n=N)
        procs = [scan.start() for _ in range(writers)]
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
        counts.runs += writers
        counts.fault(f"{writers} concurrent writers")
        assert ns.verify(scan.store).healthy
        check_and_finish(scan, clean, counts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_merge_of_overlapping_stores(tmp_path, counts, variant):
    clean = clean_store(tmp_path, N)
    for rep in range(SCALE[variant]):
        a = ScanProcess(tmp_path, f"a{rep}", n=N, window=(0.0, 0.027))
        b = ScanProcess(tmp_path, f"b{rep}", n=N, window=(0.013, 1.0))
        a.run()
        b.run()
        counts.runs += 2
        report = ns.merge([a.store, b.store], tmp_path / f"m{rep}")
        counts.fault("merge with overlapping points")
        assert not report.conflicts, str(report)
        merged = tmp_path / f"m{rep}"
        assert ns.verify(merged).healthy
        assert_same_as(merged, clean)
        # merging again copies nothing new; compaction stores each point once
        again = ns.merge(a.store, merged)
        assert not again.copied and not again.conflicts
        ns.compact(merged)
        rows, distinct = stored_rows(merged)
        counts.stored_twice_after_compaction += rows - distinct
        assert rows == distinct == N
        assert_same_as(merged, clean)


def _big(k: float, seed: int):
    rng = np.random.default_rng(seed)
    return {"noise": rng.random(40_000), "y": k}  # ~320 kB that hardly compresses


DISK_SPACE = ns.grid(k=[i / 10 for i in range(16)])


def _fill(store):
    with pytest.raises((OSError, ns.NotebookscanError)) as info:
        ns.Scan(_big, DISK_SPACE, store=store).run(executor="serial", progress=False,
                                                   flush_every=2)
    return info.value


def test_disk_full_while_writing(tmp_path, small_tmpfs, counts):
    """A 2 MiB tmpfs fills up mid-scan: the scan fails, no corrupt or temporary shard is
    left, and a later run on a disk with room completes."""
    store = small_tmpfs / "store"
    counts.runs += 1
    _fill(store)
    counts.fault("disk full")
    assert ns.verify(store).healthy
    leftovers = [f for f in os.listdir(Store(store).shards_dir) if f.startswith(".tmp-")]
    assert not leftovers, leftovers
    stored = set(Store(store).index().done)
    assert 0 < len(stored) < len(DISK_SPACE)
    roomy = copy_store(store, tmp_path / "roomy")
    counts.runs += 1
    progress = ns.Scan(_big, DISK_SPACE, store=roomy).run(executor="serial",
                                                          progress=False).progress
    assert progress.skipped == len(stored) and progress.done == len(DISK_SPACE) - len(stored)
    clean = tmp_path / "clean"
    ns.Scan(_big, DISK_SPACE, store=clean).run(executor="serial", progress=False)
    assert ns.verify(roomy).healthy
    assert_same_as(roomy, clean)


def test_disk_full_error_names_the_full_disk(small_tmpfs):
    error = _fill(small_tmpfs / "store")
    text = f"{type(error).__name__}: {error}"
    assert getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text, text


def _plant(store: Path, kind: str, outside: Path, name: str) -> None:
    """One foreign entry in a store someone else can write (a group-shared store)."""
    shards = store / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    if kind == "symlink to a file outside":
        os.symlink(outside / "precious.nc", shards / f"{name}.nc")
    elif kind == "fifo":
        os.mkfifo(shards / f"{name}.nc")
    elif kind == "garbage":
        (shards / f"{name}.nc").write_bytes(os.urandom(2048))
    elif kind == "directory":
        (shards / f"{name}.nc").mkdir()
    elif kind == "planted reason link":  # where a set-aside shard's reason would go
        (store / "quarantine").mkdir(exist_ok=True)
        os.symlink(outside / "precious.txt", store / "quarantine" / f"{name}.nc.reason.txt")
        (shards / f"{name}.nc").write_bytes(b"not netcdf")


PLANTED = ["symlink to a file outside", "fifo", "garbage", "directory", "planted reason link"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_foreign_files_planted_while_scans_are_killed(tmp_path, counts, variant):
    """Another writer of the directory plants links, FIFOs and garbage while a scan runs
    and is SIGKILLed: nothing outside the store changes, nothing acknowledged is lost,
    no process hangs on a FIFO, and the finished scan equals a clean one."""
    rng = rng_for(f"planted-{variant}")
    clean = clean_store(tmp_path, N)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.nc").write_bytes(b"the user's own file\n")
    (outside / "precious.txt").write_bytes(b"the user's own notes\n")
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    sleep = 0.02
    full = ScanProcess(tmp_path, "timing", n=N, sleep=sleep).timed_run()
    for campaign in range(3 * SCALE[variant]):
        scan = ScanProcess(tmp_path, f"planted-{campaign}", n=N, sleep=sleep)
        for attempt in range(3):
            counts.runs += 1
            proc = scan.start()
            time.sleep(rng.uniform(0.0, full / 2))
            kind = rng.choice(PLANTED)
            _plant(Path(scan.store), kind, outside, f"z{campaign}-{attempt}")
            counts.fault(f"planted {kind}")
            if run_and_kill(proc, rng.uniform(0.05, full), counts):
                counts.fault("sigkill client (planted files)")
            lost = scan.lost()
            counts.lost += len(lost)
            assert not lost, f"lost {sorted(lost)[:5]}"
            assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
        report = ns.verify(scan.store)  # names what was planted (if still there)
        for name in report.corrupt:
            assert name.startswith("z") or name.startswith("."), str(report)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ns.StoreWarning)
            check_planted_and_finish(scan, clean, counts)
        assert {p.name: p.read_bytes() for p in outside.iterdir()} == before


def check_planted_and_finish(scan: ScanProcess, clean: Path, counts) -> None:
    """Finish a scan whose store had foreign files planted: they end up set aside, and
    the points equal a clean run's."""
    scan.run()
    counts.runs += 1
    ns.open_store(scan.store)  # sets aside what a reader meets
    ns.compact(scan.store)
    assert not scan.lost()
    assert ns.verify(scan.store).healthy, str(ns.verify(scan.store))
    rows, distinct = stored_rows(scan.store)
    counts.stored_twice_after_compaction += rows - distinct
    assert rows == distinct == N
    assert_same_as(scan.store, clean)
