"""The demo notebooks run top to bottom, as a new user runs them, at small sizes.

Each notebook is executed with nbclient in a fresh ``python3`` kernel, in a temporary
copy of ``notebooks/`` (so its ``results/`` stores land there), with
``NOTEBOOKSCAN_SMALL=1``, which the notebooks read to shrink their scans. A cell that
raises fails the test; then the stores the notebook wrote are checked. After the kernel
has shut down, no kernel, engine, controller or detached runner that the notebook started
may be left.

Set ``NOTEBOOKSCAN_KEEP_EXECUTED=<dir>`` to keep the executed notebooks (with outputs)
for a look. ``python notebooks/build.py --execute OUT`` runs them at full size.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import notebookscan as ns

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell
_MARKERS = ("ipyparallel", "ipengine", "ipcontroller", "ipcluster", "ipykernel_launcher",
            "notebookscan.run.detached")


# --------------------------------------------------------------------------- helpers


def _started_by_this_session() -> dict[int, str]:
    """Kernels, ipyparallel processes and detached runners started by this test session."""
    import psutil
    from conftest import SESSION_TAG, TAG_VAR

    found = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or ())
            if not any(marker in cmdline for marker in _MARKERS):
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TAG_VAR) == SESSION_TAG:
                found[proc.pid] = cmdline
    return found


def _left_over(before: dict[int, str], timeout: float = 20.0) -> dict[int, str]:
    """Processes started since ``before`` that are still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = {pid: cmd for pid, cmd in _started_by_this_session().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


def _kill(pids: dict[int, str]) -> None:
    import psutil

    for pid in pids:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


def run_notebook(name: str, workdir: Path) -> Any:
    """Execute ``<workdir>/<name>.ipynb`` in a fresh kernel; return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(workdir / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    before = _started_by_this_session()
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        keep = os.environ.get("NOTEBOOKSCAN_KEEP_EXECUTED")
        if keep:
            os.makedirs(keep, exist_ok=True)
            nbformat.write(nb, os.path.join(keep, f"{name}.ipynb"))
        left = _left_over(before)
        _kill(left)
    print(f"{name}: {time.perf_counter() - t0:.1f} s")
    assert not left, (f"{name} left processes running after its kernel shut down "
                      f"(killed now): {left}")
    return nb


def tagged(nb: Any, tag: str) -> str:
    """The text output (stdout, plain-text results) of the cell tagged ``tag``."""
    cells = [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    parts = []
    for output in cells[0].get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


def figures(nb: Any) -> int:
    return sum("image/png" in output.get("data", {})
               for cell in nb.cells for output in cell.get("outputs", []))


def done(store: Path) -> int:
    ds = ns.open_store(store)
    return int((ds.ns_status == "done").sum())


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the notebooks (without results) to run in, at the test sizes."""
    copy = tmp_path / "notebooks"
    copy.mkdir()
    for name in NAMES:
        shutil.copy2(NOTEBOOKS / f"{name}.ipynb", copy)
    monkeypatch.setenv("NOTEBOOKSCAN_SMALL", "1")
    return copy


# --------------------------------------------------------------------------- the sources


def _build_module() -> Any:
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_notebooks_are_built_from_build_py_and_carry_no_outputs():
    import nbformat

    build = _build_module()
    assert sorted(build.NOTEBOOKS) == NAMES
    for name in NAMES:
        text = (NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8")
        assert text == build.text_of(name), (
            f"notebooks/{name}.ipynb differs from its source: edit notebooks/build.py and "
            "run `python notebooks/build.py`")
        nb = nbformat.reads(text, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (name, cell.id)


def test_every_notebook_shrinks_for_the_tests_and_writes_under_results():
    build = _build_module()
    for name, source in build.NOTEBOOKS.items():
        assert 'os.environ.get("NOTEBOOKSCAN_SMALL") == "1"' in source, name
        paths = re.findall(r'"([^"]*results/[^"]*)"', source)
        assert paths, f"{name} writes no store under results/"
        assert all(path.startswith("results/") for path in paths), (name, paths)


# --------------------------------------------------------------------------- running them


@pytest.mark.cluster
def test_01_quickstart(workdir: Path):
    nb = run_notebook("01-quickstart", workdir)
    assert done(workdir / "results/01-rates") == 6 * 3 * 3  # k × tau × trials
    failures = ns.open_store(workdir / "results/01-failures")
    assert Counter(failures.ns_status.values.ravel().tolist()) == {"done": 4, "failed": 2}
    assert "tau must be > 0.0002 s" in tagged(nb, "failures")
    rerun = tagged(nb, "rerun")
    assert "finished: 0 done" in rerun and "(54 already stored)" in rerun, rerun
    assert figures(nb) >= 4


@pytest.mark.cluster
def test_02_cellular_automata(workdir: Path):
    nb = run_notebook("02-cellular-automata", workdir)
    ds = ns.open_store(workdir / "results/02-automata")
    assert int((ds.ns_status == "done").sum()) == 14 * 2  # rules × initial conditions
    assert ds.pattern.dtype.name == "uint8"
    assert "[184]" in tagged(nb, "conserving")
    assert figures(nb) >= 2


@pytest.mark.cluster
def test_03_coarse_to_fine(workdir: Path):
    nb = run_notebook("03-coarse-to-fine", workdir)
    ds = ns.open_store(workdir / "results/03-modulation")
    runs = Counter(ds.ns_run.values[ds.ns_status.values == "done"].tolist())
    # coarse: amp 0 at one frequency + 2 amplitudes × 4 frequencies, 2 trials = 18 points;
    # refined: 2 amplitudes × 5 frequencies × 3 trials, less the 4 stored at 300 Hz = 26
    assert sorted(runs.values()) == [18, 26], runs
    assert "18 already stored" in tagged(nb, "refined")
    assert "amp" in ds.dims and "freq" in ds.dims
    assert figures(nb) >= 2


@pytest.mark.cluster
def test_04_long_runs(workdir: Path):
    nb = run_notebook("04-long-runs", workdir)
    store = workdir / "results/04-network"
    points = ns.open_store(store)
    assert (points.ns_status == "done").all() and points.ns_status.size == 3
    assert (points.link == 2).all() and (points.segments == 20).all()
    # per point: 40 segments + 10 added by extend in link 0, then 20 in links 1 and 2
    assert done(store / "segments") == 3 * (50 + 20 + 20)
    assert "'complete': 3" in tagged(nb, "resumed")
    assert figures(nb) >= 3


@pytest.mark.cluster
def test_05_cluster(workdir: Path):
    nb = run_notebook("05-cluster", workdir)
    assert done(workdir / "results/05-machine-a") == 6 * 2 * 2
    assert done(workdir / "results/05-machine-b") == 6 * 2 * 2
    merged = ns.open_store(workdir / "results/05-merged")
    assert int((merged.ns_status == "done").sum()) == 6 * 3 * 2  # tau = 10 ms only once
    assert "finished: " in tagged(nb, "detached")
    assert "0 conflicting point(s)" in tagged(nb, "merged")


@pytest.mark.cluster
def test_06_adaptive(workdir: Path):
    nb = run_notebook("06-adaptive", workdir)
    step = ns.open_store(workdir / "results/06-step")
    assert 60 < done(workdir / "results/06-step") <= 80  # the goal, then 20 more
    assert int((abs(step.x - 0.3) < 0.05).sum()) > step.sizes["point"] // 2
    resume = tagged(nb, "resume")
    assert "first asks:" in resume and "finished: 20 done" in resume, resume
    rings = ns.open_store(workdir / "results/06-ring")
    assert set(rings.width.values.tolist()) == {0.05, 0.2}
    assert done(workdir / "results/06-ring") == 120
    assert figures(nb) >= 2
