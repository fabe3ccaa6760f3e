"""The documentation matches the code: the API reference in docs/api/ is what
``make docs`` would write now, every public name has a docstring, and the relative
links (and #anchors) in README.md and docs/ lead somewhere."""

from __future__ import annotations

import functools
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
GENERATOR = ROOT / "docs" / "build_api.py"


@functools.cache
def _generator():
    # docs/ is not a package: load the script as a module to reuse its helpers
    # (registered in sys.modules first: its dataclasses look their module up there)
    spec = importlib.util.spec_from_file_location("notebookscan_build_api", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date(tmp_path: Path):
    # a subprocess, as `make docs` runs it: fresh imports, its own $COLUMNS handling
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], check=True,
                   cwd=ROOT, capture_output=True, text=True)
    fresh = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.md")}
    committed = {p.name: p.read_text(encoding="utf-8") for p in API.glob("*.md")}
    stale = sorted(name for name in fresh.keys() | committed.keys()
                   if fresh.get(name) != committed.get(name))
    assert not stale, (f"docs/api/ is out of date ({', '.join(stale)}): run `make docs` "
                       "and commit the result")


def test_every_public_name_has_a_docstring():
    # the names of notebookscan.__all__ and of the executors, segments, widgets and
    # plotting modules, and their public methods and properties
    gen = _generator()
    missing = [f"{e.module}.{e.name}" for e in gen.public_entries() if not gen._own_doc(e.obj)]
    missing += gen.missing_docstrings()
    assert not missing, "public names without a docstring:\n  " + "\n  ".join(missing)


def test_every_public_name_is_on_a_page():
    pages = (API / "README.md").read_text(encoding="utf-8")
    gen = _generator()
    absent = [e.name for e in gen.public_entries() if f"[`{e.name}`]" not in pages]
    assert not absent, absent
    assert "other.md" not in pages, "give these names a topic in docs/build_api.py PAGES"


# --------------------------------------------------------------------------- links

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REF = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def links(text: str) -> list[str]:
    """Link targets of a Markdown text, outside code blocks and code spans."""
    text = _CODE.sub("", _FENCE.sub("", text))
    return _LINK.findall(text) + _REF.findall(text)


def anchors(path: Path) -> set[str]:
    """The heading ids GitHub gives a Markdown file (the generator's own slug rule)."""
    gen = _generator()
    used: dict[str, int] = {}
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    found = {gen.github_anchor(re.sub(r"[`*]", "", m.group(1)), used)
             for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)}
    # explicit <a id="..."> / name="..." anchors count too
    return found | set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))


def test_the_link_checker_finds_links_and_skips_code():
    text = ("see [a](a.md), ![img](img/x.png) and [b](b.md#part 'title')\n"
            "`[not](c.md)`\n```\n[not](d.md)\n```\n[ref]: e.md\n")
    assert links(text) == ["a.md", "img/x.png", "b.md#part", "e.md"]


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in links(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.is_relative_to(root):
            broken.append(f"{target}: outside the repository")
        elif not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def test_the_link_checker_reports_missing_files_and_anchors(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Scan.run\n\n## ScanRun\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](other.md#scanrun) [ok](other.md#scanrun-1) [ok](#a-b)\n"
                   "[gone](gone.md) [bad](other.md#nope) [up](../x.md)\n\n# A b\n")
    assert broken_links(doc, tmp_path) == ["gone.md: no such file",
                                           "other.md#nope: no heading with that anchor",
                                           "../x.md: outside the repository"]


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(doc: Path):
    broken = broken_links(doc)
    assert not broken, f"{doc.relative_to(ROOT)}:\n  " + "\n  ".join(broken)


def test_api_reference_is_linked_from_readme_and_guide():
    for doc in (ROOT / "README.md", ROOT / "docs" / "guide.md", ROOT / "docs" / "README.md"):
        assert "api/README.md" in doc.read_text(encoding="utf-8"), doc
