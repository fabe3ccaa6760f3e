"""Every ```python block of README.md and docs/*.md runs as written in a real Jupyter
kernel: one notebook per file, one block per cell, in order, in an empty directory.

A block that cannot run here says so in the markdown, on the line before it::

    <!-- example: skip, needs a Slurm cluster -->

and is reported as skipped with that reason. Any other block that raises fails the
test, which names the file, the block's number and its first lines.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*example:\s*skip\s*,\s*(?P<reason>[^>]*?)\s*-->")
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<code>.*?)^(?P=indent)```",
                   flags=re.S | re.M)
CELL_TIMEOUT = 180  # seconds for one block (the README's first starts local engines)
# run after a file's blocks: a run the docs leave going in the background (a notebook's
# run() returns at once) ends before the kernel does, so no engine outlives the test
SETTLE = """\
import gc, warnings
import notebookscan
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for scan in [o for o in gc.get_objects() if issubclass(type(o), notebookscan.Scan)]:
        if scan.progress is not None:
            scan.wait()
"""


@dataclass
class Block:
    """One ```python block of a markdown file."""

    path: Path
    number: int  # 1-based, counting every python block of the file
    code: str
    skip: str | None  # the reason given by an ``example: skip`` marker, else None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)} block {self.number}"

    def head(self, lines: int = 3) -> str:
        return "\n".join(self.code.splitlines()[:lines])


def python_blocks(text: str, path: Path = ROOT / "x.md") -> list[Block]:
    """The ```python blocks of a markdown text in order (indented ones dedented), each
    with the reason of the ``<!-- example: skip, ... -->`` marker right before it."""
    blocks = []
    end = 0
    for number, match in enumerate(BLOCK.finditer(text), 1):
        before = text[end:match.start()].rstrip().splitlines()
        marker = SKIP.fullmatch(before[-1].strip()) if before else None
        indent = len(match["indent"])
        code = "".join(line[indent:] if line[:indent].isspace() else line
                       for line in match["code"].splitlines(keepends=True))
        blocks.append(Block(path, number, code, marker["reason"] if marker else None))
        end = match.end()
    return blocks


def doc_blocks() -> list[Block]:
    return [b for path in DOCS for b in python_blocks(path.read_text(encoding="utf-8"), path)]


def test_the_block_reader_finds_python_blocks_and_their_skip_markers() -> None:
    text = ("a\n```python\nx = 1\n```\n```bash\nls\n```\n"
            "<!-- example: skip, needs a Slurm cluster -->\n\n```python\ny = x\n```\n"
            "- item\n\n  ```python\n  z = 2\n  ```\n")
    blocks = python_blocks(text)
    assert [b.code for b in blocks] == ["x = 1\n", "y = x\n", "z = 2\n"]
    assert [b.skip for b in blocks] == [None, "needs a Slurm cluster", None]


def test_every_skip_marker_gives_a_reason_and_sits_before_a_python_block() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        markers = len(re.findall(r"^[ \t]*<!--\s*example:", text, flags=re.M))
        reasons = [b.skip for b in python_blocks(text, path) if b.skip is not None]
        assert markers == len(reasons), f"{path.name}: a marker not right before a block"
        assert all(len(r) > 5 for r in reasons), f"{path.name}: a marker without a reason"


@pytest.mark.parametrize("block", [b for b in doc_blocks() if b.skip],
                         ids=lambda b: f"{b.path.name}-{b.number}")
def test_marked_blocks_are_skipped_with_their_reason(block: Block) -> None:
    pytest.skip(f"{block.name} ({block.head(1)!r}): {block.skip}")


def _notebook(blocks: list[Block]):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(b.code.rstrip("\n")) for b in blocks]
    return nb


def _error(cell) -> str | None:
    """The error a cell's execution ended with (name, message, traceback end), if any."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            tail = "\n".join(output.get("traceback", [])[-3:])
            tail = re.sub(r"\x1b\[[0-9;]*m", "", tail)  # IPython colours the traceback
            return f"{output['ename']}: {output['evalue']}\n{tail[-1500:]}"
    return None


