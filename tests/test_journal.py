"""The writer's journal: a SIGKILLed client recomputes only the points in flight.

Real processes, real SIGKILL, real files: a scan in a subprocess logs every call of its
function and every point the loop reported received (``point_done``/``point_failed``
events fire once the chunk is durable); it is killed at a random moment and run again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import notebookscan as ns
from notebookscan.keys import key_array
from notebookscan.run.batch import Batch
from notebookscan.run.worker import PointColumns, run_chunk
from notebookscan.store import Store
from notebookscan.store.journal import (
    FILE_MAGIC,
    Journal,
    encode_record,
    fold_journals,
    journal_dir,
    journal_files,
    read_journal,
)

SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    import notebookscan as ns

    cfg = json.loads(sys.argv[1])

    def model(k):
        fd = os.open(cfg["calls"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{k}\\n".encode())
        os.close(fd)
        time.sleep(cfg["sleep"])
        if k % 97 == 0:
            raise ValueError(f"bad k {k}")
        return {"y": 2.0 * k, "tag": "t" * (k % 3)}

    if __name__ == "__main__":
        scan = ns.Scan(model, ns.grid(k=list(range(cfg["n"]))), store=cfg["store"])
        log = os.open(cfg["received"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def received(point, **_):
            os.write(log, f"{point['k']}\\n".encode())

        scan.events.on("point_done", received)
        scan.events.on("point_failed", received)
        scan.run(executor=cfg["executor"], progress=False, chunk_size=cfg["chunk"])
''')

CHUNK = 10
WORKERS = 2  # NOTEBOOKSCAN_WORKERS for the process pool


def _lines(path) -> list[int]:
    try:
        return [int(line) for line in open(path).read().split()]
    except FileNotFoundError:
        return []


def _start(cfg: dict) -> subprocess.Popen:
    env = {**os.environ, "NOTEBOOKSCAN_WORKERS": str(WORKERS)}
    return subprocess.Popen([sys.executable, cfg["script"], json.dumps(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the client and what it started (pool workers), as a crash would."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _kill_while_running(cfg: dict, rng: random.Random) -> None:
    proc = _start(cfg)
    deadline = time.monotonic() + 60
    while len(_lines(cfg["received"])) < cfg["kill_after"]:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the scan received nothing in 60 s"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.3))
    assert proc.poll() is None, "the scan ended before it was killed: kill earlier"
    _kill_group(proc)


@pytest.mark.parametrize("executor,seed", [("serial", 1), ("serial", 2), ("processes", 3)])
def test_killed_client_recomputes_only_points_in_flight(tmp_path, executor, seed):
    rng = random.Random(seed)
    script = tmp_path / "scan.py"
    script.write_text(SCRIPT)
    cfg = {"script": str(script), "store": str(tmp_path / "store"), "n": 2500,
           "calls": str(tmp_path / "calls"), "received": str(tmp_path / "received"),
           "sleep": 0.0004, "executor": executor, "chunk": CHUNK,
           "kill_after": rng.randrange(100, 800)}
    _kill_while_running(cfg, rng)
    called = Counter(_lines(cfg["calls"]))
    received = set(_lines(cfg["received"]))
    assert ns.verify(cfg["store"]).healthy

    proc = _start(cfg)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-3000:]
    again = Counter(_lines(cfg["calls"])) - called
    recomputed = set(again) & set(called)
    in_flight = set(called) - received  # called, not (yet) reported received
    # every point the client had received is stored and not computed again
    assert recomputed <= in_flight, sorted(recomputed - in_flight)[:10]
    workers = 1 if executor == "serial" else WORKERS
    assert len(recomputed) <= 2 * workers * CHUNK, (len(recomputed), len(in_flight))
    # the store holds every point once, with its values; no journal is left
    ds = ns.open_store(cfg["store"])
    k = ds.k.values
    assert (ds.ns_status.values == np.where(k % 97 == 0, "failed", "done")).all()
    done = k % 97 != 0
    np.testing.assert_array_equal(ds.y.values[done], 2.0 * k[done])
    assert list(ds.tag.values[done]) == ["t" * (i % 3) for i in k[done]]
    assert ns.verify(cfg["store"]).healthy
    assert journal_files(cfg["store"]) == []


# ---------------------------------------------------------------- the journal file

JOURNAL_CHILD = textwrap.dedent('''
    import os, signal, sys, time
    import numpy as np
    from notebookscan.run.batch import Batch
    from notebookscan.keys import key_array
    from notebookscan.store import Store
    from notebookscan.store.journal import Journal
    from notebookscan.run.worker import PointColumns, run_chunk

    store = Store(sys.argv[1])
    store.prepare(__import__("notebookscan").store.schema.Layout("points", ("x",)), ["x"])
    journal = Journal(store.path)
    for start in (0, 10, 20):
        cols = {"x": np.arange(start, start + 10, dtype=float)}
        chunk = run_chunk(lambda x: {"y": x * x, "v": np.arange(3) * x}, PointColumns(cols),
                          np.arange(10), False)
        batch = Batch()
        batch.add(np.arange(10), chunk)
        journal.append(batch.to_shard(["x"], cols, key_array(["x"], cols), np.arange(10),
                                      "run1", {}))
    journal.sync()
    print(journal.path, flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
''')


def _child_journal(tmp_path, how: str) -> tuple[subprocess.Popen, str]:
    """A real process that journals 30 points (3 records), then dies or stays alive."""
    script = tmp_path / "journal_child.py"
    script.write_text(JOURNAL_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "store"), how],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    path = proc.stdout.readline().decode().strip()
    assert path, proc.stderr.read().decode()
    if how == "die":
        proc.wait()
    return proc, path


def _done(tmp_path) -> list[float]:
    ds = ns.open_store(tmp_path / "store")
    return sorted(ds.x.values[ds.ns_status.values == "done"].tolist())


def test_dead_writers_journal_is_folded_and_removed(tmp_path):
    _, path = _child_journal(tmp_path, "die")
    assert _done(tmp_path) == []  # readers do not read journals
    assert fold_journals(Store(tmp_path / "store")) == 30
    assert not os.path.exists(path) and journal_files(str(tmp_path / "store")) == []
    assert _done(tmp_path) == [float(i) for i in range(30)]
    ds = ns.open_store(tmp_path / "store")
    np.testing.assert_array_equal(ds.y.values, ds.x.values ** 2)
    np.testing.assert_array_equal(ds.v.values[:, 2], 2 * ds.x.values)
    assert ns.verify(tmp_path / "store").healthy


@pytest.mark.parametrize("cut", [1, 7, 30, "garbage"])
def test_torn_last_record_is_ignored(tmp_path, cut):
    _, path = _child_journal(tmp_path, "die")
    size = os.path.getsize(path)
    if cut == "garbage":  # a kill mid-write can leave any bytes at the tail
        with open(path, "ab") as f:
            f.write(b"NSJR" + bytes(random.Random(0).randrange(256) for _ in range(200)))
        expected = 30
    else:
        os.truncate(path, size - cut)
        expected = 20
    assert fold_journals(Store(tmp_path / "store")) == expected
    assert _done(tmp_path) == [float(i) for i in range(expected)]
    assert not os.path.exists(path)
    assert ns.verify(tmp_path / "store").healthy


def test_live_writers_journal_is_left_alone(tmp_path):
    proc, path = _child_journal(tmp_path, "live")
    try:
        before = Path(path).read_bytes()
        assert fold_journals(Store(tmp_path / "store")) == 0
        ns.compact(tmp_path / "store")
        assert Path(path).read_bytes() == before
        assert _done(tmp_path) == []
    finally:
        proc.kill()
        proc.wait()
    assert ns.compact(tmp_path / "store").folded == 30  # compaction folds it once dead
    assert _done(tmp_path) == [float(i) for i in range(30)]
    assert not os.path.exists(path)


def _fake_journal_name(store, pid: int) -> str:
    import socket

    from notebookscan.store.files import name_part

    return os.path.join(journal_dir(str(store)),
                        f"u.{name_part(socket.gethostname())}.{pid}.1.abcd.journal")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _record(n: int = 3) -> bytes:
    cols = {"x": np.arange(n, dtype=float)}
    chunk = run_chunk(lambda x: x, PointColumns(cols), np.arange(n), False)
    batch = Batch()
    batch.add(np.arange(n), chunk)
    return encode_record(batch.to_shard(["x"], cols, key_array(["x"], cols), np.arange(n),
                                        "r", {}))


@pytest.mark.parametrize("content", ["not-a-journal", "object-dtype", "symlink", "fifo"])
def test_hostile_journal_is_set_aside_never_followed(tmp_path, content):
    store = tmp_path / "store"
    ns.Scan(lambda x: x, ns.grid(x=[1.0]), store=store).run(executor="serial", progress=False)
    victim = tmp_path / "outside.txt"
    victim.write_text("keep me")
    path = _fake_journal_name(store, _dead_pid())
    if content == "not-a-journal":
        Path(path).write_bytes(b"hello, I am no journal")
    elif content == "object-dtype":  # a well-formed record asking for an object array
        body = bytearray(_record()[28:])
        body = body.replace(b'"|S20"', b'"|O"  ')
        import struct
        from hashlib import blake2b
        head = struct.pack("<4sQ16s", b"NSJR", len(body),
                           blake2b(body, digest_size=16).digest())
        Path(path).write_bytes(FILE_MAGIC + head + bytes(body))
    elif content == "symlink":
        os.symlink(victim, path)
    else:
        os.mkfifo(path)
    with pytest.warns(ns.StoreWarning, match="journal"):
        assert fold_journals(Store(store)) == 0
    assert victim.read_text() == "keep me"
    assert journal_files(str(store)) == []
    assert ns.verify(store).healthy
    assert len(ns.open_store(store).x) == 1


def test_journal_directory_symlink_is_refused(tmp_path):
    store = tmp_path / "store"
    ns.Scan(lambda x: x, ns.grid(x=[1.0]), store=store).run(executor="serial", progress=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rmdir(journal_dir(str(store)))
    os.symlink(outside, journal_dir(str(store)))
    with pytest.raises(ns.StoreError, match="journal"):
        ns.Scan(lambda x: x, ns.grid(x=[1.0, 2.0]), store=store).run(executor="serial",
                                                                    progress=False)
    assert os.listdir(outside) == []


def test_journal_is_emptied_by_each_flush_and_removed_at_the_end(tmp_path):
    store = tmp_path / "store"
    sizes = []
    scan = ns.Scan(lambda x: {"y": x}, ns.grid(x=np.arange(200.0)), store=store)

    def flushed(**_):
        sizes.extend(os.path.getsize(os.path.join(journal_dir(str(store)), name))
                     for name in journal_files(str(store)))

    scan.events.on("flushed", flushed)
    scan.run(executor="serial", progress=False, chunk_size=10, flush_every=50,
             flush_interval=100)
    assert sizes and set(sizes) == {len(FILE_MAGIC)}
    assert journal_files(str(store)) == []
    assert len(ns.open_store(store).y) == 200


def test_record_round_trip_keeps_every_column(tmp_path):
    journal = Journal(str(tmp_path))
    cols = {"x": np.array([1.0, 2.0, 3.0])}
    chunk = run_chunk(lambda x: {"t": "é" * int(x), "b": x > 1, "i": int(x),
                                 "a": np.arange(int(x)) * 1.5},
                      PointColumns(cols), np.arange(3), False)
    batch = Batch()
    batch.add(np.arange(3), chunk)
    shard = batch.to_shard(["x"], cols, key_array(["x"], cols), np.arange(3), "r",
                           {"provenance": "{}"})
    journal.append(shard)
    journal.sync()
    (back,) = read_journal(journal.path)
    for part in ("params", "bookkeeping", "results", "lengths", "coords"):
        assert getattr(back, part).keys() == getattr(shard, part).keys()
        for name, column in getattr(shard, part).items():
            np.testing.assert_array_equal(getattr(back, part)[name], np.asarray(column))
    assert back.result_dims == shard.result_dims and back.attrs == shard.attrs


def test_own_closed_journal_is_folded_by_the_same_process(tmp_path):
    """A notebook kernel outlives a run whose last shard could not be written: its
    journal, closed with records in it, is folded by the kernel's next run."""
    store = tmp_path / "store"
    ns.Scan(lambda x: x, ns.grid(x=[100.0]), store=store).run(executor="serial",
                                                              progress=False)
    journal = Journal(str(store))
    cols = {"x": np.arange(4, dtype=float)}
    chunk = run_chunk(lambda x: x, PointColumns(cols), np.arange(4), False)
    batch = Batch()
    batch.add(np.arange(4), chunk)
    journal.append(batch.to_shard(["x"], cols, key_array(["x"], cols), np.arange(4), "r", {}))
    journal.sync()
    assert fold_journals(Store(store)) == 0  # open: in use by this process
    journal.close()
    assert os.path.exists(journal.path)
    calls = []
    ns.Scan(lambda x: calls.append(x) or x, ns.grid(x=[0.0, 1.0, 2.0, 3.0, 4.0]),
            store=store).run(executor="serial", progress=False)
    assert calls == [4.0]
    assert journal_files(str(store)) == []
