"""Stop a cluster's local processes as soon as the process that started it is gone.

A process killed with SIGKILL (or by the OOM killer) runs no exit hook, so the
controller and engines it started would keep running. For each cluster it owns,
notebookscan starts this script as a small separate process (its own session, so a
Ctrl-C in the terminal does not reach it). It polls cheaply:

- its lease file is gone: the cluster was stopped normally, exit;
- its parent (the owner) is gone (``os.getppid()`` changed, the orphan was re-parented):
  SIGKILL every process of this user whose environment carries the cluster's token
  (controller, engines, nannies, anything an engine started), stop batch jobs through
  ipyparallel's state files, remove the temporary profile directory, exit.

It runs as a plain script (``python ipp_watchdog.py OWNER TOKEN LEASE PROFILE_DIR
keep|remove``), without importing notebookscan, so it starts in a fraction of a second;
:mod:`notebookscan.executors.local_cluster` imports it for :data:`MARKER` and
:func:`marked_processes`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import sys
import time
from typing import Any

#: environment variable set in every process of a watched cluster; its value is the token
MARKER = "NOTEBOOKSCAN_CLUSTER_TOKEN"
#: seconds between two looks at the owner
INTERVAL = 0.25


def marked_processes(token: str) -> list[Any]:
    """This user's processes whose environment has ``MARKER=token`` (psutil.Process)."""
    import psutil

    uid, me = os.getuid(), os.getpid()
    found = []
    for proc in psutil.process_iter(["uids"]):
        try:
            uids = proc.info["uids"]
            if proc.pid == me or uids is None or uids.real != uid:
                continue
            if proc.environ().get(MARKER) == token:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_marked(token: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL the processes carrying ``token``; returns their pids."""
    import psutil

    procs = marked_processes(token)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=timeout)
    return [proc.pid for proc in procs]


def _stop_batch_jobs(profile_dir: str) -> None:
    """Ask ipyparallel to stop engines started through a batch system (scancel, qdel)."""
    for state in glob.glob(os.path.join(profile_dir, "security", "cluster-*.json")):
        try:
            with open(state) as f:
                engines = json.load(f).get("engines", {})
        except (OSError, ValueError):
            continue
        if not engines.get("sets") or "local" in str(engines.get("class", "")).lower():
            continue  # no engines, or local ones: those are gone already
        with contextlib.suppress(Exception):
            import ipyparallel as ipp

            cluster = ipp.Cluster.from_file(state)
            cluster.shutdown_atexit = False
            cluster.stop_cluster_sync()


def watch(owner: int, token: str, lease: str, profile_dir: str, remove: bool) -> int:
    while os.path.exists(lease):
        if os.getppid() != owner:
            kill_marked(token)
            _stop_batch_jobs(profile_dir)
            if remove:
                shutil.rmtree(profile_dir, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(lease)
            return 1
        time.sleep(INTERVAL)
    return 0


def main(argv: list[str]) -> int:
    owner, token, lease, profile_dir, mode = argv[1:6]
    return watch(int(owner), token, lease, profile_dir, mode == "remove")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
