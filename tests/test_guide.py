"""docs/guide.md's Python blocks run as the guide says: pasted in order into a fresh
Python started in an empty directory. Blocks marked ``# needs: cluster`` need a running
ipyparallel cluster and are left out (and named in the output)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = "# needs: cluster"


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_block_extractor_finds_python_blocks_only() -> None:
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x\n"]


def test_the_guides_python_blocks_run_in_order_in_a_fresh_python(tmp_path: Path) -> None:
    blocks = python_blocks(GUIDE.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    runnable = [b for b in blocks if MARKER not in b]
    skipped = [b.splitlines()[0] for b in blocks if MARKER in b]
    if skipped:
        print("left out (need a running cluster):", *skipped, sep="\n  ")
    script = "\n".join(runnable)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"docs/guide.md blocks failed:\n{result.stderr[-3000:]}"


def test_no_doc_cites_a_design_document_that_is_not_there() -> None:
    cited = [f"{p.relative_to(ROOT)}: {line.strip()}" for p in DOCS
             for line in p.read_text(encoding="utf-8").splitlines()
             if re.search(r"\bDESIGN\b|design document", line)]
    assert not (ROOT / "DESIGN.md").exists() and not (ROOT / "docs" / "DESIGN.md").exists()
    assert not cited, "a citation of a design document that is not in the repository:\n" + \
        "\n".join(cited)


def test_the_docs_do_not_claim_there_is_no_pickle_at_all() -> None:
    # the function travels to workers (and a detached run's spec to its runner) pickled;
    # what the docs may promise is that nothing *in a store* is unpickled or executed
    for path in (ROOT / "README.md", GUIDE, ROOT / "docs" / "segments.md"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"No pickle\b", text), path
    for path in (ROOT / "README.md", GUIDE):
        text = path.read_text(encoding="utf-8")
        assert "through a pipe" in text and "opaque bytes" in text, path
