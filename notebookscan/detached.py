"""Detached scans: the scan loop in a background process that outlives the notebook.

``scan.run(detach=True)`` writes the run's description beside the store and starts
``python -m notebookscan.detached`` in a new session. Closing the notebook, restarting the
kernel or losing the ssh connection does not stop it. Any process can then attach to it
from the store path alone: ``ns.attach("results/rates")`` gives progress, stop, and wait.

The run's description (the function and the space, pickled by value) lives in
``<store>/.runs/<id>/run.pkl``, readable by its owner only. It is read by the detached
runner that the same user started and by nothing else: opening or merging a store never
reads it, so a store from someone else never executes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Generator
from typing import Any

from .errors import ScanError
from .store.files import pid_alive
from .store.schema import DETACHED_RUNS

__all__ = ["DetachedRun", "attach"]

RUNS = DETACHED_RUNS
SPEC = "run.pkl"
STATUS = "status.json"
STOP = "stop"
LOG = "log.txt"
STATUS_INTERVAL = 0.5


def _runs_dir(store_path: str) -> str:
    return os.path.join(os.path.abspath(store_path), RUNS)


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class DetachedRun:
    """A handle on a scan running in a detached background process.

    Works from any process that can read the store directory: the one that started the
    run, a new kernel, or a terminal (``notebookscan status``).
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.id = os.path.basename(directory)

    def __repr__(self) -> str:
        status = self.status()
        return (f"<DetachedRun {self.id}: {status.get('state')}, {status.get('done', 0)} done, "
                f"{status.get('failed', 0)} failed of {status.get('total', '?')}>")

    def status(self) -> dict[str, Any]:
        """The last progress the runner wrote (state, done, failed, total, pid, …)."""
        try:
            with open(os.path.join(self.directory, STATUS), encoding="utf-8") as f:
                status = json.load(f)
        except (FileNotFoundError, ValueError):
            status = {"state": "starting"}
        pid = status.get("pid")
        if status.get("state") in ("starting", "running") and pid and not pid_alive(pid):
            status["state"] = "died"
        return status

    @property
    def running(self) -> bool:
        """True while the background process is starting or running the scan."""
        return self.status().get("state") in ("starting", "running")

    def stop(self, now: bool = False) -> None:
        """Ask the runner to stop; finished points are flushed to the store first."""
        with open(os.path.join(self.directory, STOP), "w") as f:
            f.write("now" if now else "finish")

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """Block until the run ends; returns its final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the detached run {self.id} is still running")
            time.sleep(poll)
        return self.status()

    async def _wait_async(self, poll: float = 0.5) -> dict[str, Any]:
        while self.running:
            await asyncio.sleep(poll)
        return self.status()

    def __await__(self) -> Generator[Any, None, dict[str, Any]]:
        return self._wait_async().__await__()

    def log(self) -> str:
        """What the runner printed (progress messages, errors)."""
        try:
            with open(os.path.join(self.directory, LOG), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def start(scan: Any, executor: Any, run_kwargs: dict[str, Any]) -> DetachedRun:
    """Start ``scan.run(executor, **run_kwargs)`` in a detached process."""
    import cloudpickle

    if executor is not None and not isinstance(executor, (str, dict)):
        raise ScanError(
            "detach=True needs an executor the background process can create itself: None "
            "(local engines), 'processes', 'serial', or the arguments of "
            "notebookscan.cluster.connect() as a dict, e.g. executor={'profile': 'mpi', "
            "'cluster_id': 'nightly'}; got " + type(executor).__name__
        )
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    directory = os.path.join(_runs_dir(scan.store.path), run_id)
    os.makedirs(directory, mode=0o700)
    spec_path = os.path.join(directory, SPEC)
    fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        cloudpickle.dump({"function": scan.function, "space": scan.space,
                          "store": scan.store.path, "executor": executor,
                          "run_kwargs": run_kwargs}, f)
    _write_json(os.path.join(directory, STATUS), {"state": "starting", "pid": None})
    with open(os.path.join(directory, LOG), "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from notebookscan.detached import main; "
             "sys.exit(main(sys.argv[1]))", directory],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=os.getcwd(),
        )
    _write_json(os.path.join(directory, STATUS), {"state": "starting", "pid": process.pid})
    return DetachedRun(directory)


def attach(store: str | os.PathLike[str], run_id: str | None = None) -> DetachedRun:
    """Attach to the latest detached run of a store (or the one named ``run_id``)."""
    runs = _runs_dir(os.fspath(store))
    try:
        ids = sorted(d for d in os.listdir(runs) if os.path.isdir(os.path.join(runs, d)))
    except FileNotFoundError:
        ids = []
    if run_id is None:
        if not ids:
            raise ScanError(f"no detached run was started for the store {os.fspath(store)!r}; "
                            "start one with scan.run(detach=True)")
        run_id = ids[-1]
    elif run_id not in ids:
        raise ScanError(f"no detached run {run_id!r} in {runs}; the runs are: {ids}")
    return DetachedRun(os.path.join(runs, run_id))


# ---------------------------------------------------------------- the runner process


def _resolve(executor: Any) -> Any:
    if isinstance(executor, dict):
        from .cluster import connect

        return connect(**executor)
    return executor


def _serve(directory: str) -> int:
    import cloudpickle

    from .scan import Scan

    with open(os.path.join(directory, SPEC), "rb") as f:
        spec = cloudpickle.load(f)
    status_path = os.path.join(directory, STATUS)
    state: dict[str, Any] = {"state": "running", "pid": os.getpid(), "done": 0, "failed": 0,
                             "total": None, "started": time.time()}
    _write_json(status_path, state)
    scan = Scan(spec["function"], spec["space"], store=spec["store"])
    last = [0.0]

    def on_progress(done: int, failed: int, total: int, running: int, **_: Any) -> None:
        state.update(done=done, failed=failed, total=total, running=running)
        if time.monotonic() - last[0] >= STATUS_INTERVAL:
            last[0] = time.monotonic()
            _write_json(status_path, state)

    scan.events.on("progress", on_progress)
    scan.events.on("started", lambda total, skipped, **_: state.update(total=total,
                                                                       skipped=skipped))
    finished = threading.Event()

    def watch_stop() -> None:
        stop_file = os.path.join(directory, STOP)
        while not finished.wait(0.2):
            if os.path.exists(stop_file) and scan._run is not None:
                with open(stop_file) as f:
                    now = f.read().strip() == "now"
                scan.stop(now=now, wait=False)
                return

    signal.signal(signal.SIGTERM, lambda *_: scan._run and scan.stop(wait=False))
    threading.Thread(target=watch_stop, daemon=True).start()
    try:
        run = scan.run(_resolve(spec["executor"]), wait=True, progress=False,
                       **spec["run_kwargs"])
        progress = run.progress
        state.update(done=progress.done, failed=progress.failed, total=progress.total,
                     running=0, state="stopped" if progress.stopped else "finished")
        code = 0
    except BaseException as exc:
        state.update(state="failed", error=f"{type(exc).__name__}: {exc}")
        code = 1
        raise
    finally:
        finished.set()
        state["ended"] = time.time()
        _write_json(status_path, state)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, SPEC))  # the function is not needed any more
    return code


def main(directory: str) -> int:
    """Entry point of the detached runner process."""
    return _serve(directory)
