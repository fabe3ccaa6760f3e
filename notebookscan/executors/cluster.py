"""Run scans on more than one machine: connect to an ipcluster, or start one from Python.

Two entry points, both returning something a :class:`~notebookscan.Scan` runs on:

- :func:`connect` joins a cluster that is already running (``ipcluster start`` in a
  terminal or a batch job), found by profile, cluster id, connection file, and through
  ssh from a laptop;
- :func:`start_cluster` starts a controller here and engines through one of
  ipyparallel's launchers (``local``, ``slurm``, ``pbs``, ``mpi``, ``sge``, ``lsf``,
  ``htcondor``, ``ssh``…) and returns a :class:`ClusterHandle` that stops them again.

Either way the scan loop in this process is the only writer of the store: engines
return results, never touch the store's files (see ``docs/cluster.md``).

Examples
--------
Start engines, or connect to a running cluster (these need a cluster, so they are
shown, not run by the doctests):

.. code-block:: python

    import notebookscan as ns
    with ns.start_cluster(4) as cluster:
        ns.Scan(f, ns.grid(x=range(100)), store="res").run(executor=cluster.executor).wait()
    ex = ns.connect(profile="mpi", cluster_id="nightly")
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ExecutorError
from .base import usable_cores
from .ipp_loop import LoopThread
from .ipyparallel import IPyParallelExecutor
from .local_cluster import (
    LOCAL_HEARTBEAT_MS,
    TEMP_PROFILE_PREFIXES,
    OwnerWatch,
    claim,
    engine_logs,
    run_to_the_end,
    stop_and_wait,
)

if TYPE_CHECKING:
    import ipyparallel as ipp

__all__ = ["ClusterHandle", "connect", "engine_launchers", "start_cluster"]

#: The profile used for clusters started with a batch system when no profile_dir is given.
DEFAULT_PROFILE = "notebookscan"

# start_cluster keyword -> launcher trait; only launchers that have the trait accept it
_OPTION_TRAITS = {
    "queue": "queue",
    "account": "account",
    "qos": "qos",
    "timelimit": "timelimit",
    "mpi_args": "mpi_args",
}


# --------------------------------------------------------------------------- helpers


def _ipython_dir() -> str:
    from IPython.paths import get_ipython_dir

    return get_ipython_dir()


def _known_profiles() -> list[str]:
    root = _ipython_dir()
    with contextlib.suppress(OSError):
        return sorted(
            n[len("profile_"):] for n in os.listdir(root)
            if n.startswith("profile_") and os.path.isdir(os.path.join(root, n))
        )
    return []


def _clusters_in(profile_dir: str) -> list[str]:
    """Cluster ids that have a client connection file in a profile."""
    found = []
    for path in glob.glob(os.path.join(profile_dir, "security", "ipcontroller-*client.json")):
        name = os.path.basename(path)[len("ipcontroller-"):-len("client.json")]
        found.append(name[:-1] if name.endswith("-") else name)
    return sorted(found)


def _resolve_connection_file(
    profile: str | None,
    cluster_id: str | None,
    connection_file: str | os.PathLike[str] | None,
    profile_dir: str | os.PathLike[str] | None,
    timeout: float,
) -> str:
    if connection_file is not None:
        if profile is not None or cluster_id is not None or profile_dir is not None:
            raise ExecutorError(
                f"connection_file={os.fspath(connection_file)!r} was passed together with "
                "profile/cluster_id/profile_dir; pass either the connection file alone or the "
                "profile (and cluster_id) to find it."
            )
        path = os.path.abspath(os.path.expanduser(os.fspath(connection_file)))
        if os.path.isdir(path):
            raise ExecutorError(
                f"connection_file={path!r} is a directory; pass the file itself, usually "
                "<profile>/security/ipcontroller-<cluster_id>-client.json."
            )
        if not os.path.exists(path):
            raise ExecutorError(
                f"connection_file={path!r} does not exist. The controller writes it as "
                "<profile>/security/ipcontroller-<cluster_id>-client.json on the machine where "
                "it runs; copy it here (e.g. `scp cluster:.ipython/profile_default/security/"
                "ipcontroller-client.json .`), or pass profile=/cluster_id= instead."
            )
        return path

    if profile_dir is not None:
        pdir = os.path.abspath(os.path.expanduser(os.fspath(profile_dir)))
        label = f"profile_dir={pdir!r}"
    else:
        name = profile or "default"
        pdir = os.path.join(_ipython_dir(), f"profile_{name}")
        label = f"profile={name!r}"
    if not os.path.isdir(pdir):
        known = _known_profiles()
        raise ExecutorError(
            f"{label}: the profile directory {pdir!r} does not exist. Profiles in "
            f"{_ipython_dir()!r}: {known or 'none'}. Start a cluster with `ipcluster start "
            f"-n 4 --profile={profile or 'default'}` first, or pass profile_dir=/connection_file=."
        )
    suffix = f"-{cluster_id}" if cluster_id else ""
    path = os.path.join(pdir, "security", f"ipcontroller{suffix}-client.json")
    state = os.path.join(pdir, "security", f"cluster{suffix}.json")
    deadline = time.monotonic() + timeout
    # a cluster that is starting has its state file before its connection file
    while not os.path.exists(path) and os.path.exists(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not os.path.exists(path):
        running = _clusters_in(pdir)
        ids = ", ".join("cluster_id=" + (repr(c) if c else "None") for c in running)
        hint = (
            f"Clusters with a connection file in this profile: {ids}."
            if running
            else "No cluster in this profile has a connection file."
        )
        cid = f" --cluster-id={cluster_id}" if cluster_id else ""
        raise ExecutorError(
            f"no running controller for {label}, cluster_id={cluster_id!r}: {path!r} does not "
            f"exist. {hint} Start one with `ipcluster start -n 4 --profile-dir={pdir}{cid} "
            "--daemonize`, or pass the cluster_id of a running one (`ipcluster list`)."
        )
    return path


# --------------------------------------------------------------------------- connect


def connect(
    profile: str | None = None,
    cluster_id: str | None = None,
    connection_file: str | os.PathLike[str] | None = None,
    *,
    profile_dir: str | os.PathLike[str] | None = None,
    sshserver: str | None = None,
    sshkey: str | None = None,
    timeout: float = 30.0,
    min_engines: int = 1,
    controller_timeout: float | None = None,
) -> IPyParallelExecutor:
    """Connect to a running ipyparallel cluster and return an executor for scans.

    Parameters
    ----------
    profile, cluster_id
        Find the connection file ``ipcontroller[-<cluster_id>]-client.json`` in the
        IPython profile ``profile`` (default ``"default"``); ``ipcluster list`` shows both.
    connection_file
        The controller's client connection file itself, e.g. copied from a login node.
    profile_dir
        A profile directory instead of a profile name.
    sshserver, sshkey
        Tunnel every connection through ssh, e.g. ``sshserver="me@login.hpc.example"``
        (``"me@host:2222"`` for another port) from a laptop; the controller must listen
        on an address the ssh server can reach. ``sshkey`` is a private key file.
    timeout
        Seconds to wait for the controller to answer and for ``min_engines`` engines.
    min_engines
        Engines that must be registered before this returns (0: do not wait). More
        engines can join later; the scan uses whatever is registered.
    controller_timeout
        Seconds the controller may stay silent before a running scan gives up on it with
        an ``ExecutorError`` (finished points are stored; run again once the cluster is
        back). Default 10 s or ``NOTEBOOKSCAN_CONTROLLER_TIMEOUT``; raise it for a slow
        ssh tunnel, 0 waits forever.

    Returns
    -------
    IPyParallelExecutor
        Owns its client: ``executor.shutdown()`` closes the connection (the cluster
        keeps running).

    Raises
    ------
    ExecutorError
        No such profile or connection file, the controller does not answer, or fewer
        than ``min_engines`` engines registered within ``timeout``.

    Examples
    --------
    In a terminal: ``ipcluster start -n 8 --profile=scan --cluster-id=demo --daemonize``

    .. code-block:: python

        ex = connect(profile="scan", cluster_id="demo")
        ex = connect(connection_file="ipcontroller-demo-client.json",
                     sshserver="me@login.hpc.example")
    """
    import ipyparallel as ipp

    if min_engines < 0:
        raise ExecutorError(f"min_engines={min_engines!r}: pass 0 (do not wait) or more.")
    path = _resolve_connection_file(profile, cluster_id, connection_file, profile_dir, timeout)
    kwargs: dict[str, Any] = {"timeout": timeout}
    if sshserver:
        kwargs["sshserver"] = sshserver
    if sshkey:
        kwargs["sshkey"] = os.path.expanduser(sshkey)
    try:
        # positional: Client(url_file=...) ignores the keyword and reads the default profile
        client = ipp.Client(path, **kwargs)
    except Exception as exc:
        try:
            with open(path) as f:
                info = json.load(f)
            where = f"{info.get('interface', '?')} (location {info.get('location', '?')})"
        except Exception:
            where = "?"
        via = f" through ssh {sshserver!r}" if sshserver else ""
        raise ExecutorError(
            f"could not reach the controller of {path!r} at {where}{via} within {timeout:g} s: "
            f"{type(exc).__name__}: {exc}. Is it still running (`ipcluster list`)? A file left "
            "by a stopped cluster looks the same; from another machine pass sshserver=."
        ) from exc
    if min_engines:
        try:
            client.wait_for_engines(min_engines, timeout=timeout, interactive=False)
        except Exception as exc:
            have = len(client.ids)
            client.close()
            raise ExecutorError(
                f"connected to the controller of {path!r}, but only {have} of min_engines="
                f"{min_engines} engine(s) registered within {timeout:g} s. Start engines "
                f"(`ipcluster engines -n 4 --profile-dir=...`), wait for the batch job, or pass "
                "min_engines=0 to start the scan now and let engines join."
            ) from exc
    executor = IPyParallelExecutor(client.load_balanced_view(), owns_client=True,
                                   controller_timeout=controller_timeout)
    cid = cluster_id or os.path.basename(path)[len("ipcontroller-"):-len("-client.json")]
    executor.description = f"ipyparallel (cluster {cid or 'default'!r} via {path})"
    return executor


# --------------------------------------------------------------------------- start_cluster


def engine_launchers() -> dict[str, type]:
    """The engine launchers ipyparallel knows here, by name (``"slurm"``, ``"mpi"``…)."""
    from importlib.metadata import entry_points

    launchers = {}
    for ep in entry_points(group="ipyparallel.engine_launchers"):
        with contextlib.suppress(Exception):
            launchers[ep.name.lower()] = ep.load()
    return dict(sorted(launchers.items()))


def _launcher_class(kind: str, value: str | type, group: str) -> type:
    from importlib.metadata import entry_points

    if isinstance(value, type):
        return value
    registry = {ep.name.lower(): ep for ep in entry_points(group=group)}
    key = str(value).lower()
    if key in registry:
        return registry[key].load()
    if "." in str(value):
        from traitlets import import_item

        try:
            return import_item(str(value))
        except Exception as exc:
            raise ExecutorError(
                f"{kind}={value!r} cannot be imported ({type(exc).__name__}: {exc}); pass one "
                f"of {', '.join(map(repr, sorted(registry)))} or an importable launcher class."
            ) from exc
    raise ExecutorError(
        f"{kind}={value!r} is not a known ipyparallel launcher; known: "
        f"{', '.join(map(repr, sorted(registry)))} (or a launcher class / its import path)."
    )


def _check_commands(kind: str, name: str, cls: type, config: Mapping[str, Any]) -> None:
    """Fail early, with the fix, when the launcher's command is not on PATH."""
    traits = cls.class_traits(config=True)
    for trait in ("submit_command", "mpi_cmd"):
        if trait not in traits:
            continue
        command = config.get(trait) or traits[trait].default()
        if command and shutil.which(command[0]) is None:
            raise ExecutorError(
                f"{kind}={name!r} runs `{command[0]}`, which is not on PATH here "
                f"({cls.__name__}.{trait} = {command!r}). Run this on a machine that has it "
                "(the login node of the cluster), load its environment module (`module load "
                f"...`), or set launcher_options={{{trait!r}: [...]}}."
            )


