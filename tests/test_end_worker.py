"""ScanExecutor.end_worker: a task stuck in native code (past its timeout, deaf to every
Python-level interrupt) is ended by killing its worker; the future fails as a lost
worker and the executor runs later tasks. Real processes and engines, no mocks."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import cloudpickle
import pytest

from notebookscan.executors import resolve_executor
from notebookscan.executors.futures import FuturesExecutor, WorkerEnded, process_pool
from notebookscan.executors.serial import SerialExecutor

# the engines cannot import this test module: send its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def stuck_in_native_code(pid_file: str) -> str:
    import ctypes
    import os

    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    ctypes.CDLL(None).sleep(30)  # holds no Python frame a signal handler could run in
    return "returned"


def exit_soon() -> None:
    import os
    import time

    time.sleep(0.5)
    os._exit(1)


def pid_and_double(x: int) -> tuple[int, int]:
    import os
    import time

    time.sleep(0.3)
    return os.getpid(), 2 * x


def wait_for_pid(path: str, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.02)
    with open(path) as f:
        return int(f.read())


def gone(pid: int, timeout: float = 5.0) -> bool:
    import psutil

    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


def test_serial_and_thread_executors_cannot_end_a_worker():
    future = SerialExecutor().submit(pow, 2, 3)
    assert SerialExecutor().end_worker(future) is False
    with ThreadPoolExecutor(1) as pool:
        executor, _ = resolve_executor(pool)
        running = executor.submit(time.sleep, 0.5)
        assert executor.end_worker(running) is False
        running.result()


def test_process_pool_ends_a_task_stuck_in_native_code(tmp_path):
    executor = process_pool(2)
    try:
        stuck = executor.submit(stuck_in_native_code, str(tmp_path / "pid"))
        innocent = executor.submit(pid_and_double, 21)
        pid = wait_for_pid(str(tmp_path / "pid"))
        t0 = time.monotonic()
        assert executor.end_worker(stuck) is True
        with pytest.raises(WorkerEnded) as info:
            stuck.result(timeout=10)
        assert time.monotonic() - t0 < 5
        assert executor.is_worker_lost(info.value)
        assert str(pid) in str(info.value)
        assert gone(pid)
        # the other task of the broken pool runs again, its future untouched
        assert innocent.result(timeout=20)[1] == 42
        later = [executor.submit(pid_and_double, i) for i in range(4)]
        results = [f.result(timeout=20) for f in later]
        assert [r[1] for r in results] == [0, 2, 4, 6]
        assert pid not in {r[0] for r in results}
        assert executor.end_worker(later[0]) is False  # done: nothing to end
        assert executor.workers_killed_by_tasks == 0  # ended on purpose, not a crash
    finally:
        executor.shutdown()


def test_process_pool_does_not_end_a_queued_task_or_a_foreign_pool(tmp_path):
    executor = process_pool(1)
    try:
        stuck = executor.submit(stuck_in_native_code, str(tmp_path / "pid"))
        queued = executor.submit(pid_and_double, 1)
        wait_for_pid(str(tmp_path / "pid"))
        assert executor.end_worker(queued) is False  # no worker runs it yet
        assert executor.end_worker(stuck) is True
        assert queued.result(timeout=20)[1] == 2
    finally:
        executor.shutdown()
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1) as pool:
        foreign = FuturesExecutor(pool)
        future = foreign.submit(pid_and_double, 1)
        assert foreign.end_worker(future) is False
        future.result(timeout=20)


def test_a_stuck_task_rerun_alone_after_a_crash_can_be_ended(tmp_path):
    """Another task kills its worker: the pool's tasks are re-run one at a time to find
    the culprit; a stuck one among them can still be ended (else the recovery waits)."""
    executor = process_pool(2)
    try:
        stuck = executor.submit(stuck_in_native_code, str(tmp_path / "pid"))
        first = wait_for_pid(str(tmp_path / "pid"))
        os.unlink(tmp_path / "pid")
        crash = executor.submit(exit_soon)
        second = wait_for_pid(str(tmp_path / "pid"))  # the stuck task, run again alone
        assert second != first
        assert executor.end_worker(stuck) is True
        with pytest.raises(WorkerEnded):
            stuck.result(timeout=10)
        assert gone(second)
        with pytest.raises(Exception) as info:  # then the culprit is found
            crash.result(timeout=20)
        assert "exit code 1" in str(info.value)
        assert executor.submit(pid_and_double, 5).result(timeout=20)[1] == 10
        assert executor.workers_killed_by_tasks == 1  # the crash, not the ended task
    finally:
        executor.shutdown()


@pytest.mark.cluster
def test_engine_stuck_in_native_code_is_ended_and_replaced(tmp_path):
    from notebookscan.executors.ipyparallel import is_worker_lost
    from notebookscan.executors.local_cluster import local_executor, shutdown_local_executor

    executor = local_executor(2, quiet=True)
    try:
        assert executor.worker_count() == 2
        stuck = executor.submit(stuck_in_native_code, str(tmp_path / "pid"))
        pid = wait_for_pid(str(tmp_path / "pid"))
        t0 = time.monotonic()
        assert executor.end_worker(stuck) is True
        with pytest.raises(Exception) as info:
            stuck.result(timeout=20)
        assert is_worker_lost(info.value), repr(info.value)
        assert time.monotonic() - t0 < 12  # the scheduler fails it 5 s after the engine left
        assert gone(pid)
        assert executor.submit(pow, 3, 2).result(timeout=30) == 9
        deadline = time.monotonic() + 30  # a new engine takes the dead one's place
        while executor.worker_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert executor.worker_count() == 2
        assert executor.end_worker(stuck) is False  # done already
    finally:
        shutdown_local_executor()


@pytest.mark.cluster
def test_engine_on_another_host_is_ended_through_the_controller(ipp_executor, tmp_path):
    stuck = ipp_executor.submit(stuck_in_native_code, str(tmp_path / "pid"))
    pid = wait_for_pid(str(tmp_path / "pid"))
    ipp_executor._hosts.clear()  # as for remote engines: no pid to signal from here
    assert ipp_executor.end_worker(stuck) is True
    with pytest.raises(Exception) as info:
        stuck.result(timeout=20)
    assert ipp_executor.is_worker_lost(info.value)
    assert gone(pid)
    assert ipp_executor.submit(pow, 2, 5).result(timeout=30) == 32
