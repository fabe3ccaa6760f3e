"""The handle of a run: ``progress``, ``wait()``, ``stop()``, ``done()`` and ``await``.

:class:`ScanRun` runs a :class:`~notebookscan.run.loop.RunLoop` here or in a background
thread; :class:`~notebookscan.run.detached.DetachedRun` offers the same interface for a
run in another process. :class:`RunControl` gives a scan the same calls for its current
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Generator
from concurrent.futures import Future
from typing import Any

from ..errors import ScanError
from .bars import execution_count
from .loop import Progress, RunLoop

__all__ = ["RunControl", "ScanRun", "in_event_loop"]


def in_event_loop() -> bool:
    """True inside a running asyncio loop in this thread (a Jupyter kernel cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class ScanRun:
    """A handle on a running (or finished) scan.

    ``wait()`` blocks until it ends, ``await run`` waits without blocking a notebook,
    ``stop()`` stops it keeping everything finished, ``progress`` says how far it got.
    """

    def __init__(self, loop: RunLoop, executor_owned: bool, bar: Any = None):
        self._loop = loop
        self._owned = executor_owned
        self._future: Future = Future()
        self._thread: threading.Thread | None = None
        self._runner: threading.Thread | None = None  # the thread running the loop
        # a notebook progress bar shows itself in the cell that started the run; the
        # handle displays the same live widget when shown in a later cell
        self._view = getattr(bar, "container", None)
        self._cell = execution_count()

    @property
    def progress(self) -> Progress:
        """Live counters of this run (done, failed, running, remaining, rate, eta)."""
        return self._loop.progress

    @property
    def executor(self) -> Any:
        """The :class:`~notebookscan.executors.ScanExecutor` this run uses."""
        return self._loop.executor

    def _body(self) -> None:
        self._runner = threading.current_thread()
        try:
            self._future.set_result(self._loop.run())
        except BaseException as exc:
            self._future.set_exception(exc)
        finally:
            if self._owned:
                self._loop.executor.shutdown()

    def start(self, background: bool) -> ScanRun:
        """Run the loop in a background thread, or here until it ends (``background=False``)."""
        if background:
            # import xarray here, not first in the loop thread while a notebook cell may be
            # importing it too (a half-initialised module fails the other import)
            import xarray  # noqa: F401

            self._thread = threading.Thread(target=self._body, name="notebookscan-loop",
                                            daemon=True)
            self._thread.start()
        else:
            self._body()
            self._future.result()  # re-raise errors (and KeyboardInterrupt) in the caller
        return self

    def done(self) -> bool:
        """True once the run has ended (finished, stopped or failed)."""
        return self._future.done()

    def wait(self, timeout: float | None = None) -> Progress:
        """Block until the run ends and return its progress (re-raises a scan error).

        Inside a Jupyter kernel this blocks the notebook (its progress bar stays live);
        ``await run`` waits without blocking widgets and other cells.
        """
        return self._future.result(timeout)

    def __await__(self) -> Generator[Any, None, Progress]:
        return asyncio.wrap_future(self._future).__await__()

    def stop(self, now: bool = False, *, wait: bool = True) -> Progress:
        """Stop submitting points; finished points are flushed to the store.

        Points running now finish first (``now=False``) or are cancelled (``now=True``);
        either way ``run()`` later resumes with what is left.
        """
        self._loop.request_stop(now)
        if wait and not self._is_loop_thread():
            with contextlib.suppress(Exception):
                self._future.result()
        return self.progress

    def _is_loop_thread(self) -> bool:
        """True in the thread running the loop (its event callbacks), in the background
        or here: waiting there for the run would wait forever."""
        return threading.current_thread() is self._runner

    def __repr__(self) -> str:
        return f"<ScanRun {self.progress}>"

    def _ipython_display_(self) -> None:
        """In a notebook: the live progress bar (not twice in the cell that started
        the run, where it already shows), else the text of ``repr``."""
        from IPython.display import Pretty, display

        if self._view is None:
            display(Pretty(repr(self)))
        elif execution_count() != self._cell:
            display(self._view)


class RunControl:
    """``wait``, ``stop``, ``await`` and ``progress`` of a scan's current run."""

    _run: ScanRun | None

    def wait(self, timeout: float | None = None) -> Progress:
        """Block until the current run ends (see :meth:`ScanRun.wait`)."""
        return self._current().wait(timeout)

    def stop(self, now: bool = False, *, wait: bool = True) -> Progress:
        """Stop the current run; everything finished is kept (see :meth:`ScanRun.stop`)."""
        return self._current().stop(now, wait=wait)

    def __await__(self) -> Generator[Any, None, Progress]:
        return self._current().__await__()

    def _current(self) -> ScanRun:
        if self._run is None:
            raise ScanError("this scan has not been started; call scan.run() first")
        return self._run

    @property
    def progress(self) -> Progress | None:
        """Counters of the current or last run of this scan (``None`` before any run)."""
        return self._run.progress if self._run else None
