"""Fault injection: scans and compactions in real subprocesses, killed at random moments.

A scan runs in its own Python process (``SCAN_SCRIPT``), so SIGKILL hits it for real.
The process keeps two logs beside the store:

* ``ack`` — keys the scan *reported durable*: every key of a ``point_done`` event is
  appended (and fsynced) when the next ``flushed`` event fires. A key in ``ack`` that is
  not ``done`` in the store afterwards is a **lost point**.
* ``calls`` — one line per call of the model (written by the worker before computing), so
  points computed more than once (re-run after a fault) can be counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import xarray as xr

import notebookscan as ns
from notebookscan.store import Store
from notebookscan.store.shards import read_shard

TIMING = ["ns_started", "ns_finished", "ns_duration", "ns_host", "ns_worker", "ns_run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

SCAN_SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    import notebookscan as ns

    cfg = json.loads(sys.argv[1])
    CALLS = cfg["calls"]
    SLEEP = cfg["sleep"]

    def model(k: float, seed: int):
        fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, (repr(k) + "\\n").encode())
        os.close(fd)
        time.sleep(SLEEP)
        rng = np.random.default_rng(seed)
        return {"y": k * rng.random(), "trace": np.cumsum(rng.normal(size=3))}

    space = ns.grid(k=[round(i / 1000, 3) for i in range(cfg["n"])])
    if cfg.get("window"):
        lo, hi = cfg["window"]
        space = space.where(lambda p: lo <= p["k"] < hi)

    if __name__ == "__main__":
        executor = cfg["executor"]
        if executor.startswith("connect:"):
            executor = ns.connect(connection_file=executor[len("connect:"):], timeout=60)
        scan = ns.Scan(model, space, store=cfg["store"])
        pending = []

        def done(key, **_):
            pending.append(key)

        def flushed(**_):
            if pending:
                with open(cfg["ack"], "a") as f:
                    f.write("".join(k + "\\n" for k in pending))
                    f.flush()
                    os.fsync(f.fileno())
                pending.clear()

        scan.events.on("point_done", done)
        scan.events.on("flushed", flushed)
        scan.run(executor=executor, progress=False, flush_every=cfg["flush_every"],
                 flush_interval=cfg["flush_interval"], max_retries=cfg["max_retries"],
                 retry_failed=True, chunk_size=cfg.get("chunk_size"))
''')

COMPACT_SCRIPT = "import sys, notebookscan as ns; ns.compact(sys.argv[1])\n"


@dataclass
class Counts:
    """What a fault test did; summed over the session into ``test-artifacts/faults.json``."""

    runs: int = 0
    faults: int = 0
    lost: int = 0
    computed_twice: int = 0
    stored_twice_after_compaction: int = 0
    orphans: int = 0  # processes a killed client left running (pool workers)
    ended_after: list[float] = field(default_factory=list)  # s from a controller kill to
    #                                                         the client's own exit
    by_kind: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def fault(self, kind: str, n: int = 1) -> None:
        self.faults += n
        self.by_kind[kind] = self.by_kind.get(kind, 0) + n

    def add(self, other: Counts) -> None:
        for name in ("runs", "faults", "lost", "computed_twice", "stored_twice_after_compaction",
                     "orphans"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind, n in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n
        self.notes.extend(other.notes)
        self.ended_after.extend(other.ended_after)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counts:
        """Counts written by :meth:`as_dict` (other keys, such as ``when``, ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def write_artifact(variant: str, tests: dict[str, Counts], seconds: float) -> Path:
    """Merge this session's counts into ``test-artifacts/faults.json`` under ``variant``:
    tests run now replace their own earlier counts, other tests' counts are kept (a run of
    a few fault tests does not wipe the others'), and the total is recomputed."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "faults.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    entry = data.get(variant, {})
    by_test = entry.get("tests", {})
    for name, counts in tests.items():
        by_test[name] = {**counts.as_dict(), "when": now}
    total = Counts()
    for counts in by_test.values():
        total.add(Counts.from_dict(counts))
    data[variant] = {"total": total.as_dict(), "tests": by_test, "when": now,
                     "seconds_last_session": round(seconds, 1)}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


class ScanProcess:
    """One store plus its logs, and scans of it run as subprocesses."""

    def __init__(self, root: Path, name: str, *, n: int = 40, sleep: float = 0.003,
                 executor: str = "serial", flush_every: int = 5, flush_interval: float = 0.05,
                 max_retries: int = 100, window: tuple[float, float] | None = None,
                 chunk_size: int | None = None):
        root.mkdir(parents=True, exist_ok=True)
        self.script = root / "fault_scan.py"
        if not self.script.exists():
            self.script.write_text(SCAN_SCRIPT)
        self.store = root / name
        self.cfg = {"store": str(self.store), "ack": str(root / f"{name}.ack"),
                    "calls": str(root / f"{name}.calls"), "n": n, "sleep": sleep,
                    "executor": executor, "flush_every": flush_every,
                    "flush_interval": flush_interval, "max_retries": max_retries,
                    "window": list(window) if window else None, "chunk_size": chunk_size}

    def start(self, **overrides: Any) -> subprocess.Popen:
        cfg = {**self.cfg, **overrides}
        return start(str(self.script), json.dumps(cfg), log=f"{self.store}.log")

    def run(self, timeout: float = 120, **overrides: Any) -> None:
        proc = self.start(**overrides)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(proc)
            raise AssertionError(f"the scan of {self.store} did not finish in {timeout} s") \
                from None
        assert proc.returncode == 0, Path(f"{self.store}.log").read_text()[-3000:]

    def timed_run(self, **overrides: Any) -> float:
        """Run to the end; return the seconds it took (to draw kill moments within)."""
        start = time.monotonic()
        self.run(**overrides)
        return time.monotonic() - start

    def acked(self) -> set[str]:
        try:
            return set(Path(self.cfg["ack"]).read_text().split())
        except FileNotFoundError:
            return set()

    def calls(self) -> Counter:
        try:
            return Counter(Path(self.cfg["calls"]).read_text().split())
        except FileNotFoundError:
            return Counter()

    def computed_twice(self) -> int:
        return sum(c - 1 for c in self.calls().values() if c > 1)

    def lost(self) -> set[str]:
        """Keys reported durable that the store does not hold as done."""
        acked = self.acked()
        if not acked:
            return set()
        return acked - done_keys(self.store)


def start(*args: str, log: str) -> subprocess.Popen:
    """A Python subprocess in a session of its own (so its pool processes can be found)."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


#: seconds a killed client's pool workers get to notice and exit before they count as
#: orphans (they look at their parent every 0.5 s)
ORPHAN_GRACE = 3.0


def kill(proc: subprocess.Popen, counts: Counts | None = None) -> None:
    """SIGKILL ``proc``; then end what it leaves behind (pool processes), counting what
    still runs ``ORPHAN_GRACE`` seconds later as orphans."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _group_members(proc.pid)
    deadline = time.monotonic() + ORPHAN_GRACE
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _group_members(proc.pid)
    if left and counts is not None:
        counts.orphans += len(left)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _group_members(pgid: int) -> list[int]:
    import psutil

    members = []
    for p in psutil.process_iter(["pid"]):
        # ProcessLookupError: it exited between the listing and getpgid
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(p.info["pid"]) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p.info["pid"])
    return members


def run_and_kill(proc: subprocess.Popen, delay: float, counts: Counts | None = None) -> bool:
    """SIGKILL ``proc`` after ``delay`` seconds; False when it ended by itself first."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            kill(proc)
            return False
        time.sleep(0.005)
    killed = proc.poll() is None
    kill(proc, counts if killed else None)
    return killed


def done_keys(store: Path) -> set[str]:
    if not Store(store).exists:
        return set()
    return set(Store(store).index().done)


def stored_rows(store: Path) -> tuple[int, int]:
    """(rows over all shards, distinct keys)."""
    s = Store(store)
    keys: list[str] = []
    for name in s.shard_files():
        keys.extend(read_shard(os.path.join(s.shards_dir, name), ["status"])
                    .bookkeeping["key"].tolist())
    return len(keys), len(set(keys))


def comparable(store: Path) -> xr.Dataset:
    return ns.open_store(store).drop_vars(TIMING).drop_attrs()


def assert_same_as(store: Path, clean: Path) -> None:
    xr.testing.assert_identical(comparable(store), comparable(clean))


def check_and_finish(scan: ScanProcess, clean: Path, counts: Counts) -> None:
    """After faults: healthy store, nothing lost; finish the scan, compact, compare."""
    report = ns.verify(scan.store) if Store(scan.store).exists else None
    assert report is None or report.healthy, str(report)
    lost = scan.lost()
    counts.lost += len(lost)
    assert not lost, f"{len(lost)} point(s) reported durable are missing: {sorted(lost)[:5]}"
    scan.run()
    counts.runs += 1
    assert ns.verify(scan.store).healthy
    ns.compact(scan.store)
    rows, distinct = stored_rows(scan.store)
    counts.stored_twice_after_compaction += rows - distinct
    assert rows == distinct, f"{rows - distinct} point(s) stored twice after compaction"
    counts.computed_twice += scan.computed_twice()
    assert not scan.lost()
    assert_same_as(scan.store, clean)


def clean_store(root: Path, n: int) -> Path:
    """A store of the same scan run without faults (once per size and root)."""
    scan = ScanProcess(root, f"clean-{n}", n=n, sleep=0.0, flush_every=10_000)
    if not Store(scan.store).exists:
        scan.run()
    return scan.store


def copy_store(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def rng_for(name: str) -> random.Random:
    """A seeded generator per test; NS_FAULTS_SEED changes every test's draws at once."""
    return random.Random(f"{os.environ.get('NS_FAULTS_SEED', '0')}:{name}")
