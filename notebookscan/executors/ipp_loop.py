"""A private asyncio loop in a daemon thread: how the executors drive ipyparallel's
async API from scripts, threads and running event loops alike."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import ExecutorError

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """A private asyncio loop in a daemon thread, to drive ipyparallel's async API.

    Starting and stopping a cluster from the same loop works the same in a script, in a
    thread and inside a running event loop (a Jupyter kernel), where blocking the
    kernel's own loop would deadlock.
    """

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name=name, daemon=True)
        self.thread.start()
        started.wait(10)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        if self.loop.is_closed():
            coro.close()
            raise ExecutorError("the cluster's event loop is closed; start a new cluster.")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread (idempotent)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()
