"""The executors known by name: one table for ``Scan.run``, the command line and widgets.

``executor="local"``, ``--executor processes`` and the widgets' "run on" menu all read
:data:`EXECUTOR_KINDS`; adding a row here adds the name everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ExecutorError
from .base import ScanExecutor

__all__ = ["EXECUTOR_HELP", "EXECUTOR_KINDS", "EXECUTOR_NAMES", "WIDGET_OPTIONS",
           "ExecutorKind", "executor_kind"]


@dataclass(frozen=True)
class ExecutorKind:
    """One executor known by name.

    Attributes
    ----------
    name
        What the user writes: ``executor="processes"``, ``--executor processes``.
    factory
        Builds the executor; takes the number of workers (``None``: one per core).
    description
        One line for ``--help`` and error messages.
    label
        Short text for the widgets' menu.
    parallel
        True when more than one point runs at once.
    needs_cluster
        True when it starts (or reuses) an ipyparallel cluster.
    owned
        True when the run that built it shuts it down (the shared local cluster is
        reused by later runs instead).
    """

    name: str
    factory: Callable[[int | None], ScanExecutor]
    description: str
    label: str
    parallel: bool
    needs_cluster: bool
    owned: bool


def _local(workers: int | None) -> ScanExecutor:
    from .local_cluster import local_executor  # ipyparallel is imported only when asked for

    return local_executor(workers)


def _processes(workers: int | None) -> ScanExecutor:
    from .futures import process_pool

    return process_pool(workers)


def _serial(workers: int | None) -> ScanExecutor:
    from .serial import SerialExecutor

    return SerialExecutor()


#: name -> kind, the default ("local") first
EXECUTOR_KINDS: dict[str, ExecutorKind] = {
    kind.name: kind
    for kind in (
        ExecutorKind("local", _local, "ipyparallel engines on this machine (default)",
                     "local engines (ipyparallel)", parallel=True, needs_cluster=True,
                     owned=False),
        ExecutorKind("processes", _processes, "a process pool", "process pool",
                     parallel=True, needs_cluster=False, owned=True),
        ExecutorKind("serial", _serial, "one after another in this process",
                     "in this kernel, one by one", parallel=False, needs_cluster=False,
                     owned=True),
    )
}
#: the names, in the order of the table
EXECUTOR_NAMES: tuple[str, ...] = tuple(EXECUTOR_KINDS)
#: "local: ...; processes: ...; serial: ..." for ``--help``
EXECUTOR_HELP = "; ".join(f"{k.name}: {k.description}" for k in EXECUTOR_KINDS.values())
#: (label, name) pairs for the widgets' menu
WIDGET_OPTIONS: tuple[tuple[str, str], ...] = tuple(
    (k.label, k.name) for k in EXECUTOR_KINDS.values()
)


def executor_kind(name: str) -> ExecutorKind:
    """The row of :data:`EXECUTOR_KINDS` called ``name``.

    Raises
    ------
    ExecutorError
        ``name`` is not in the table; the message lists the names that are.

    Examples
    --------
    >>> executor_kind("serial").parallel
    False
    """
    try:
        return EXECUTOR_KINDS[name]
    except (KeyError, TypeError):
        raise ExecutorError(
            f"executor={name!r} is not known; use one of "
            f"{', '.join(map(repr, EXECUTOR_NAMES))} ({EXECUTOR_HELP}), or pass an executor "
            "object: a concurrent.futures.Executor or an ipyparallel Client/View/Cluster."
        ) from None
