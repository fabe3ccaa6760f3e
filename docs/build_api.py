"""Write the Markdown API reference in docs/api/ from notebookscan's docstrings.

    python docs/build_api.py            # rewrite docs/api/*.md (what `make docs` runs)
    python docs/build_api.py --out DIR  # write elsewhere (tests/test_docs.py compares)

Plain ``inspect`` rather than Sphinx: the pages are read on GitHub, which renders
Markdown, and the output must be byte-for-byte reproducible so a test can check the
committed pages are current. The public API is ``notebookscan.__all__`` plus the
``__all__`` of the executors, segments, widgets and plotting modules, and the command
line. Docstrings are numpy style with reST roles; this converts the parts the package
uses (sections, parameter lists, ``>>>`` examples, ``::`` and ``code-block`` literals,
``:class:`` and friends, which become links when they name a documented object).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "api"

# (module, its public names): the modules whose __all__ make up the public API
API_MODULES = ("notebookscan", "notebookscan.executors", "notebookscan.segments",
               "notebookscan.adaptive", "notebookscan.widgets", "notebookscan.plotting")

# page -> (title, intro, names in reading order). A name not listed here still gets
# documented: it goes to the page of the module that defines it (MODULE_PAGE), after
# the listed ones, so a new public name never silently drops out of the reference.
PAGES: dict[str, tuple[str, str, list[str]]] = {
    "space": ("Spaces and point keys",
              "Which points to run: build spaces, combine them, and the stable key of a point.",
              ["grid", "zip_", "points", "sample", "trials", "Space", "Layout", "to_grid",
               "point_key", "point_seed"]),
    "scan": ("Running a scan",
             "Run a function over a space, watch it, stop it, and come back to it later.",
             ["Scan", "ScanRun", "Plan", "Events", "attach", "DetachedRun"]),
    "store": ("Result stores",
              "The NetCDF store a scan writes to, and the tools that read and repair it.",
              ["open_store", "Store", "merge", "compact", "verify"]),
    "cluster": ("Clusters", "Start or connect to an ipyparallel cluster to run scans on.",
                ["start_cluster", "connect", "ClusterHandle"]),
    "executors": ("Executors (notebookscan.executors)",
                  "What runs the points: in this process, in local processes, or on "
                  "ipyparallel engines.",
                  ["resolve_executor", "ScanExecutor", "SerialExecutor", "FuturesExecutor"]),
    "segments": ("Long simulations in segments (notebookscan.segments)",
                 "Models that run in segments, checkpoint their state and record as they go.",
                 ["segmented", "SegmentedScan", "Segment", "Segments", "SegmentContext",
                  "Recorder", "open_recordings", "merge_segmented", "SegmentedMergeReport",
                  "SegmentEvents", "SegmentProgress", "Checkpoint", "StateError",
                  "check_resumable", "is_segmented_model", "iterate", "segment_seed",
                  "encode_state", "decode_state", "states_equal"]),
    "adaptive": ("Adaptive scans (notebookscan.adaptive)",
                 "Points chosen by python-adaptive learners, stored like any scan's.",
                 ["AdaptiveScan", "Goal", "line", "on_grid", "rebuild"]),
    "plotting": ("Plots (notebookscan.plotting)",
                 "A labelled Dataset in, a matplotlib Figure out.",
                 ["plot_result", "plot_status", "parameters", "result_variables"]),
    "widgets": ("Widgets (notebookscan.widgets)",
                "ipywidgets front ends: define, run, monitor and explore a scan.",
                ["scan_app", "ScanApp", "builder", "SweepBuilder", "RunMonitor", "LivePlot",
                 "Explorer", "RefinePanel"]),
    "errors": ("Errors and warnings",
               "What notebookscan raises and warns: every error is a NotebookscanError "
               "(the hierarchy is in notebookscan.errors).",
               ["NotebookscanError", "ArgumentError", "ArgumentTypeError", "UnknownNameError",
                "SpaceError", "ResultError", "StoreError", "StoreFormatError", "ScanError",
                "ExecutorError", "WaitTimeout", "StoreWarning", "StaleResultsWarning"]),
}
MODULE_PAGE = {"space": "space", "keys": "space", "layout": "space", "scan": "scan",
               "events": "scan", "detached": "scan", "store": "store", "cluster": "cluster",
               "executors": "executors", "segments": "segments", "adaptive": "adaptive",
               "plotting": "plotting",
               "widgets": "widgets", "errors": "errors"}
OTHER_PAGE = ("other", "Other names", "Public names not yet given a topic.")
SKIP = {"__version__"}  # data, not API to document

# numpy-doc sections whose entries are "name : type" lines with indented descriptions
ITEM_SECTIONS = {"Parameters", "Other Parameters", "Returns", "Yields", "Raises", "Warns",
                 "Attributes", "Receives"}


@dataclass
class Entry:
    """One documented public object."""

    name: str           # the name users import
    module: str         # the module they import it from
    obj: Any
    aliases: list[str] = field(default_factory=list)  # other public import paths
    page: str = ""
    anchor: str = ""


# ------------------------------------------------------------------------- collecting


def public_entries() -> list[Entry]:
    """Every public name once; re-exports (notebookscan.Segment) become aliases."""
    by_id: dict[int, Entry] = {}
    order: list[Entry] = []
    # the subpackages first, so a re-exported object is documented where it lives
    for modname in reversed(API_MODULES):
        module = importlib.import_module(modname)
        for name in module.__all__:
            if name in SKIP:
                continue
            obj = getattr(module, name)
            known = by_id.get(id(obj))
            if known is not None:
                known.aliases.append(f"{modname}.{name}")
                continue
            entry = Entry(name, modname, obj)
            by_id[id(obj)] = entry
            order.append(entry)
    return order


def assign_pages(entries: list[Entry]) -> dict[str, list[Entry]]:
    pages: dict[str, list[Entry]] = {key: [] for key in PAGES}
    listed = {name: key for key, (_, _, names) in PAGES.items() for name in names}
    rank = {name: i for _, (_, _, names) in PAGES.items() for i, name in enumerate(names)}
    for entry in entries:
        defined_in = getattr(entry.obj, "__module__", entry.module) or entry.module
        part = defined_in.split(".")[1] if "." in defined_in else ""
        entry.page = listed.get(entry.name) or MODULE_PAGE.get(part, OTHER_PAGE[0])
        pages.setdefault(entry.page, []).append(entry)
    for key, items in pages.items():
        items.sort(key=lambda e: (rank.get(e.name, len(rank)), e.name))
        if not items:
            del pages[key]
    return pages


def own_members(cls: type) -> list[tuple[str, Any, type]]:
    """Public methods and properties a class defines in notebookscan (not inherited ones
    from ipywidgets, Exception, ...), in definition order."""
    seen: set[str] = set()
    members = []
    for klass in cls.__mro__:
        if not (getattr(klass, "__module__", "") or "").startswith("notebookscan"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, property) or inspect.isfunction(value):
                seen.add(name)
                members.append((name, getattr(cls, name, value)
                                if not isinstance(value, property) else value, klass))
    return members


def missing_docstrings() -> list[str]:
    """Public names (and their public methods and properties) without a docstring."""
    missing = []
    for entry in public_entries():
        qual = f"{entry.module}.{entry.name}"
        if not _own_doc(entry.obj):
            missing.append(qual)
        if inspect.isclass(entry.obj):
            for name, member, _ in own_members(entry.obj):
                if not inspect.getdoc(member):
                    missing.append(f"{qual}.{name}")
    return missing


def _own_doc(obj: Any) -> str:
    # a class without a docstring would otherwise inherit object's or its base's
    if inspect.isclass(obj):
        return inspect.cleandoc(obj.__dict__.get("__doc__") or "")
    return inspect.getdoc(obj) or ""


# ------------------------------------------------------------------------- signatures


class _Annotation:
    """Shows a string annotation (from ``from __future__ import annotations``) bare."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _bare(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty:
        return annotation
    if isinstance(annotation, str):
        return _Annotation(annotation)
    return _Annotation(inspect.formatannotation(annotation))


