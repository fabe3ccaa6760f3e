"""Engines as Slurm jobs on a real single-node Slurm cluster started for the session.

The cluster comes from ``tests/slurm/slurm_single_node.sh`` (munged, slurmctld and
slurmd from Debian's packages, installed with apt-get when missing, own state directory
and ports). In CI (``CI=true``) these tests must run: any reason to skip fails them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

import notebookscan as ns
from notebookscan.executors.cluster import start_cluster
from notebookscan.executors.ipyparallel import IPyParallelExecutor

pytestmark = [pytest.mark.cluster, pytest.mark.slurm]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SCRIPT = Path(__file__).resolve().parent / "slurm" / "slurm_single_node.sh"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _reason_not_to_run() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the single-node Slurm set-up needs Linux, not {sys.platform}"
    if shutil.which("bash") is None:
        return "bash is not available"
    have = all(shutil.which(c) for c in ("slurmctld", "slurmd", "sbatch", "munged"))
    if have:
        return None
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and apt-get is not available to install it"
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it with apt-get needs root"
    return None


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (sockets held open together, so the OS cannot hand out
    the same port twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@dataclass
class Slurm:
    directory: str
    conf: str
    env: dict[str, str]

    def squeue(self) -> list[str]:
        out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True,
                             text=True, check=True, env=self.env, timeout=30)
        return out.stdout.split("\n")[:-1]


def _script(action: str, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"slurm_single_node.sh {action} failed ({done.returncode}):\n"
                           f"{done.stdout}{done.stderr}")
    return done.stderr


def _daemons_of(conf: str) -> list[str]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if proc.info["name"] not in {"slurmctld", "slurmd", "munged", "slurmstepd"}:
            continue
        if os.path.dirname(conf) not in cmdline:
            continue
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.info['pid']} {cmdline}")
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """A running single-node Slurm; ``SLURM_CONF`` is set for the session."""
    reason = _reason_not_to_run()
    if reason:
        if IN_CI:
            pytest.fail(f"CI must run the Slurm tests, but {reason}", pytrace=False)
        pytest.skip(reason)
    # not under pytest's 0700 temporary tree: munged wants a socket dir others can reach
    directory = tempfile.mkdtemp(prefix="notebookscan-slurm-")
    ctld_port, slurmd_port = _free_ports(2)
    env = dict(os.environ, SLURM_TEST_DIR=directory, SLURM_TEST_CTLD_PORT=str(ctld_port),
               SLURM_TEST_SLURMD_PORT=str(slurmd_port))
    conf = os.path.join(directory, "slurm.conf")
    env["SLURM_CONF"] = conf
    saved = os.environ.get("SLURM_CONF")
    try:
        _script("start", env)
        os.environ["SLURM_CONF"] = conf
        yield Slurm(directory, conf, env)
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        try:
            _script("stop", env, timeout=120)
        finally:
            left = _daemons_of(conf)
            shutil.rmtree(directory, ignore_errors=True)
        assert not left, f"Slurm daemons left running: {left}"


@dataclass
class SlurmEngines:
    cluster: Any
    client: Any
    workdir: str


@pytest.fixture(scope="session")
def slurm_engines(slurm: Slurm) -> Iterator[SlurmEngines]:
    """Two ipyparallel engines running as one Slurm job (``Cluster(engines="slurm")``)."""
    import ipyparallel as ipp

    workdir = tempfile.mkdtemp(prefix="notebookscan-slurm-cwd-")
    cwd = os.getcwd()
    os.chdir(workdir)  # ipyparallel writes slurm_engine.sbatch into the current directory
    cluster = ipp.Cluster(
        engines="slurm",
        n=2,
        profile_dir=os.path.join(workdir, "profile"),
        controller_ip="127.0.0.1",
        log_level=logging.ERROR,
        controller_args=["--HeartMonitor.period=500"],
    )
    try:
        client = cluster.start_and_connect_sync()
        try:
            yield SlurmEngines(cluster, client, workdir)
        finally:
            client.close()
    finally:
        cluster.stop_cluster_sync()
        deadline = time.monotonic() + 30
        while slurm.squeue() and time.monotonic() < deadline:
            time.sleep(0.2)
        os.chdir(cwd)
        shutil.rmtree(workdir, ignore_errors=True)
        assert not slurm.squeue(), "the engine job was not cancelled"


def job_of_engine() -> tuple[str | None, str | None, int]:
    return os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_JOB_NAME"), os.getpid()


def damped(k: float, tau: float) -> dict:
    t = np.linspace(0, 1, 5)
    return {"peak": float(np.exp(-k * tau)), "trace": np.exp(-k * t) * tau}


def test_engines_run_inside_a_slurm_job(slurm, slurm_engines):
    executor = IPyParallelExecutor.from_object(slurm_engines.client)
    try:
        assert executor.worker_count() == 2
        jobs = {executor.submit(job_of_engine).result(timeout=60)[:2] for _ in range(4)}
        (job_id, job_name), = jobs
        assert job_id and job_name.startswith("ipengine-")
        assert any(line.startswith(f"{job_id} ") and "RUNNING" in line
                   for line in slurm.squeue())
        assert os.path.exists(os.path.join(slurm_engines.workdir, "slurm_engine.sbatch"))
    finally:
        executor.shutdown()


def test_a_scan_on_slurm_engines(slurm_engines, tmp_path):
    space = ns.grid(k=[0.5, 1.0, 2.0], tau=np.linspace(0.1, 0.5, 5))
    scan = ns.Scan(damped, space, store=tmp_path / "slurm-store")
    progress = scan.run(executor=slurm_engines.client, progress=False).wait()
    assert progress.done == 15 and progress.failed == 0
    ds = scan.results()
    assert set(ds.ns_status.values.ravel()) == {"done"}
    np.testing.assert_allclose(ds.peak.values, np.exp(-np.outer([0.5, 1.0, 2.0],
                                                                np.linspace(0.1, 0.5, 5))))
    assert {w.split()[0] for w in ds.ns_worker.values.ravel()} == {"engine"}


def test_start_cluster_submits_engines_with_batch_options(slurm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    profile_dir = tmp_path / "profile"
    t0 = time.monotonic()
    handle = start_cluster(1, engines="slurm", timelimit="00:10:00", account="physics",
                           profile_dir=profile_dir, heartbeat=0.5, quiet=True, timeout=120)
    try:
        started = time.monotonic() - t0
        (script,) = (profile_dir / "batch").iterdir()
        text = script.read_text()
        assert "#SBATCH --time=00:10:00" in text and "#SBATCH --account=physics" in text
        assert "#SBATCH --ntasks=1" in text
        assert os.listdir(tmp_path) == ["profile"]  # no *.sbatch in the current directory
        jobs = [line for line in slurm.squeue() if f"ipengine-{handle.cluster_id}" in line]
        assert len(jobs) == 1 and "RUNNING" in jobs[0]
        job_id, _, _ = handle.executor.submit(job_of_engine).result(timeout=60)
        assert jobs[0].startswith(f"{job_id} ")
        assert started < 60
    finally:
        handle.stop()
    deadline = time.monotonic() + 30
    while any(handle.cluster_id in line for line in slurm.squeue()):
        assert time.monotonic() < deadline, "stop() did not cancel the engine job"
        time.sleep(0.2)


def test_start_cluster_with_a_batch_template_of_ones_own(slurm, tmp_path):
    template = (
        "#!/bin/sh\n"
        "#SBATCH --ntasks={n}\n"
        "#SBATCH --mem-per-cpu=100M\n"
        "#SBATCH --time=00:05:00\n"
        "#SBATCH --output={output_file}\n"
        "#SBATCH --export=ALL\n"
        "#SBATCH --job-name=ipengine-{cluster_id}\n"
        "srun {program_and_args}\n"
    )
    handle = start_cluster(1, engines="slurm", launcher_options={"batch_template": template},
                           profile_dir=tmp_path / "profile", controller_ip="127.0.0.1",
                           heartbeat=0.5, quiet=True)
    try:
        job_id, job_name, _ = handle.executor.submit(job_of_engine).result(timeout=60)
        assert job_name == f"ipengine-{handle.cluster_id}"
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True,
                               text=True, check=True, timeout=30).stdout
        assert "MinMemoryCPU=100M" in shown and "TimeLimit=00:05:00" in shown
    finally:
        handle.stop()
