"""Foreign, malformed and hostile files in a store are contained.

Real symlinks, hard links, FIFOs, crafted NetCDF files and subprocesses under time and
memory limits: the store reads only regular files it can parse, in bounded time and
memory, and never writes, moves or deletes anything outside its own directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import netCDF4
import numpy as np
import pytest

import notebookscan as ns
from notebookscan.keys import point_key
from notebookscan.store import Store
from notebookscan.store.shards import Record, shard_from_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTSIDE_BYTES = b"the user's own file, never to be touched\n" * 10


def _square(x):
    return x * 10


def _good_store(path, xs=range(5)) -> str:
    ns.Scan(_square, ns.grid(x=list(xs)), store=path).run(executor="serial", progress=False)
    return str(path)


def _outside(tmp_path, name="precious.txt"):
    path = tmp_path / "outside" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(OUTSIDE_BYTES)
    return path


def _open_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ns.StoreWarning)
        return ns.open_store(path, **kwargs)


def _values(ds):
    return {int(x): float(ds.result.sel(x=x)) for x in ds.x.values}


def _garbage_shard(store, name="zz.ns_host.1.0.deadbeef.nc"):
    path = os.path.join(store, "shards", name)
    with open(path, "wb") as f:
        f.write(b"not a netcdf file")
    return name


def _raw_shard(store, name, build, n=1, keys=None, status="done"):
    """A NetCDF file in the store's shards/ with ``key``/``status`` rows plus ``build(nc)``."""
    path = os.path.join(store, "shards", name)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("point", n)
        key = nc.createVariable("key", str, ("point",))
        st = nc.createVariable("status", str, ("point",))
        for i in range(n):
            key[i] = (keys or [f"{i:020d}"])[i]
            st[i] = status
        build(nc)
    return name


def _param(nc, name, values):
    var = nc.createVariable(name, "i8", ("point",))
    var[:] = values
    var.setncattr("notebookscan_role", "parameter")