def _client(blocks: list[Block], cwd: Path):
    """A notebook client for ``blocks`` (one cell each, then :data:`SETTLE`), its kernel
    started in ``cwd``; errors stay in the cells' outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = _notebook(blocks)
    nb.cells.append(nbformat.v4.new_code_cell(SETTLE))
    return NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                          allow_errors=True, resources={"metadata": {"path": str(cwd)}})


def run_in_kernel(blocks: list[Block], cwd: Path):
    """Execute ``blocks`` as the cells of one notebook in a fresh kernel started in
    ``cwd``; return the executed notebook."""
    client = _client(blocks, cwd)
    client.execute()
    return client.nb


def runnable(path: Path) -> list[Block]:
    return [b for b in python_blocks(path.read_text(encoding="utf-8"), path) if not b.skip]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, tuple]:
    """Every doc file's notebook executed, each in its own kernel and empty directory,
    the kernels side by side (most of their time is waiting for engines and imports):
    ``{path: (notebook, seconds)}``."""
    import asyncio

    async def one(path: Path) -> tuple:
        t0 = time.monotonic()
        client = _client(runnable(path), tmp_path_factory.mktemp(path.stem))
        await client.async_execute()
        return client.nb, time.monotonic() - t0

    async def every() -> list[tuple]:
        return await asyncio.gather(*(one(p) for p in files))

    files = [p for p in DOCS if runnable(p)]
    t0 = time.monotonic()
    results = dict(zip(files, asyncio.run(every()), strict=True))
    print(f"\n{len(files)} files' blocks in kernels side by side: "
          f"{time.monotonic() - t0:.1f} s")
    return results


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", [p for p in DOCS if runnable(p)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_blocks_run_in_order_in_a_kernel(path: Path, executed: dict) -> None:
    blocks = runnable(path)
    nb, seconds = executed[path]
    print(f"{path.relative_to(ROOT)}: {len(blocks)} block(s) in {seconds:.1f} s")
    for block, cell in zip(blocks, nb.cells[:-1], strict=True):
        error = _error(cell)
        assert error is None, (
            f"{block.name} fails when its blocks run in order in a kernel:\n"
            f"{block.head()}\n...\n{error}")
    error = _error(nb.cells[-1])
    assert error is None, f"{path.name}: a run its blocks started ended badly:\n{error}"


# ------------------------------------------------------------- the run's progress display

WIDGET = "application/vnd.jupyter.widget-view+json"


def _outputs(cell, kind: str) -> list:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == kind]


@pytest.mark.timeout(300)
def test_in_a_kernel_the_progress_bar_stays_in_the_cell_that_started_the_run(
        tmp_path: Path) -> None:
    cells = [
        "import time\nimport notebookscan as ns\n\n"
        "def slow(x: float):\n    time.sleep(0.2)\n    return {'y': x}\n\n"
        "scan = ns.Scan(slow, ns.grid(x=range(16)), store='s')\n"
        "run = scan.run(executor='processes')\n"
        "print('returned', run.done())",
        "time.sleep(1.5)\nprint('second cell')",
        "run",
        "print(run.wait())",
    ]
    nb = run_in_kernel([Block(tmp_path / "x.md", i, c, None) for i, c in enumerate(cells)],
                       tmp_path)
    first, second, again, waited = nb.cells[:4]
    assert all(_error(c) is None for c in nb.cells), [_error(c) for c in nb.cells]
    # the bar is a widget shown in the cell of run() (which returned at once)
    bars = [o for o in _outputs(first, "display_data") if WIDGET in o["data"]]
    assert len(bars) == 1, first.outputs
    assert "returned False" in "".join(o["text"] for o in _outputs(first, "stream"))
    # nothing of it reaches the cells run while it goes on
    assert [(o["name"], o["text"]) for o in _outputs(second, "stream")] == \
        [("stdout", "second cell\n")], second.outputs
    assert not _outputs(waited, "display_data"), waited.outputs
    assert "finished: 16 done" in "".join(o["text"] for o in _outputs(waited, "stream"))
    # the handle shown in a later cell is the same live bar
    shown = [o for o in _outputs(again, "display_data") if WIDGET in o["data"]]
    assert [o["data"][WIDGET]["model_id"] for o in shown] == \
        [bars[0]["data"][WIDGET]["model_id"]], again.outputs


def test_in_a_script_run_blocks_and_draws_the_text_bar_on_stderr(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = ("import notebookscan as ns\n"
              "scan = ns.Scan(lambda x: x, ns.grid(x=range(5)), store='s')\n"
              "print(scan.run(executor='processes').done())\n"
              "print(scan.results().result.values.tolist())\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["True", "[0, 1, 2, 3, 4]"]
    assert "scan: 100%" in result.stderr and "5/5" in result.stderr, result.stderr


def test_results_during_a_run_are_the_points_so_far_and_say_so(tmp_path: Path) -> None:
    import notebookscan as ns
    from notebookscan.errors import PartialResultsWarning

    def slow(x: float):
        time.sleep(0.05)
        return {"y": 2 * x}

    scan = ns.Scan(slow, ns.grid(x=range(60)), store=tmp_path / "s")
    scan.run(executor="serial", wait=False, progress=False)
    with pytest.warns(PartialResultsWarning) as caught:
        ds = scan.results()  # nothing stored yet: waits for the first batch
    assert not scan._run.done()
    assert "y" in ds.data_vars  # every result variable, the missing points NaN
    stored = int((ds.ns_status == "done").sum())
    assert 0 < stored < 60
    note = ds.attrs["ns_in_progress"]
    assert re.match(rf"{stored} of 60 points so far, the run continues; scan.wait\(\)", note)
    assert any(str(w.message) == note for w in caught)
    assert ds.y.isnull().sum() == 60 - stored
    scan.wait()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = scan.results()
    assert "ns_in_progress" not in ds.attrs
    assert ds.y.values.tolist() == [2.0 * x for x in range(60)]


def test_results_during_a_run_whose_points_all_fail_do_not_wait_for_results(
        tmp_path: Path) -> None:
    """Failed points are a batch too: results() returns them at once, not after the
    first-batch wait, though no result's name is known yet."""
    import notebookscan as ns
    from notebookscan.errors import PartialResultsWarning

    def broken(x: float):
        time.sleep(0.05)
        raise ValueError(f"x={x} is broken")

    scan = ns.Scan(broken, ns.grid(x=range(200)), store=tmp_path / "s")
    scan.run(executor="serial", wait=False, progress=False, flush_interval=0.1)
    t0 = time.monotonic()
    with pytest.warns(PartialResultsWarning):
        ds = scan.results()
    waited = time.monotonic() - t0
    try:
        assert waited < 5, f"results() waited {waited:.1f} s for results that never come"
        assert int((ds.ns_status == "failed").sum()) > 0
        assert "ns_in_progress" in ds.attrs
    finally:
        scan.stop(now=True)
        scan.wait()