def _supporting(trait: str) -> list[str]:
    return [name for name, cls in engine_launchers().items()
            if trait in cls.class_traits(config=True)]


class ClusterHandle:
    """A cluster started by :func:`start_cluster`: its executor, and how to stop it.

    Use it as a context manager, or call :meth:`stop`. It is also stopped at interpreter
    exit unless ``start_cluster(..., stop_at_exit=False)``.

    Attributes
    ----------
    cluster : ipyparallel.Cluster
        The underlying cluster (add engines with ``cluster.start_engines_sync(n=4)``).
    client : ipyparallel.Client
    executor : IPyParallelExecutor
        Pass it as ``Scan.run(executor=...)``.
    profile_dir, cluster_id, connection_file : str
        Where the connection file is: ``connect(connection_file=...)`` or
        ``connect(profile_dir=..., cluster_id=...)`` from another process joins it.
    engines : str
        The engine launcher.
    n : int
        Engines started.
    """

    def __init__(self, *, cluster: ipp.Cluster, client: ipp.Client, executor: IPyParallelExecutor,
                 loop: LoopThread, engines: str, n: int, remove_profile_dir: bool,
                 watch: OwnerWatch | None = None):
        self.cluster = cluster
        self.client = client
        self.executor = executor
        self.engines = engines
        self.n = n
        self.profile_dir: str = cluster.profile_dir
        self.cluster_id: str = cluster.cluster_id
        self.connection_file = os.path.join(
            self.profile_dir, "security", f"ipcontroller-{self.cluster_id}-client.json"
        )
        self._loop = loop
        self._remove_profile_dir = remove_profile_dir
        self._watch = watch
        self._lock = threading.Lock()
        self.stopped = False

    def stop(self) -> None:
        """Stop the engines and the controller (cancels batch jobs); safe to call twice."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
        _live_handles.discard(self)
        run_to_the_end(lambda: _stop_cluster(  # a Ctrl-C meanwhile must not cut it short
            self.cluster, self.client, self.executor, self._loop,
            self.profile_dir if self._remove_profile_dir else None, self._watch))

    def __enter__(self) -> ClusterHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else f"{len(self.client.ids)} engine(s) registered"
        return (f"<ClusterHandle {self.cluster_id!r}: {self.engines} engines, {state}, "
                f"profile_dir={self.profile_dir!r}>")


def _stop_cluster(cluster: Any, client: Any, executor: IPyParallelExecutor | None,
                  loop: LoopThread, remove_dir: str | None,
                  watch: OwnerWatch | None = None) -> None:
    if executor is not None:
        with contextlib.suppress(Exception):
            executor.shutdown()
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()
    stop_and_wait(cluster, loop)
    loop.close()
    if remove_dir:
        shutil.rmtree(remove_dir, ignore_errors=True)
    if watch is not None:
        watch.release()


_live_handles: weakref.WeakSet[ClusterHandle] = weakref.WeakSet()


def _stop_live_handles() -> None:
    for handle in list(_live_handles):
        with contextlib.suppress(Exception):
            handle.stop()


@atexit.register
def _stop_live_handles_at_exit() -> None:
    if _live_handles:  # a second Ctrl-C must not cut the stop short
        run_to_the_end(_stop_live_handles, at_exit=True)


if hasattr(os, "register_at_fork"):  # a forked child must not stop its parent's clusters
    os.register_at_fork(after_in_child=_live_handles.clear)


def _secure(path: str) -> None:
    """Make a connection file readable by its owner only (it holds the cluster's key)."""
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)