def _run_python(code, *, timeout=120, limit_as=None):
    """Run ``code`` in a fresh interpreter (this worktree first on the path)."""
    prefix = ""
    if limit_as:
        prefix = ("import resource\n"
                  f"resource.setrlimit(resource.RLIMIT_AS, ({limit_as}, {limit_as}))\n")
    env = {**os.environ, "PYTHONPATH": ROOT, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", prefix + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=env)


# ---------------------------------------------------------------- never outside the store


def test_planted_reason_link_leaves_the_outside_file_untouched(tmp_path):
    store = _good_store(tmp_path / "s")
    victim = _outside(tmp_path)
    bad = _garbage_shard(store)
    os.makedirs(os.path.join(store, "quarantine"))
    os.symlink(victim, os.path.join(store, "quarantine", bad + ".reason.txt"))
    assert _values(_open_quietly(store)) == {x: 10.0 * x for x in range(5)}
    assert victim.read_bytes() == OUTSIDE_BYTES
    reason = os.path.join(store, "quarantine", bad + ".reason.txt")
    assert not os.path.islink(reason)
    with open(reason) as f:
        assert "NetCDF: Unknown file format" in f.read()
    assert os.path.isfile(os.path.join(store, "quarantine", bad))


def test_symlinked_quarantine_is_refused_and_nothing_moves_there(tmp_path):
    store = _good_store(tmp_path / "s")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bad = _garbage_shard(store)
    (elsewhere / bad).write_bytes(OUTSIDE_BYTES)  # a file of the same name, to be kept
    os.symlink(elsewhere, os.path.join(store, "quarantine"))
    for action in (ns.open_store, ns.verify, ns.compact):
        with pytest.raises(ns.StoreError, match="quarantine"):
            action(store)
    assert (elsewhere / bad).read_bytes() == OUTSIDE_BYTES
    assert sorted(os.listdir(elsewhere)) == [bad]
    assert os.path.isfile(os.path.join(store, "shards", bad))


def test_symlinked_shards_directory_is_refused(tmp_path):
    store = _good_store(tmp_path / "s")
    real = tmp_path / "real-shards"
    os.rename(os.path.join(store, "shards"), real)
    os.symlink(real, os.path.join(store, "shards"))
    before = sorted(os.listdir(real))
    for action in (ns.open_store, ns.verify, ns.compact):
        with pytest.raises(ns.StoreError, match="shards"):
            action(store)
    with pytest.raises(ns.StoreError, match="shards"):
        ns.Scan(_square, ns.grid(x=[7]), store=store).run(executor="serial", progress=False)
    assert sorted(os.listdir(real)) == before


def test_links_fifos_and_directories_named_like_shards_are_set_aside_unfollowed(tmp_path):
    """In a subprocess under a timeout: a FIFO hung open_store, verify, compact, status."""
    store = _good_store(tmp_path / "s")
    victim = tmp_path / "outside" / "victim.nc"
    victim.parent.mkdir()
    shards = os.path.join(store, "shards")
    shutil.copy(os.path.join(shards, sorted(os.listdir(shards))[0]), victim)
    victim_bytes = victim.read_bytes()
    (tmp_path / "copy").mkdir()
    shutil.copytree(store, tmp_path / "copy" / "s")
    for shards in (os.path.join(store, "shards"), tmp_path / "copy" / "s" / "shards"):
        os.mkfifo(os.path.join(shards, "fifo.nc"))
        os.mkdir(os.path.join(shards, "dir.nc"))
        os.symlink(victim, os.path.join(shards, "link.nc"))
        os.symlink(tmp_path / "nowhere", os.path.join(shards, "dangling.nc"))
    result = _run_python(f"""
        import warnings, notebookscan as ns
        from notebookscan.cli import main
        print(sorted(ns.verify({store!r}).corrupt.items()))
        main(["status", {store!r}])
        warnings.simplefilter("ignore")
        ds = ns.open_store({store!r})
        print(sorted(float(v) for v in ds.result.values))
        print(ns.compact({str(tmp_path / "copy" / "s")!r}))
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    for name, kind in (("fifo.nc", "a FIFO"), ("dir.nc", "a directory"),
                       ("link.nc", "a symbolic link"), ("dangling.nc", "a symbolic link")):
        assert f"('{name}', 'not a shard: {kind}, not a regular file')" in result.stdout
    assert "5 stored: 5 done" in result.stdout
    assert "[0.0, 10.0, 20.0, 30.0, 40.0]" in result.stdout
    assert "compacted" in result.stdout or "nothing to compact" in result.stdout
    assert sorted(os.listdir(os.path.join(store, "quarantine"))) == sorted(
        [f"{n}{ext}" for n in ("fifo.nc", "dir.nc", "link.nc", "dangling.nc")
         for ext in ("", ".reason.txt")])
    assert os.path.islink(os.path.join(store, "quarantine", "link.nc"))  # moved, not followed
    assert victim.read_bytes() == victim_bytes


def test_hard_linked_shard_is_read_and_compaction_leaves_the_other_link(tmp_path):
    """Rule: a hard link is read like any shard; the store only unlinks its own entry,
    so the other name keeps its bytes (a ``cp -al`` backup stays whole)."""
    store = _good_store(tmp_path / "s")
    ns.Scan(_square, ns.grid(x=[5, 6]), store=store).run(executor="serial", progress=False)
    shards = os.path.join(store, "shards")
    first = os.path.join(shards, sorted(os.listdir(shards))[0])
    backup = tmp_path / "backup.nc"
    os.link(first, backup)
    before = backup.read_bytes()
    assert ns.verify(store).healthy
    assert ns.compact(store).shards_after == 1
    assert backup.read_bytes() == before and os.stat(backup).st_nlink == 1
    assert _values(_open_quietly(store)) == {x: 10.0 * x for x in range(7)}


def test_lock_file_link_is_refused(tmp_path):
    store = _good_store(tmp_path / "s")
    victim = tmp_path / "not-yet.txt"
    os.symlink(victim, os.path.join(store, ".compact.lock"))
    with pytest.raises(ns.StoreError, match="symbolic link"):
        ns.compact(store)
    assert not victim.exists()


def test_metadata_fifo_and_deep_json_are_refused_in_bounded_time(tmp_path):
    store = _good_store(tmp_path / "s")
    meta = os.path.join(store, "notebookscan.json")
    os.rename(meta, meta + ".saved")
    os.mkfifo(meta)
    result = _run_python(f"""
        import notebookscan as ns
        try:
            ns.open_store({store!r})
        except ns.StoreError as exc:
            print("refused:", exc)
    """, timeout=60)
    assert "refused:" in result.stdout and "FIFO" in result.stdout, result.stderr
    os.unlink(meta)
    with open(meta, "w") as f:
        f.write("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ns.StoreError, match="nested"):
        ns.open_store(store)


# ---------------------------------------------------------------- malformed shards


def _forged(store, name, records):
    """A shard written by the store's own writer, from hand-made records."""
    shard = shard_from_records(["x"], records, {})
    from notebookscan.store.shards import write_shard_atomically

    write_shard_atomically(os.path.join(store, "shards"), name, shard)


def _record(key_x, x, value, finished=0.0):
    from notebookscan.results import Value

    return Record(point_key({"x": key_x}), {"x": x}, 0, "done", {"result": Value(value)}, "",
                  "", 0.0, finished, "h", "w", "r")


MALFORMED = {
    "column_longer_than_points": "dims",
    "key_of_other_parameters": "key that is not their parameters' key",
    "duplicate_key_future_time": "stored 2 times",
    "huge_declared_dimension": "declare",
    "deep_json_attribute": "nested",
    "wrong_dtype": "not text",
    "user_defined_type": "user-defined type",
    "bad_status": "not done or failed",
}


def _plant_malformed(store, kind):
    name = f"m.{kind.replace('_', '-')}.1.0.aaaaaaaa.nc"
    if kind == "column_longer_than_points":
        def build(nc):
            _param(nc, "x", [4])
            nc.createDimension("other", 5)
            var = nc.createVariable("result", "f8", ("other",))
            var[:] = [-1, -2, -3, -4, -5]
            var.setncattr("notebookscan_role", "result")
        _raw_shard(store, name, build, keys=[point_key({"x": 4})])
    elif kind == "key_of_other_parameters":
        _forged(store, name, [_record(0, 4, 999.0)])  # x=0's key with x=4
    elif kind == "duplicate_key_future_time":
        _forged(store, name, [_record(1, 1, 10.0), _record(1, 1, -1.0, finished=4e9)])
    elif kind == "huge_declared_dimension":
        def build(nc):
            _param(nc, "x", [3])
            nc.createDimension("sample", 2**34)
            var = nc.createVariable("result", "f8", ("point", "sample"), zlib=True,
                                    chunksizes=(1, 2**20))
            var.setncattr("notebookscan_role", "result")
        _raw_shard(store, name, build, keys=[point_key({"x": 3})])
        assert os.path.getsize(os.path.join(store, "shards", name)) < 64 * 1024
    elif kind == "deep_json_attribute":
        def build(nc):
            _param(nc, "x", [2])
            nc.setncattr("provenance", "[" * 50_000 + "]" * 50_000)
        _raw_shard(store, name, build, keys=[point_key({"x": 2})])
    elif kind == "wrong_dtype":
        path = os.path.join(store, "shards", name)
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("point", 1)
            nc.createVariable("key", str, ("point",))[0] = point_key({"x": 2})
            nc.createVariable("status", "f8", ("point",))[0] = 1.0
            _param(nc, "x", [2])
    elif kind == "user_defined_type":
        def build(nc):
            _param(nc, "x", [2])
            vl = nc.createVLType(np.int64, "ragged")
            var = nc.createVariable("result", vl, ("point",))
            var[0] = np.arange(3)
            var.setncattr("notebookscan_role", "result")
        _raw_shard(store, name, build, keys=[point_key({"x": 2})])
    elif kind == "bad_status":
        def build(nc):
            _param(nc, "x", [2])
        _raw_shard(store, name, build, keys=[point_key({"x": 2})], status="finished")
    return name


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_shard_is_reported_set_aside_and_good_points_load(tmp_path, kind):
    store = _good_store(tmp_path / "s")
    name = _plant_malformed(store, kind)
    report = ns.verify(store)
    assert not report.healthy and name in report.corrupt, str(report)
    assert MALFORMED[kind] in report.corrupt[name]
    assert len(report.ok) == 1 and report.points == 5
    with pytest.warns(ns.StoreWarning, match=name):
        ds = ns.open_store(store)
    assert _values(ds) == {x: 10.0 * x for x in range(5)}
    with open(os.path.join(store, "quarantine", name + ".reason.txt")) as f:
        assert MALFORMED[kind] in f.read()
    assert set(Store(store).index().done) == {point_key({"x": x}) for x in range(5)}


def test_forged_key_cannot_hide_a_point_from_the_scan(tmp_path):
    """Before: x=0's key on x=4's row made the scan skip x=0 forever."""
    store = str(tmp_path / "s")
    _good_store(store, xs=[1, 2, 3])
    os.makedirs(os.path.join(store, "shards"), exist_ok=True)
    _forged(store, "m.forged.1.0.bbbbbbbb.nc", [_record(0, 4, 999.0)])
    with pytest.warns(ns.StoreWarning, match="forged"):
        ns.Scan(_square, ns.grid(x=[0, 1, 2, 3, 4]), store=store).run(
            executor="serial", progress=False)
    assert _values(_open_quietly(store)) == {x: 10.0 * x for x in range(5)}


def test_metadata_naming_an_absent_parameter_moves_no_shard(tmp_path):
    import json

    store = _good_store(tmp_path / "s")
    meta_path = os.path.join(store, "notebookscan.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["names"] = ["x", "y"]
    meta["layout"] = {"kind": "grid", "dims": ["x", "y"]}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    report = ns.verify(store)
    assert "['x', 'y']" in report.metadata and not report.corrupt and not report.healthy
    with pytest.warns(ns.StoreWarning, match="names the parameters"):
        ds = ns.open_store(store)
    assert sorted(float(v) for v in ds.result.values) == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert not os.path.exists(os.path.join(store, "quarantine"))


def _zstd_bomb(path, megabytes=512):
    """A shard whose one result is ``megabytes`` of zeros, zstd-compressed to ~30 kB."""
    samples = megabytes * 2**20 // 8
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("point", 1)
        nc.createVariable("key", str, ("point",))[0] = point_key({"x": 9})
        nc.createVariable("status", str, ("point",))[0] = "done"
        _param(nc, "x", [9])
        nc.createDimension("sample", samples)
        var = nc.createVariable("result", "f8", ("point", "sample"), compression="zstd",
                                complevel=1, chunksizes=(1, 2**23))
        var.setncattr("notebookscan_role", "result")
        zeros = np.zeros(2**23)
        for start in range(0, samples, 2**23):
            var[0, start:start + 2**23] = zeros


@pytest.mark.skipif(not getattr(netCDF4, "__has_zstandard_support__", False),
                    reason="netCDF4 built without zstd")
def test_bombs_and_huge_dimensions_finish_under_a_memory_limit(tmp_path):
    """open_store, verify, compact and status in a process limited to 1.5 GiB of address
    space: a 30 kB zstd bomb of 512 MiB and a 12 kB file declaring 2**34 samples."""
    store = _good_store(tmp_path / "s")
    _zstd_bomb(os.path.join(store, "shards", "m.bomb.1.0.cccccccc.nc"))
    _plant_malformed(store, "huge_declared_dimension")
    result = _run_python(f"""
        import warnings, notebookscan as ns
        from notebookscan.cli import main
        report = ns.verify({store!r})
        print(sorted(report.corrupt))
        warnings.simplefilter("ignore")
        ds = ns.open_store({store!r})
        print(sorted(float(v) for v in ds.result.values))
        print(ns.compact({store!r}))
        main(["status", {store!r}])
    """, limit_as=3 * 2**29, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "['m.bomb.1.0.cccccccc.nc', 'm.huge-declared-dimension.1.0.aaaaaaaa.nc']" \
        in result.stdout
    assert "[0.0, 10.0, 20.0, 30.0, 40.0]" in result.stdout
    assert "5 done" in result.stdout


def test_legit_mixed_type_parameters_pass_the_key_check(tmp_path):
    """Values of several kinds in one store (one kind per run: a space refuses a mix) keep
    their own keys, whatever type a compacted shard stores them as."""
    for i, spaces in enumerate([
            [ns.grid(m=[1, 2.5], b=[True, False]), ns.grid(m=["a"], b=[True, False]),
             ns.grid(m=[True], b=[True, False])],
            [ns.grid(m=[0.1, 1e-300, -0.0, 1e20, np.float32(0.3)], b=["é", "a b", "", "1"]),
             ns.grid(m=[2**60], b=["True"])]]):
        store = str(tmp_path / f"s{i}")
        for space in spaces:
            ns.Scan(lambda m, b: 1, space, store=store).run(executor="serial", progress=False)
        ns.compact(store)
        assert ns.verify(store).healthy, str(ns.verify(store))
        for space in spaces:
            assert ns.Scan(lambda m, b: 1, space, store=store).plan().stored == len(space)


# ---------------------------------------------------------------- leftovers


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_gone_writers_are_removed_and_counted(tmp_path):
    store = _good_store(tmp_path / "s")
    host = socket.gethostname()
    dead, alive = _dead_pid(), os.getpid()
    shards = os.path.join(store, "shards")
    planted = {
        os.path.join(shards, f".tmp-merge-{host}.{dead}.0123abcd"): True,
        os.path.join(shards, f".tmp-root.{host}.{dead}.1.abcd.nc"): True,
        os.path.join(store, f".tmp-meta.{host}.{dead}.ab12.json"): True,
        os.path.join(shards, f".tmp-merge-{host}.{alive}.0123abcd"): False,  # still writing
        os.path.join(shards, ".tmp-merge-0123456789abcdef"): True,  # old name, old file
        os.path.join(store, ".tmp-0123456789abcdef.json"): False,  # old name, recent
    }
    for path in planted:
        with open(path, "wb") as f:
            f.write(b"x" * 1000)
    old = time.time() - 3 * 24 * 3600
    os.utime(os.path.join(shards, ".tmp-merge-0123456789abcdef"), (old, old))
    status = subprocess.run([sys.executable, "-m", "notebookscan", "status", store],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert "4 temporary file(s) of writers that are gone" in status.stdout, status.stdout
    report = ns.verify(store)
    assert report.removed_temporary == 4 and report.healthy
    for path, gone in planted.items():
        assert os.path.exists(path) != gone, path


def test_merge_fsyncs_the_copies_and_the_directory(tmp_path):
    src = _good_store(tmp_path / "src")
    dest = tmp_path / "dest"
    log = tmp_path / "strace.log"
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    proc = subprocess.run(
        ["strace", "-f", "-y", "-e", "trace=fsync", "-o", str(log), sys.executable, "-c",
         f"import notebookscan as ns; print(ns.merge({src!r}, {str(dest)!r}))"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    if proc.returncode and "ptrace" in proc.stderr:
        pytest.skip("ptrace is not allowed here")
    assert proc.returncode == 0, proc.stderr
    synced = log.read_text()
    shard = os.listdir(src + "/shards")[0]
    assert ".tmp-merge-" in synced  # the copy, before its rename to the shard's name
    assert f"<{dest}/shards>" in synced  # the directory, after the rename
    assert os.path.exists(dest / "shards" / shard)


# ---------------------------------------------------------------- stores that cannot be written


def _remount(mount, mode):
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "notebookscan", *args], capture_output=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)


def test_read_only_store_is_refused_before_computing(small_tmpfs, tmp_path):
    store = small_tmpfs / "s"
    _good_store(store, xs=[0, 1])
    _remount(small_tmpfs, "ro")
    try:
        calls = []
        with pytest.raises(ns.StoreError, match=r"cannot write the store .*Read-only"):
            ns.Scan(lambda x: calls.append(x) or x, ns.grid(x=[0, 1, 2, 3]), store=store).run(
                executor="serial", progress=False)
        assert calls == []
        assert _values(ns.open_store(store)) == {0: 0.0, 1: 10.0}  # reading still works
        assert ns.verify(store).healthy
        compacted = _cli("compact", str(store))
        assert compacted.returncode == 1
        lines = compacted.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "Read-only file system" in lines[0], compacted.stderr
        assert "Traceback" not in compacted.stderr.decode()
    finally:
        _remount(small_tmpfs, "rw")


def test_full_disk_on_a_new_store_is_one_line(small_tmpfs, tmp_path):
    with open(small_tmpfs / "filler", "wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    model = tmp_path / "model.py"
    model.write_text("def f(x):\n    return x\n")
    result = _cli("run", f"{model}:f", "--store", str(small_tmpfs / "new"), "--axis", "x=1,2",
                  "--executor", "serial", "--no-progress")
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "no space left" in err.lower() and str(small_tmpfs / "new") in err


def test_directory_that_is_not_a_store_and_path_under_a_file_are_refused(tmp_path):
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("precious")
    with pytest.raises(ns.StoreError, match="not a notebookscan store"):
        ns.Scan(_square, ns.grid(x=[1]), store=other).run(executor="serial", progress=False)
    assert sorted(os.listdir(other)) == ["chapter1.tex"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ns.StoreError, match="is a file"):
        ns.Scan(_square, ns.grid(x=[1]), store=afile / "store").run(
            executor="serial", progress=False)
    model = tmp_path / "model.py"
    model.write_text("def f(x):\n    return x\n")
    for store in (other, afile / "store"):
        result = _cli("run", f"{model}:f", "--store", str(store), "--axis", "x=1,2",
                      "--executor", "serial", "--no-progress")
        err = result.stderr.decode()
        assert result.returncode in (1, 2) and "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 2 and str(store) in err, err


def test_non_utf8_store_path_prints_in_one_line(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9"
    _good_store(os.fsdecode(raw))
    result = _cli(b"status", raw)  # bytes arguments, as a shell passes them
    assert result.returncode == 0, result.stderr
    assert raw in result.stdout and b"5 stored: 5 done" in result.stdout
    missing = _cli(b"verify", raw + b"-gone")
    assert missing.returncode == 2 and b"Traceback" not in missing.stderr