WIDTH = 88  # longer signatures get one parameter per line, like black writes them


def signature(obj: Any, prefix: str = "", *, drop_self: bool = False,
              returns: bool = True) -> str:
    """``prefix(params) -> return``, wrapped one parameter a line when long."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{prefix}(...)"
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    params = [p.replace(annotation=_bare(p.annotation)) for p in params]
    ret = _bare(sig.return_annotation) if returns else inspect.Signature.empty
    sig = sig.replace(parameters=params, return_annotation=ret)
    text = prefix + str(sig)
    if len(text) > WIDTH and params:
        tail = "" if ret is inspect.Signature.empty else f" -> {ret!r}"
        text = (prefix + "(\n" + "".join(f"    {part},\n" for part in _parts(sig))
                + ")" + tail)
    # default values whose repr has an address (sentinels) would differ run to run
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _parts(sig: inspect.Signature) -> list[str]:
    """The parameters as str(sig) shows them, with its ``/`` and ``*`` markers."""
    kind = inspect.Parameter
    parts: list[str] = []
    positional_only, star_needed = False, True
    for param in sig.parameters.values():
        if param.kind is kind.POSITIONAL_ONLY:
            positional_only = True
        elif positional_only:
            parts.append("/")
            positional_only = False
        if param.kind is kind.VAR_POSITIONAL:
            star_needed = False
        elif param.kind is kind.KEYWORD_ONLY and star_needed:
            parts.append("*")
            star_needed = False
        parts.append(str(param))
    if positional_only:
        parts.append("/")
    return parts


def _return_annotation(func: Any) -> str:
    try:
        ret = inspect.signature(func).return_annotation
    except (TypeError, ValueError):
        return ""
    return "" if ret is inspect.Signature.empty else repr(_bare(ret))


def _class_signature(cls: type, prefix: str) -> str:
    # the constructor users call; a metaclass or HasTraits may hide it from inspect(cls)
    for name in ("__init__", "__new__"):
        for klass in cls.__mro__:
            if name in vars(klass) and (klass.__module__ or "").startswith("notebookscan"):
                return signature(getattr(cls, name), prefix, drop_self=True, returns=False)
    return signature(cls, prefix, returns=False)


# ------------------------------------------------------------------------- anchors


def github_anchor(heading: str, used: dict[str, int]) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    count = used.get(slug, 0)
    used[slug] = count + 1
    return slug if count == 0 else f"{slug}-{count}"


def build_index(pages: dict[str, list[Entry]]) -> dict[str, tuple[str, str]]:
    """Every way a docstring may name a documented object -> (page, anchor)."""
    index: dict[str, tuple[str, str]] = {}
    for page, entries in pages.items():
        used: dict[str, int] = {}
        github_anchor(_page_title(page), used)
        for entry in entries:
            entry.anchor = github_anchor(entry.name, used)
            target = (page, entry.anchor)
            names = [entry.name, f"{entry.module}.{entry.name}", *entry.aliases]
            defined = getattr(entry.obj, "__module__", None)
            if defined:
                names.append(f"{defined}.{entry.name}")
            for name in names:
                index.setdefault(name, target)
            if inspect.isclass(entry.obj):
                for member, _, _ in own_members(entry.obj):
                    anchor = github_anchor(f"{entry.name}.{member}", used)
                    for name in names:
                        index.setdefault(f"{name}.{member}", (page, anchor))
    index.setdefault("notebookscan.cli", ("cli", "command-line"))
    index.setdefault("notebookscan.cli.main", ("cli", "main"))
    return index


def _page_title(page: str) -> str:
    return PAGES.get(page, OTHER_PAGE[1:])[0]


# ------------------------------------------------------------------------- docstrings

_ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|mod|data|obj|exc):`(~?)([^`]+)`")


class Converter:
    """reST/numpy docstring text -> GitHub Markdown, for one page."""

    def __init__(self, index: dict[str, tuple[str, str]], page: str, context: str = ""):
        self.index, self.page, self.context = index, page, context

    def link(self, target: str, short: bool) -> str:
        target = target.strip().rstrip("()")
        shown = target.rsplit(".", 1)[-1] if short else target
        candidates = [target, f"notebookscan.{target}"]
        if self.context:  # `.run` or `run` inside a class's docstring
            candidates.append(f"{self.context}.{target.lstrip('.')}")
        for name in candidates:
            if name in self.index:
                page, anchor = self.index[name]
                href = f"#{anchor}" if page == self.page else f"{page}.md#{anchor}"
                return f"[`{shown}`]({href})"
        return f"`{shown}`"

    def inline(self, text: str) -> str:
        text = _ROLE.sub(lambda m: self.link(m.group(3), bool(m.group(2))), text)
        # reST literals ``x`` -> Markdown `x` (a literal holding a backtick keeps two)
        return re.sub(r"``([^`]+?)``", r"`\1`", text)

    def convert(self, doc: str) -> str:
        lines = inspect.cleandoc(doc).splitlines()
        out: list[str] = []
        section = ""
        i = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if stripped and re.fullmatch(r"-{3,}", nxt) and not line.startswith(" "):
                section = stripped
                out += ["", f"**{section}**", ""]
                i += 2
                continue
            if stripped.startswith(">>>"):
                block, i = self._take(lines, i, lambda s: bool(s.strip()))
                out += ["```pycon", *block, "```"]
                continue
            directive = re.match(r"\s*\.\. code-block::\s*(\w*)", line)
            if directive:
                block, i = self._indented(lines, i + 1)
                out += [f"```{directive.group(1) or 'text'}", *block, "```"]
                continue
            if stripped.endswith("::") and not stripped.startswith(".."):
                text = line[:-2].rstrip()
                # "Example::" keeps one colon; a lone "::" disappears, as in reST
                out.append(self.inline(text + ":" if text.strip() else ""))
                block, i = self._indented(lines, i + 1)
                out += ["```python" if _looks_python(block) else "```text", *block, "```"]
                continue
            if section in ITEM_SECTIONS and stripped and not line.startswith(" "):
                desc, i = self._indented(lines, i + 1, keep_blank_end=False)
                out.append(self._item(stripped, desc))
                continue
            out.append(self.inline(line))
            i += 1
        text = "\n".join(out)
        return re.sub(r"\n{3,}", "\n\n", text).strip()

    @staticmethod
    def _take(lines: list[str], i: int, keep: Any) -> tuple[list[str], int]:
        block = []
        while i < len(lines) and keep(lines[i]):
            block.append(lines[i])
            i += 1
        return block, i

    @staticmethod
    def _indented(lines: list[str], i: int, keep_blank_end: bool = False
                  ) -> tuple[list[str], int]:
        """The indented block starting at (blank lines then) line i, dedented."""
        start = i
        while i < len(lines) and not lines[i].strip():
            i += 1
        block = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
            i -= 1
        if not block:
            return [], start
        width = min(len(b) - len(b.lstrip()) for b in block if b.strip())
        return [b[width:] for b in block], i

    def _item(self, head: str, desc: list[str]) -> str:
        name, sep, kind = head.partition(" : ")
        if not sep and re.fullmatch(r"[\w.\[\], |]+", head) and " " in head.strip(", "):
            kind, name = "", head  # "segments, segment_duration"
        names = ", ".join(f"`{n.strip()}`" for n in name.split(",") if n.strip())
        text = f"- {names}"
        if kind:
            text += f" ({self.inline(kind.strip())})"
        body = [self.inline(d) for d in desc]
        if body:
            text += " — " + body[0]
            text += "".join(f"\n  {d}" if d.strip() else "\n" for d in body[1:])
        return text


def _looks_python(block: list[str]) -> bool:
    try:
        compile("\n".join(block), "<doc>", "exec")
    except SyntaxError:
        return False
    return True


# ------------------------------------------------------------------------- pages


def render_entry(entry: Entry, conv: Converter) -> list[str]:
    obj = entry.obj
    out = [f"## {entry.name}", ""]
    where = [f"`{entry.module}.{entry.name}`", *(f"`{a}`" for a in entry.aliases)]
    if inspect.isclass(obj):
        kind = "exception" if issubclass(obj, BaseException) else "class"
        if issubclass(obj, Warning):
            kind = "warning"
        out += ["```python", _class_signature(obj, f"{kind} {entry.name}"), "```", ""]
        # a private base of ours (RunControl) is an implementation detail: not shown
        bases = [_qualname(b) for b in obj.__bases__ if b is not object
                 and (_qualname(b) in conv.index or not b.__module__.startswith("notebookscan"))]
        if bases:
            where.append("bases " + ", ".join(conv.link(b, True) for b in bases))
    else:
        out += ["```python", signature(obj, entry.name), "```", ""]
    out += ["*" + " · ".join(where).replace("*", r"\*") + "*", ""]
    context = entry.name if inspect.isclass(obj) else ""
    conv = Converter(conv.index, conv.page, context)
    out += [conv.convert(_own_doc(obj)) or "*(no docstring)*", ""]
    if inspect.isclass(obj):
        for name, member, _ in own_members(obj):
            out += [f"### {entry.name}.{name}", ""]
            if isinstance(member, property):
                ret = _return_annotation(member.fget)
                kind = f": {ret}" if ret else ""
                out += ["```python", f"{entry.name}.{name}{kind}  # property", "```", ""]
            else:
                drop = not isinstance(inspect.getattr_static(obj, name), staticmethod)
                out += ["```python", signature(member, f"{entry.name}.{name}", drop_self=drop),
                        "```", ""]
            out += [conv.convert(inspect.getdoc(member) or "") or "*(no docstring)*", ""]
    return out


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def render_page(page: str, entries: list[Entry], index: dict[str, tuple[str, str]]) -> str:
    title, intro = PAGES.get(page, OTHER_PAGE[1:])[:2]
    conv = Converter(index, page)
    out = [_HEADER, f"# {title}", "", intro, ""]
    out += [f"- [`{e.name}`](#{e.anchor}) — {_summary(e.obj, conv)}" for e in entries]
    out.append("")
    for entry in entries:
        out += render_entry(entry, conv)
    return "\n".join(out).rstrip() + "\n"


def _summary(obj: Any, conv: Converter) -> str:
    doc = _own_doc(obj)
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    return conv.inline(first) or "*(no docstring)*"


def render_cli(index: dict[str, tuple[str, str]]) -> str:
    """The command line, from the argparse parser itself (the same text as --help)."""
    from notebookscan import cli
    from notebookscan.cli.parser import build_parser

    parser = build_parser()
    conv = Converter(index, "cli")
    out = [_HEADER, "# Command line", "",
           "`notebookscan COMMAND ...` (also `python -m notebookscan`). "
           "The task-by-task guide is [docs/cli.md](../cli.md); this page is the "
           "`--help` text of every command.", "",
           "## main", "", "```python", signature(cli.main, "main"), "```", "",
           conv.convert(inspect.getdoc(cli.main) or ""), "",
           "## notebookscan", "", "```text", _help(parser), "```", ""]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        out += [f"## notebookscan {name}", "", "```text", _help(sub), "```", ""]
    return "\n".join(out).rstrip() + "\n"


def _help(parser: argparse.ArgumentParser) -> str:
    # the width comes from $COLUMNS: fix it so the page does not depend on the terminal
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        text = parser.format_help()
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    return text.rstrip()


def render_index(pages: dict[str, list[Entry]]) -> str:
    out = [_HEADER, "# API reference", "",
           "Generated from the docstrings by `make docs` (`docs/build_api.py`); "
           "`tests/test_docs.py` fails when these pages are out of date. "
           "The [user guide](../guide.md) explains the ideas; these pages list every "
           "public name.", ""]
    for page, entries in pages.items():
        title = _page_title(page)
        names = ", ".join(f"[`{e.name}`]({page}.md#{e.anchor})" for e in entries)
        out += [f"- **[{title}]({page}.md)** — {names}"]
    out += ["- **[Command line](cli.md)** — `notebookscan` and its commands, "
            "as `--help` shows them", ""]
    return "\n".join(out)


_HEADER = "<!-- Generated by docs/build_api.py from the docstrings: do not edit. -->\n"


def build(out_dir: Path) -> list[Path]:
    """Write every page into out_dir; return the paths written."""
    pages = assign_pages(public_entries())
    index = build_index(pages)
    files = {f"{page}.md": render_page(page, entries, index)
             for page, entries in pages.items()}
    files["cli.md"] = render_cli(index)
    files["README.md"] = render_index(pages)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    # a page whose topic went away must not linger
    for stale in out_dir.glob("*.md"):
        if stale not in written:
            stale.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    # the checkout's package, whatever is installed
    sys.path.insert(0, str(ROOT))
    with contextlib.redirect_stdout(io.StringIO()):  # an import printing must not matter
        written = build(args.out)
    print(f"wrote {len(written)} pages to {args.out}")
    missing = missing_docstrings()
    if missing:
        print("public names without a docstring:\n  " + "\n  ".join(missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
