"""The package's layering holds: the import-linter contracts in pyproject.toml."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    return subprocess.run([exe, "--no-cache", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_hold():
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_contract_is_reported(tmp_path):
    # the check can fail: a config forbidding an import the store does make is broken
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "notebookscan"\n\n'
        '[[tool.importlinter.contracts]]\nname = "store without keys"\ntype = "forbidden"\n'
        'source_modules = ["notebookscan.store"]\nforbidden_modules = ["notebookscan.keys"]\n')
    result = _lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "store without keys" in result.stdout


def _cycles(package: str) -> list[list[str]]:
    """The import cycles among ``package``'s modules (imports inside functions count;
    ``if TYPE_CHECKING:`` ones do not), each as its modules."""
    import grimp  # import-linter's own import graph

    graph = grimp.build_graph(package, exclude_type_checking_imports=True)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan: strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while component[-1:] != [module]:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_imports_itself_through_others():
    assert _cycles("notebookscan") == []


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("from .a import f\n")
    (package / "c.py").write_text("from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles("cyclic") == [["cyclic.a", "cyclic.b"]]
