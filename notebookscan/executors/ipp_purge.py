"""Forget finished ipyparallel tasks: the client's caches and the controller's database.

Without it a long scan's results pile up twice: in the client (``results``,
``metadata``, ``history``) and in the controller's task database. The mixin
:class:`TaskPurging` gives :class:`~notebookscan.executors.ipyparallel.IPyParallelExecutor`
a background thread that purges finished tasks in batches.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from ..errors import WaitTimeout

log = logging.getLogger(__name__)

# seconds a finished task may wait for its engine's last output message before purging
_OUTPUT_WAIT = 60.0
HUB_PURGE_TRIES = 5  # purge requests per task id before leaving it to the hub's own culling


class TaskPurging:
    """Purging for an executor that records finished task ids in ``_finished``.

    The executor sets these attributes in its ``__init__``: ``client``, ``view``,
    ``_lock`` (also held around every send), ``_pending``, ``_finished`` (a deque of
    ``(monotonic time, msg_id)``), ``_wake``, ``_closed``, ``_controller_lost``,
    ``controller_timeout``, ``purge_interval``, ``_purger`` (None), ``_hub_refused``
    (task id -> purge requests the hub refused) and ``hub_purge_failures`` (0).
    """

    client: Any
    view: Any
    _lock: threading.RLock
    _pending: set[str]
    _finished: collections.deque[tuple[float, str]]
    _wake: threading.Event
    _closed: bool
    _controller_lost: str
    controller_timeout: float
    purge_interval: float
    _purger: threading.Thread | None
    _hub_refused: dict[str, int]
    hub_purge_failures: int

    def purge(self, grace: float = 0.0) -> int:
        """Forget finished tasks: client caches, histories and the controller's database.

        Runs by itself in a background thread (every ``purge_every`` tasks or
        ``purge_interval`` seconds); call it to purge now. Returns how many task ids
        were purged. ``grace`` keeps tasks finished less than that many seconds ago (their
        last output messages may still be on the way).
        """
        now = time.monotonic()
        cutoff = now - grace
        client = self.client
        # ipyparallel drops a task from its own caches once both the reply and the
        # engine's last output message ("idle") have arrived; the output can lag behind
        # the result. Removing the metadata before that would make the late message
        # recreate it, so such tasks wait for the next round (at most `_OUTPUT_WAIT` s).
        unresolved = getattr(client, "_futures", {})
        with self._lock:
            ids: list[str] = []
            later: list[tuple[float, str]] = []
            while self._finished and self._finished[0][0] <= cutoff:
                done_at, mid = self._finished.popleft()
                if mid in unresolved and now - done_at < _OUTPUT_WAIT:
                    later.append((done_at, mid))
                else:
                    ids.append(mid)
            self._finished.extendleft(reversed(later))
            retry = bool(self._hub_refused)
            drop = set(ids)
            for mid in ids:
                client.results.pop(mid, None)
                client.metadata.pop(mid, None)
                unresolved.pop(mid, None)
                getattr(client, "_output_futures", {}).pop(mid, None)
            # ipyparallel 9 records one stray entry under this key on every send
            client.metadata.pop("submitted", None)
            # in place, under the lock that also covers apply_async (which reads history)
            if drop:
                client.history[:] = [m for m in client.history if m not in drop]
                self.view.history[:] = [m for m in self.view.history if m not in drop]
        if ids or retry:
            self._purge_hub(ids)
        return len(ids)

    def _purge_hub(self, ids: list[str]) -> None:
        if getattr(self.client, "_closed", False) or self._controller_lost:
            return
        # the hub refuses ids it has not yet seen finish (it can lag behind the client
        # under load): those are tried again in the next rounds
        with self._lock:
            ids = [*ids, *self._hub_refused]
        if not ids:
            return
        try:
            if self._hub_purge(ids):
                with self._lock:
                    self._hub_refused.clear()
                return
        except TimeoutError:
            return  # the controller does not answer: check_alive() tells the scan
        except Exception:
            pass  # one id the hub still counts as pending fails the whole batch
        for mid in ids:
            try:
                purged = self._hub_purge([mid])
            except TimeoutError:
                return
            except Exception:
                purged = False
            with self._lock:
                if purged:
                    self._hub_refused.pop(mid, None)
                    continue
                tries = self._hub_refused[mid] = self._hub_refused.get(mid, 0) + 1
                if tries >= HUB_PURGE_TRIES:
                    del self._hub_refused[mid]
                    self.hub_purge_failures += 1  # the hub culls old records itself eventually

    def _hub_purge(self, ids: list[str]) -> bool:
        """``client.purge_hub_results(jobs=ids)`` with a bounded wait.

        The public call waits forever for the reply, so a dead controller would hang
        :meth:`shutdown` (and ``ClusterHandle.stop``). Returns False when the hub refused.
        """
        future = self.client._send(self.client._query_stream, "purge_request",
                                   content={"engine_ids": [], "msg_ids": list(ids)})
        wait = self.controller_timeout if self.controller_timeout > 0 else 60.0
        if not future.wait(wait):
            raise WaitTimeout(f"the controller did not answer a purge request in {wait:g} s")
        return future.result()["content"].get("status") == "ok"

    def _start_purger(self) -> None:
        if self._purger is not None and self._purger.is_alive():
            return
        with self._lock:
            if self._purger is not None and self._purger.is_alive():
                return
            self._purger = threading.Thread(
                target=self._purge_loop, name="notebookscan-ipp-purge", daemon=True
            )
            self._purger.start()

    def _purge_loop(self) -> None:
        idle_since = time.monotonic()
        while not self._closed and not getattr(self.client, "_closed", False):
            self._wake.wait(self.purge_interval)
            self._wake.clear()
            if self._closed:
                break
            try:
                purged = self.purge(grace=0.5)
            except Exception:  # never let bookkeeping kill the thread silently mid-scan
                log.debug("purging finished ipyparallel tasks failed", exc_info=True)
                purged = 0
            with self._lock:
                busy = bool(self._pending or self._finished or self._hub_refused)
            if purged or busy:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 10 * self.purge_interval:
                with self._lock:  # idle: exit; the next submit starts a new thread
                    if not (self._pending or self._finished or self._hub_refused):
                        self._purger = None
                        return
