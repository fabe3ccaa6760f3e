"""The ipyparallel executor on real engines: tasks, notebook functions, dead engines,
stop, caches, the engine check, and the shared local cluster."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest

from notebookscan.errors import ExecutorError
from notebookscan.executors import resolve_executor
from notebookscan.executors.ipyparallel import IPyParallelExecutor, is_worker_lost
from notebookscan.executors.local_cluster import local_executor, shutdown_local_executor
from notebookscan.run.worker import run_chunk

pytestmark = pytest.mark.cluster

# the engines cannot import this test module: send its functions by value, like a notebook's
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def sleep_and_report(seconds: float, pid_file: str | None = None) -> int:
    if pid_file:
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
    time.sleep(seconds)
    return os.getpid()


def wait_for_pid(path: str, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.02)
    with open(path) as f:
        return int(f.read())


def notebook_namespace() -> dict:
    """Functions defined the way a notebook cell defines them: in ``__main__``."""
    namespace = {"__name__": "__main__"}
    exec(
        textwrap.dedent(
            """
            import math
            SCALE = 3.0

            def rate(k, tau):
                return {"rate": SCALE * math.exp(-k * tau)}

            def make_adder(n):
                return lambda x: x + n
            """
        ),
        namespace,
    )
    return namespace


# --------------------------------------------------------------------------- tasks


def test_submit_returns_concurrent_future(ipp_executor):
    future = ipp_executor.submit(pow, 2, 10)
    assert isinstance(future, concurrent.futures.Future)
    done, _ = concurrent.futures.wait([future], timeout=30)
    assert done and future.result() == 1024
    assert ipp_executor.needs_pickled_function
    assert ipp_executor.worker_count() == ipp_executor.max_workers == 2


def test_task_exception_is_not_a_lost_worker(ipp_executor):
    future = ipp_executor.submit(int, "not a number")
    with pytest.raises(Exception) as info:
        future.result(timeout=30)
    assert getattr(info.value, "ename", None) == "ValueError"
    assert not is_worker_lost(info.value)
    assert not ipp_executor.is_worker_lost(info.value)


def test_functions_defined_in_main_run_on_engines(ipp_executor):
    namespace = notebook_namespace()
    rate, make_adder = namespace["rate"], namespace["make_adder"]
    assert rate.__module__ == "__main__"
    assert ipp_executor.submit(rate, 0.0, 1.0).result(timeout=30) == {"rate": 3.0}
    assert ipp_executor.submit(make_adder(5), 1).result(timeout=30) == 6
    assert ipp_executor.submit(lambda: os.getpid()).result(timeout=30) != os.getpid()


def test_run_chunk_with_cloudpickled_notebook_function(ipp_executor):
    rate = notebook_namespace()["rate"]
    payload = cloudpickle.dumps(rate)
    points = [{"k": 0.0, "tau": 1.0}, {"k": 1.0, "tau": 0.0}, {"k": "bad", "tau": 1.0}]
    results = ipp_executor.submit(run_chunk, payload, points, [1, 2, 3], False, None).result(30)
    assert [r.status for r in results] == ["done", "done", "failed"]
    assert "TypeError" in results[2].error
    assert all(r.worker.startswith("engine ") for r in results)


def test_point_timeout_works_on_engines(ipp_executor):
    payload = cloudpickle.dumps(lambda t: time.sleep(t) or t)
    results = ipp_executor.submit(
        run_chunk, payload, [{"t": 5.0}, {"t": 0.0}], [1, 2], False, 0.3
    ).result(timeout=30)
    assert [r.status for r in results] == ["failed", "done"]
    assert "PointTimeout" in results[0].error


def test_unpicklable_argument_is_a_clear_error(ipp_executor):
    import threading

    with pytest.raises(ExecutorError, match="cloudpickle failed"):
        ipp_executor.submit(print, threading.Lock())


# --------------------------------------------------------------------------- dead engines


def test_killed_engine_fails_its_task_as_worker_lost(ipp_executor, ipp_cluster, tmp_path):
    pid_file = str(tmp_path / "pid")
    doomed = ipp_executor.submit(sleep_and_report, 30, pid_file)
    pid = wait_for_pid(pid_file)
    others = [ipp_executor.submit(sleep_and_report, 0.1) for _ in range(3)]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(Exception) as info:
        doomed.result(timeout=60)
    assert is_worker_lost(info.value), repr(info.value)
    assert ipp_executor.is_worker_lost(info.value)
    assert "EngineError" in repr(info.value)
    survivors = {f.result(timeout=60) for f in others}
    assert pid not in survivors
    assert ipp_executor.worker_count() == 1  # the dead engine is gone from the count


def test_composite_error_with_dead_engine_counts_as_lost():
    from ipyparallel import error

    lost = ("EngineError", "Engine b'x' died while running task 'y'", "", {})
    ordinary = ("ValueError", "bad", "", {})
    assert is_worker_lost(error.CompositeError("map failed", [ordinary, lost]))
    assert not is_worker_lost(error.CompositeError("map failed", [ordinary]))
    assert not is_worker_lost(error.TaskAborted("msg"))
    assert not is_worker_lost(KeyboardInterrupt())
    assert not is_worker_lost(RuntimeError("EngineError"))


# --------------------------------------------------------------------------- stop


def test_cancel_pending_and_interrupt_running(ipp_executor, tmp_path):
    running = [ipp_executor.submit(sleep_and_report, 30, str(tmp_path / f"pid{i}"))
               for i in range(2)]
    queued = [ipp_executor.submit(sleep_and_report, 30) for _ in range(3)]
    for i in range(2):
        wait_for_pid(str(tmp_path / f"pid{i}"))
    t0 = time.monotonic()
    ipp_executor.interrupt_running()
    for future in running:
        with pytest.raises(Exception) as info:
            future.result(timeout=20)
        assert getattr(info.value, "ename", None) == "KeyboardInterrupt"
        assert not is_worker_lost(info.value)
    for future in queued:
        with pytest.raises(Exception) as info:
            future.result(timeout=20)
        assert type(info.value).__name__ == "TaskAborted"
        assert not is_worker_lost(info.value)
    assert time.monotonic() - t0 < 15
    # the engines survive and take new work
    assert ipp_executor.worker_count() == 2
    assert ipp_executor.submit(pow, 3, 2).result(timeout=30) == 9


def test_interrupt_reaches_tasks_whose_engine_the_client_has_not_heard_of(ipp_executor,
                                                                          tmp_path):
    """Under load the client learns late which engine runs a task: the controller is
    asked, and the interrupt is repeated until the task ends."""
    running = [ipp_executor.submit(sleep_and_report, 30, str(tmp_path / f"pid{i}"))
               for i in range(2)]
    for i in range(2):
        wait_for_pid(str(tmp_path / f"pid{i}"))
    for future in running:  # as if the engine's first messages were still on the way
        for mid in future.msg_ids:
            ipp_executor.client.metadata[mid]["engine_id"] = None
    t0 = time.monotonic()
    ipp_executor.interrupt_running()
    for future in running:
        with pytest.raises(Exception) as info:
            future.result(timeout=20)
        assert getattr(info.value, "ename", None) == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 15
    assert ipp_executor.submit(pow, 3, 2).result(timeout=30) == 9


def test_retries_stay_zero_so_a_failing_task_does_not_hang(ipp_client):
    view = ipp_client.load_balanced_view()
    view.set_flags(retries=3)
    executor = IPyParallelExecutor.from_object(view)
    try:
        assert executor.view.retries == 0
        with pytest.raises(Exception, match="ValueError"):
            executor.submit(int, "x").result(timeout=20)
    finally:
        executor.shutdown()


# --------------------------------------------------------------------------- caches


def test_client_and_controller_forget_finished_tasks(ipp_executor, ipp_client):
    import numpy as np

    n = 1500
    payload = np.ones(2_000)  # 16 kB per result
    t0 = time.perf_counter()
    futures = [ipp_executor.submit(np.multiply, payload, i) for i in range(n)]
    ids = {mid for f in futures for mid in f.msg_ids}
    assert sum(f.result(timeout=120)[0] for f in futures) == sum(range(n))
    elapsed = time.perf_counter() - t0
    del futures
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        state = {
            "results": ids & set(ipp_client.results),
            "metadata": ids & set(ipp_client.metadata),
            "history": ids & set(ipp_client.history),
            "view history": ids & set(ipp_executor.view.history),
            "futures": ids & set(ipp_client._futures),
            "output futures": ids & set(ipp_client._output_futures),
            "hub": ids & set(ipp_client.hub_history()),
        }
        if not any(state.values()):
            break
        time.sleep(0.5)
    assert {k: len(v) for k, v in state.items()} == dict.fromkeys(state, 0)
    assert elapsed / n < 0.05, f"{elapsed / n * 1e3:.1f} ms per task"


# --------------------------------------------------------------------------- engine check


def test_engine_that_cannot_import_notebookscan_is_reported(ipp_client):
    eid = ipp_client.ids[0]
    engine = ipp_client[eid]
    engine.execute(
        "import sys\n"
        "_ns_saved = {k: v for k, v in sys.modules.items() if k.split('.')[0] == 'notebookscan'}\n"
        "for _k in _ns_saved: del sys.modules[_k]\n"
        "sys.modules['notebookscan'] = None\n",
        block=True,
    )
    executor = IPyParallelExecutor.from_object(ipp_client)
    try:
        with pytest.raises(ExecutorError) as info:
            executor.submit(pow, 2, 2)
        message = str(info.value)
        assert f"engine {eid}" in message and "notebookscan" in message
        assert "PYTHONPATH" in message and "Install notebookscan" in message
    finally:
        executor.shutdown()
        engine.execute("del sys.modules['notebookscan']\nsys.modules.update(_ns_saved)",
                       block=True)
    healthy = IPyParallelExecutor.from_object(ipp_client)
    try:
        assert healthy.submit(pow, 2, 2).result(timeout=30) == 4
    finally:
        healthy.shutdown()


# --------------------------------------------------------------------------- construction


def test_from_object_accepts_client_views_and_cluster(ipp_cluster, ipp_client):
    import ipyparallel as ipp

    first = ipp_client.ids[0]
    for obj, engines in [
        (ipp_client, 2),
        (ipp_client.load_balanced_view(), 2),
        (ipp_client[:], 2),
        (ipp_client.load_balanced_view(targets=[first]), 1),
        (ipp_client[first], 1),
    ]:
        executor, owned = resolve_executor(obj)
        try:
            assert isinstance(executor, IPyParallelExecutor) and not owned
            assert executor.worker_count() == engines, obj
            assert executor.submit(pow, 2, 3).result(timeout=30) == 8
        finally:
            executor.shutdown()
    from_cluster = IPyParallelExecutor.from_object(ipp_cluster.cluster)
    assert IPyParallelExecutor.from_object(ipp_cluster.cluster) is from_cluster  # one client
    assert from_cluster.submit(pow, 2, 4).result(timeout=30) == 16

    with pytest.raises(ExecutorError, match="not running"):
        IPyParallelExecutor.from_object(ipp.Cluster(n=1, profile_dir=ipp_cluster.profile_dir))
    with pytest.raises(ExecutorError, match="pass an ipyparallel Client"):
        IPyParallelExecutor.from_object(object())


def test_closed_client_is_refused(ipp_cluster):
    import ipyparallel as ipp

    client = ipp.Client(ipp_cluster.connection_file)
    executor = IPyParallelExecutor.from_object(client)
    client.close()
    with pytest.raises(ExecutorError, match="closed"):
        executor.submit(pow, 1, 1)
    with pytest.raises(ExecutorError, match="closed"):
        IPyParallelExecutor.from_object(client)


# --------------------------------------------------------------------------- local cluster


def test_local_executor_is_shared_restarts_dead_engines_and_stops(capfd, tmp_path):
    from conftest import describe, session_processes, wait_for_no_session_processes

    async def in_running_loop():
        asyncio.get_running_loop()  # a Jupyter kernel's situation
        return local_executor(2)

    before = {p.pid for p in session_processes()}
    try:
        executor = asyncio.run(in_running_loop())
        err = capfd.readouterr().err
        assert "Starting 2 local ipyparallel engines… (a few seconds)" in err
        assert "2 local engines ready in" in err
        assert local_executor() is executor
        assert resolve_executor(None) == (executor, False)
        assert capfd.readouterr().err == ""  # reused: no second start
        profile_dir = executor.cluster.profile_dir
        assert not profile_dir.startswith(os.path.expanduser("~/.ipython"))
        assert executor.submit(pow, 2, 5).result(timeout=30) == 32

        pid_file = str(tmp_path / "pid")
        executor.submit(sleep_and_report, 30, pid_file)
        os.kill(wait_for_pid(pid_file), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while executor.worker_count() == 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert executor.worker_count() == 1
        assert local_executor() is executor  # the next scan gets its engines back
        assert executor.worker_count() == 2
    finally:
        shutdown_local_executor()
    # shutdown waits for the processes: nothing may be left a moment later
    left = wait_for_no_session_processes(timeout=1, ignore=before)
    assert not left, f"processes left by the local cluster:\n{describe(left)}"
    assert not os.path.exists(profile_dir)


def _slow_square(x: int) -> dict[str, int]:
    time.sleep(0.1)
    return {"y": x * x}


def test_a_scan_ends_when_the_local_controller_dies_and_the_next_run_resumes(tmp_path):
    """The shared local cluster's controller SIGKILLed under a scan: the scan stops with
    an ExecutorError within controller_timeout, keeping what finished; the next scan
    starts a fresh local cluster and completes the rest."""
    import psutil
    from conftest import kill_new_controllers, session_processes, wait_for_no_session_processes

    import notebookscan as ns

    before = {p.pid for p in session_processes()}
    try:
        executor = local_executor(2, quiet=True)
        executor.controller_timeout = 2.0
        scan = ns.Scan(_slow_square, ns.grid(x=list(range(200))), store=tmp_path / "s")
        run = scan.run(executor=executor, progress=False, wait=False, flush_interval=0.2)
        deadline = time.monotonic() + 60
        while run.progress.done < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not run.done()
        kill_new_controllers(before)
        with pytest.raises(ExecutorError, match=r"stopped answering.*run\(\) again"):
            run.wait(timeout=30)
        stored = int((ns.open_store(tmp_path / "s").ns_status == "done").sum())
        assert stored >= run.progress.done >= 10
        fresh = local_executor(2, quiet=True)
        assert fresh is not executor and not fresh.controller_lost
        progress = scan.run(executor=None, progress=False).progress
        assert progress.skipped == stored and progress.done == 200 - stored
        assert (ns.open_store(tmp_path / "s").ns_status == "done").all()
    finally:
        shutdown_local_executor()
        for proc in wait_for_no_session_processes(timeout=5, ignore=before):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def test_local_executor_in_a_jupyter_kernel_stops_with_the_kernel():
    from conftest import describe, session_processes, wait_for_no_session_processes
    from jupyter_client.manager import start_new_kernel

    before = {p.pid for p in session_processes()}
    manager, kernel = start_new_kernel(kernel_name="python3")
    outputs: list[str] = []

    def collect(msg):
        content = msg["content"]
        outputs.append(content.get("text", "") or str(content.get("data", "")))
        if msg["msg_type"] == "error":
            outputs.append("\n".join(content["traceback"]))

    try:
        code = (
            "import asyncio, os\n"
            "asyncio.get_running_loop()\n"
            "from notebookscan.executors.local_cluster import local_executor\n"
            "ex = local_executor(2)\n"
            "print('RESULT', ex.submit(pow, 3, 4).result(timeout=30), ex.worker_count())\n"
        )
        reply = kernel.execute_interactive(code, timeout=120, output_hook=collect)
        text = "".join(outputs)
        assert reply["content"]["status"] == "ok", text
        assert "RESULT 81 2" in text
        assert "Starting 2 local ipyparallel engines" in text
        started = {p.pid for p in session_processes()} - before
        assert started, "the kernel's engines should be running now"
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=False)  # a normal shutdown runs atexit
    left = wait_for_no_session_processes(timeout=30, ignore=before)
    assert not left, f"processes left by the kernel's cluster:\n{describe(left)}"


def test_importing_the_executor_module_does_not_import_ipyparallel():
    code = (
        "import sys, notebookscan.executors.ipyparallel as m, notebookscan.executors.cluster\n"
        "assert not m.is_worker_lost(ValueError())\n"
        "print('ipyparallel' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- whole scans

RUN_SPECIFIC = ["ns_started", "ns_finished", "ns_duration", "ns_host", "ns_worker", "ns_run"]


def oscillator(freq: float, damping: float, seed: int) -> dict:
    import numpy as np

    t = np.linspace(0, 1, 16)
    noise = np.random.default_rng(seed).normal(0, 1e-3, t.size)
    trace = np.exp(-damping * t) * np.sin(2 * np.pi * freq * t) + noise
    return {"trace": trace, "energy": float(np.sum(trace**2))}


def comparable(ds):
    ds = ds.drop_vars([v for v in RUN_SPECIFIC if v in ds.variables])
    ds.attrs = {}
    return ds


def test_serial_processes_and_ipyparallel_give_identical_datasets(ipp_client, tmp_path):
    import numpy as np
    import xarray as xr

    import notebookscan as ns

    space = ns.grid(freq=[1.0, 2.5, 4.0], damping=np.linspace(0, 2, 7))
    datasets = {}
    for name, executor in [("serial", "serial"), ("processes", "processes"),
                           ("ipyparallel", ipp_client)]:
        scan = ns.Scan(oscillator, space, store=tmp_path / name)
        progress = scan.run(executor=executor, progress=False).wait()
        assert progress.done == 21 and progress.failed == 0, name
        datasets[name] = scan.results()
    workers = {str(w).split()[0] for w in datasets["ipyparallel"].ns_worker.values.ravel()}
    assert workers == {"engine"}
    for name in ("processes", "ipyparallel"):
        xr.testing.assert_identical(comparable(datasets["serial"]), comparable(datasets[name]))


def twice(x: int) -> float:
    return 2.0 * x


def test_results_do_not_outlive_their_flush_in_the_client(ipp_client, tmp_path):
    """ipyparallel keeps each task's result in reference cycles; with the cyclic garbage
    collector off (as between its rare full collections) nothing of them may remain."""
    import gc

    import notebookscan as ns
    from notebookscan.run.worker import ChunkResult

    n = 40_000
    gc.collect()
    gc.disable()
    try:
        scan = ns.Scan(twice, ns.grid(x=range(n)), store=tmp_path / "s")
        progress = scan.run(executor=ipp_client, progress=False, flush_every=5_000).wait()
        kept = sum(len(o) for o in gc.get_objects() if isinstance(o, ChunkResult))
    finally:
        gc.enable()
    assert progress.done == n and progress.shards >= 2
    assert kept == 0, f"{kept} points' results still in memory after the scan"


def slow_square(x: int, log: str) -> dict:
    with open(log, "a") as f:
        f.write(f"{x} {os.getpid()}\n")
    time.sleep(0.25)
    return {"square": x * x}


def test_scan_survives_an_engine_killed_mid_scan(ipp_cluster, ipp_client, tmp_path):
    import numpy as np

    import notebookscan as ns

    pids = ipp_cluster.engine_pids()
    victim = pids[min(pids)]
    log = str(tmp_path / "calls.log")
    scan = ns.Scan(slow_square, ns.grid(x=range(24), log=[log]), store=tmp_path / "s")
    run = scan.run(executor=ipp_client, progress=False, wait=False, chunk_size=1)

    def started_on_victim() -> bool:
        if not os.path.exists(log):
            return False
        with open(log) as f:
            lines = f.read().split("\n")[:-1]
        return len(lines) >= 6 and any(line.endswith(f" {victim}") for line in lines[-2:])

    deadline = time.monotonic() + 60
    while not started_on_victim():
        assert time.monotonic() < deadline, "the scan did not start on the engine to kill"
        time.sleep(0.01)
    os.kill(victim, signal.SIGKILL)
    progress = run.wait(timeout=120)
    assert progress.done == 24 and progress.failed == 0, progress
    ds = scan.results()
    np.testing.assert_array_equal(ds.square.values.ravel(), np.arange(24) ** 2)
    assert set(ds.ns_status.values.ravel()) == {"done"}
    with open(log) as f:
        calls = [line.split() for line in f.read().split("\n")[:-1]]
    killed = [x for x, pid in calls if int(pid) == victim]
    rerun = [x for x in killed if sum(1 for y, _ in calls if y == x) > 1]
    assert rerun, "the point running on the killed engine was not run again"


def test_cluster_of_a_killed_process_is_stopped_by_the_next_one(tmp_path):
    """The fallback when the watchdog that stops it at once was killed as well."""
    import psutil
    from conftest import describe, session_processes, wait_for_no_session_processes

    from notebookscan.executors.local_cluster import reap_orphan_clusters

    before = {p.pid for p in session_processes()}
    code = (
        "import sys, time\n"
        "from notebookscan.executors.local_cluster import local_executor\n"
        "ex = local_executor(1, quiet=True)\n"
        "print(ex.cluster.profile_dir, flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        profile_dir = child.stdout.readline().strip()
        assert os.path.isdir(profile_dir)
        assert profile_dir not in reap_orphan_clusters()  # its owner is alive: left alone
        orphans = {p.pid for p in session_processes()} - before - {child.pid}
        assert orphans, "the child's engines should be running"
        watchdogs = [p for p in psutil.Process(child.pid).children()
                     if "ipp_watchdog.py" in " ".join(p.cmdline())]
        assert len(watchdogs) == 1
        watchdogs[0].kill()
        deadline = time.monotonic() + 5  # a zombie until the sleeping child reaps it
        while watchdogs[0].status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        child.kill()  # like a kernel killed by the OOM killer: no exit hooks run
        child.wait()
        child.stdout.close()
    assert os.path.isdir(profile_dir)
    assert profile_dir in reap_orphan_clusters()
    assert not os.path.exists(profile_dir)
    left = wait_for_no_session_processes(timeout=1, ignore=before)
    assert not left, describe(left)
