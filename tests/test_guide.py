"""docs/guide.md's Python blocks run as the guide says: pasted in order into a fresh
Python started in an empty directory (tests/test_doc_examples.py runs the same blocks in a
Jupyter kernel, one per cell). Blocks marked ``<!-- example: skip, reason -->`` are left
out by both, and named in the output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_doc_examples import python_blocks

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_guides_python_blocks_run_in_order_in_a_fresh_python(tmp_path: Path) -> None:
    blocks = python_blocks(GUIDE.read_text(encoding="utf-8"), GUIDE)
    assert len(blocks) >= 5
    for block in blocks:
        if block.skip:
            print(f"left out: {block.name} ({block.head(1)!r}): {block.skip}")
    script = "\n".join(b.code for b in blocks if not b.skip)
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