@pytest.mark.timeout(300)
def test_in_a_kernel_without_ipywidgets_the_bar_is_a_line_updated_in_its_cell(
        tmp_path: Path) -> None:
    cells = [
        "import sys\nsys.modules['ipywidgets'] = None  # as if it were not installed\n"
        "import time\nimport notebookscan as ns\n\n"
        "def slow(x: float):\n    time.sleep(0.2)\n    return {'y': x}\n\n"
        "scan = ns.Scan(slow, ns.grid(x=range(16)), store='s')\n"
        "run = scan.run(executor='processes')",
        "time.sleep(1.5)\nprint('second cell')",
        "print(run.wait())",
    ]
    nb = run_in_kernel([Block(tmp_path / "x.md", i, c, None) for i, c in enumerate(cells)],
                       tmp_path)
    first, second, waited = nb.cells[:3]
    assert all(_error(c) is None for c in nb.cells), [_error(c) for c in nb.cells]
    lines = [o["data"]["text/plain"] for o in _outputs(first, "display_data")]
    assert len(lines) == 1 and lines[0].startswith("scan: 100%") and "16/16" in lines[0], \
        first.outputs  # one display, updated in place to the end
    assert not _outputs(first, "stream"), first.outputs
    assert [(o["name"], o["text"]) for o in _outputs(second, "stream")] == \
        [("stdout", "second cell\n")], second.outputs
    assert not _outputs(waited, "display_data"), waited.outputs