def start_cluster(
    n: int | None = None,
    engines: str | type = "local",
    *,
    controller: str | type = "local",
    profile_dir: str | os.PathLike[str] | None = None,
    cluster_id: str | None = None,
    controller_ip: str | None = None,
    heartbeat: float | None = None,
    queue: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    timelimit: str | None = None,
    mpi_args: Sequence[str] | None = None,
    launcher_options: Mapping[str, Any] | None = None,
    min_engines: int | None = None,
    timeout: float = 120.0,
    stop_at_exit: bool = True,
    quiet: bool = False,
) -> ClusterHandle:
    """Start an ipyparallel controller here and ``n`` engines through a launcher.

    The Python equivalent of ``ipcluster start -n N --engines=...``; works in scripts and
    in a Jupyter kernel.

    Parameters
    ----------
    n
        Engines to start. Default: one per core for ``engines="local"``; required
        otherwise (the number of Slurm/PBS tasks or MPI ranks).
    engines
        The engine launcher: ``"local"``, ``"slurm"``, ``"pbs"``, ``"mpi"``, ``"sge"``,
        ``"lsf"``, ``"htcondor"``, ``"ssh"``… (see :func:`engine_launchers`), or a
        launcher class.
    controller
        Where the controller runs; ``"local"`` (here, the default) is what you want
        unless compute nodes cannot reach this machine (then e.g. ``"slurm"``).
    profile_dir
        IPython profile directory for connection files and logs. Default: a temporary
        directory (removed by :meth:`ClusterHandle.stop`) for local engines;
        ``<IPYTHONDIR>/profile_notebookscan`` otherwise, because engines on other nodes
        write their logs there: it must be on a file system they share.
    cluster_id
        Name of the cluster in the profile (default: a time-stamped random id).
    controller_ip
        Interface the controller listens on. Default ``"127.0.0.1"`` for local engines,
        ``"*"`` (all interfaces) otherwise.
    heartbeat
        Engine heartbeat period in seconds. Default 0.5 for local engines (starts in
        ~3 s instead of ~7 s); ipyparallel's 3 s otherwise, which suits busy nodes.
    queue, account, qos, timelimit
        Batch options (``queue`` is the Slurm partition or PBS/SGE/LSF queue; ``account``,
        ``qos`` and ``timelimit`` such as ``"01:00:00"`` are Slurm's).
    mpi_args
        Extra ``mpiexec`` arguments for ``engines="mpi"``, e.g. ``["--oversubscribe"]``.
    launcher_options
        Any other configurable option of the engine launcher class, by trait name, e.g.
        ``{"batch_template_file": "engines.sbatch"}`` for a Slurm script of your own.
    min_engines
        Engines to wait for before returning (default ``n``; 0 returns at once and lets
        engines join while the scan runs, useful when jobs wait in a queue).
    timeout
        Seconds to wait for ``min_engines`` engines.
    stop_at_exit
        Stop the cluster when this Python process exits.
    quiet
        No start-up message.

    Returns
    -------
    ClusterHandle

    Raises
    ------
    ExecutorError
        Unknown launcher, an option the launcher does not have, its command (``sbatch``,
        ``qsub``, ``mpiexec``) missing, or engines not registered within ``timeout``
        (the cluster is stopped again; the message has the end of the logs).

    Examples
    --------
    .. code-block:: python

        with start_cluster(2, quiet=True) as cluster:
            print(cluster.executor.submit(pow, 2, 8).result())   # 256
        cluster = start_cluster(64, engines="slurm", account="myproj",
                                timelimit="02:00:00", queue="compute")
    """
    import ipyparallel as ipp

    engine_cls = _launcher_class("engines", engines, "ipyparallel.engine_launchers")
    controller_cls = _launcher_class(
        "controller", controller, "ipyparallel.controller_launchers"
    )
    engines_name = engines if isinstance(engines, str) else engine_cls.__name__
    local = engine_cls.__name__ == "LocalEngineSetLauncher"
    if n is None:
        if not local:
            raise ExecutorError(
                f"n=None with engines={engines_name!r}: say how many engines to start "
                "(the number of batch tasks / MPI ranks), e.g. start_cluster(32, "
                f"engines={engines_name!r})."
            )
        n = usable_cores()
    if int(n) < 1:
        raise ExecutorError(f"n={n!r}: start at least one engine.")
    n = int(n)
    if min_engines is None:
        min_engines = n
    if min_engines < 0 or min_engines > n:
        raise ExecutorError(f"min_engines={min_engines!r}: pass a number from 0 to n={n}.")
    if heartbeat is not None and heartbeat <= 0:
        raise ExecutorError(f"heartbeat={heartbeat!r}: pass a period in seconds, e.g. 0.5 or 3.")

    # launcher options, checked against the traits the launcher really has
    options: dict[str, Any] = {}
    given = {"queue": queue, "account": account, "qos": qos, "timelimit": timelimit,
             "mpi_args": list(mpi_args) if mpi_args is not None else None}
    engine_traits = engine_cls.class_traits(config=True)
    for arg, value in given.items():
        if value is None:
            continue
        trait = _OPTION_TRAITS[arg]
        if trait not in engine_traits:
            raise ExecutorError(
                f"{arg}={value!r} is not an option of the {engines_name!r} engine launcher "
                f"({engine_cls.__name__}); it applies to: {', '.join(_supporting(trait))}. "
                "Remove it, or set launcher_options={...} with that launcher's own options."
            )
        options[trait] = value
    for trait, value in (launcher_options or {}).items():
        if trait not in engine_traits:
            raise ExecutorError(
                f"launcher_options={{{trait!r}: ...}}: {engine_cls.__name__} has no option "
                f"{trait!r}; its options are: {', '.join(sorted(engine_traits))}."
            )
        options[trait] = value
    _check_commands("engines", engines_name, engine_cls, options)
    if controller_cls.__name__ != "LocalControllerLauncher":
        _check_commands("controller", str(controller), controller_cls, {})

    remove_dir = False
    if profile_dir is None:
        if local:
            pdir = tempfile.mkdtemp(prefix=TEMP_PROFILE_PREFIXES[1])
            remove_dir = True
            if stop_at_exit:  # a process killed before stopping it: the next one cleans up
                claim(pdir)
        else:
            pdir = os.path.join(_ipython_dir(), f"profile_{DEFAULT_PROFILE}")
    else:
        pdir = os.path.abspath(os.path.expanduser(os.fspath(profile_dir)))
    os.makedirs(pdir, exist_ok=True)

    period_ms = (LOCAL_HEARTBEAT_MS if local else None) if heartbeat is None else heartbeat * 1e3
    controller_args = [f"--HeartMonitor.period={int(period_ms)}"] if period_ms else []
    cluster_kwargs: dict[str, Any] = {}
    if cluster_id:
        cluster_kwargs["cluster_id"] = cluster_id
    cluster = ipp.Cluster(
        n=n,
        engines=engine_cls,
        controller=controller_cls,
        profile_dir=pdir,
        controller_ip=controller_ip or ("127.0.0.1" if local else "*"),
        controller_args=controller_args,
        log_level=logging.ERROR,
        shutdown_atexit=False,  # this module stops it (stop_at_exit), on its own loop
        parent=None,  # do not pick up the configuration of the running IPython session
        **cluster_kwargs,
    )
    section = cluster.config[engine_cls.__name__]
    for trait, value in options.items():
        section[trait] = value
    if remove_dir and "environment" not in options:
        # engines' IPython would otherwise create ~/.ipython/profile_default
        section["environment"] = {"IPYTHONDIR": os.path.join(pdir, "ipython")}
    watch = None
    if stop_at_exit:  # its processes here die with this one, even when it is SIGKILLed
        watch = OwnerWatch(pdir, cluster.cluster_id, remove_dir=remove_dir)
        if local:
            section["environment"] = {**section.get("environment", {}), **watch.environment}
        if controller_cls.__name__ == "LocalControllerLauncher":
            cluster.config.LocalControllerLauncher.environment = dict(watch.environment)
    # batch scripts go to the profile, not the current directory ('.' is hard-coded)
    for cls in (engine_cls, controller_cls):
        traits = cls.class_traits(config=True)
        if "batch_file_name" in traits and "batch_file_name" not in cluster.config[cls.__name__]:
            batch_dir = os.path.join(pdir, "batch")
            os.makedirs(batch_dir, exist_ok=True)
            cluster.config[cls.__name__]["batch_file_name"] = os.path.join(
                batch_dir, f"{cluster.cluster_id}-{traits['batch_file_name'].default()}"
            )

    loop = LoopThread(f"notebookscan-cluster-{cluster.cluster_id}")
    word = "engine" if n == 1 else "engines"
    if not quiet:
        print(f"Starting {n} {engines_name} ipyparallel {word} (cluster {cluster.cluster_id!r})…",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    client = None
    try:
        loop.run(cluster.start_cluster(n), timeout=timeout)
        client = loop.run(cluster.connect_client(), timeout=timeout)
        if min_engines:
            client.wait_for_engines(min_engines, timeout=timeout, interactive=False)
    except BaseException as exc:
        have = len(client.ids) if client is not None else 0
        logs = engine_logs(pdir)
        _stop_cluster(cluster, client, None, loop, pdir if remove_dir else None, watch)
        if isinstance(exc, KeyboardInterrupt):
            raise
        batch = "" if local else (
            " With a batch system the job may still wait in the queue (check `squeue` / "
            "`qstat`): raise timeout, or pass min_engines=0 to let engines join later."
        )
        raise ExecutorError(
            f"could not start {n} {engines_name} {word}: {have} of {min_engines} registered "
            f"within {timeout:g} s ({type(exc).__name__}: {exc}).{batch}"
            + (f"\nLast log lines:\n{logs}" if logs else "")
        ) from exc
    handle = ClusterHandle(
        cluster=cluster, client=client,
        executor=IPyParallelExecutor(client.load_balanced_view(), cluster=cluster),
        loop=loop, engines=engines_name, n=n, remove_profile_dir=remove_dir, watch=watch,
    )
    handle.executor.description = (
        f"ipyparallel ({engines_name}, cluster {cluster.cluster_id!r})"
    )
    _secure(handle.connection_file)
    _secure(os.path.join(pdir, "security", f"ipcontroller-{cluster.cluster_id}-engine.json"))
    if stop_at_exit:
        _live_handles.add(handle)
    if not quiet:
        print(f"{len(client.ids)} {engines_name} {word} ready in "
              f"{time.perf_counter() - t0:.1f} s.", file=sys.stderr, flush=True)
    return handle
