"""Executors: where a scan's points run.

``resolve_executor`` turns what a user passes as ``executor=`` into a
:class:`ScanExecutor`. ipyparallel is imported only when it is asked for.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

from ..errors import ExecutorError
from .base import ScanExecutor
from .futures import FuturesExecutor, process_pool  # noqa: F401 - the cli imports it here
from .registry import EXECUTOR_NAMES, executor_kind
from .serial import SerialExecutor

__all__ = ["FuturesExecutor", "ScanExecutor", "SerialExecutor", "resolve_executor"]


def _is_ipyparallel(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "ipyparallel"


def resolve_executor(spec: Any = None) -> tuple[ScanExecutor, bool]:
    """Return ``(executor, owned)`` for what the user passed as ``executor=``.

    ``owned`` is true when notebookscan created the executor for this run and shuts it
    down afterwards (a shared local ipyparallel cluster is reused, never owned by one run).

    Accepted: ``None`` (the same as ``"local"``: local ipyparallel engines, one per
    core), a name of :data:`~notebookscan.executors.registry.EXECUTOR_KINDS`
    (``"local"``, ``"processes"``, ``"serial"``), a :class:`ScanExecutor`, any
    :class:`concurrent.futures.Executor`, an ipyparallel ``Client``, ``View`` or
    ``Cluster``.

    Raises
    ------
    ExecutorError
        An unknown name (the message lists the known ones) or an object that cannot run
        a scan.
    """
    if isinstance(spec, ScanExecutor):
        return spec, False
    if spec is None or isinstance(spec, str):
        kind = executor_kind(EXECUTOR_NAMES[0] if spec is None else spec)
        return kind.factory(None), kind.owned
    if _is_ipyparallel(spec):
        from .ipyparallel import IPyParallelExecutor

        return IPyParallelExecutor.from_object(spec), False
    if isinstance(spec, Executor):
        return FuturesExecutor(spec), False
    raise ExecutorError(
        f"executor={spec!r} (type {type(spec).__name__}) cannot run a scan; pass None for local "
        "engines, 'serial', 'processes', a concurrent.futures.Executor, or an ipyparallel "
        "Client/View/Cluster."
    )
