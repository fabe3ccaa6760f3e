"""The Binder configuration installs everything the demo notebooks import.

repo2docker (Binder) reads only ``binder/`` when that folder exists, and does not install
the repository itself: ``binder/requirements.txt`` must list ``.``. Docker is not
available here, so the test does what repo2docker's Python build pack does with that
file: a fresh virtual environment, ``pip install -r binder/requirements.txt`` from the
root of a clean copy of the repository, then it imports every module the notebooks'
code cells import (found by parsing the cells, not from a list).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def notebook_imports(paths: list[Path] = NOTEBOOKS) -> set[str]:
    """Absolute module names imported by the code cells of the notebooks."""
    modules: set[str] = set()
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            # IPython magics and shell escapes are not Python
            source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                               for line in source.splitlines())
            tree = compile(source, f"{path.name}", "exec",
                           flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module)
    return modules


def test_notebook_imports_are_found():
    modules = notebook_imports()
    assert {"notebookscan", "numpy", "matplotlib.pyplot"} <= modules, modules
    assert "notebookscan.widgets" in modules and "notebookscan.demo_network" in modules


def test_binder_folder_uses_the_pip_route_with_python_3_11():
    assert not (ROOT / ".binder").exists(), "binder/ and .binder/ together are an error"
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    # with an environment.yml, repo2docker would ignore requirements.txt
    assert not (BINDER / "environment.yml").exists()
    lines = [line.split("#")[0].strip()
             for line in (BINDER / "requirements.txt").read_text().splitlines()]
    assert "." in lines, "binder/requirements.txt must install the repository itself: '.'"
    start = BINDER / "start"
    if start.exists():  # repo2docker's entrypoint: must hand over to the server
        assert start.read_text().rstrip().splitlines()[-1].startswith('exec "$@"')


def _clean_copy(dest: Path) -> None:
    """The repository's files as a clone would have them (tracked and unignored)."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, listing):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def test_binder_requirements_install_everything_the_notebooks_import(tmp_path: Path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy the repository as a clone has it")
    repo, venv = tmp_path / "repo", tmp_path / "venv"
    _clean_copy(repo)
    # no PYTHONPATH: the test session puts this checkout first, which would hide a
    # notebookscan that did not install
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", "binder/requirements.txt"],
        cwd=repo, env=env, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    installed = time.perf_counter() - t0

    modules = sorted(notebook_imports())
    script = (
        "import importlib, json, sys\n"
        "failed = {}\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed[name] = f'{type(exc).__name__}: {exc}'\n"
        "import notebookscan\n"
        "print(json.dumps({'failed': failed, 'notebookscan': notebookscan.__file__}))\n"
    )
    result = subprocess.run([python, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, report["failed"]
    assert re.search(r"/venv/lib/python3\.\d+/site-packages/notebookscan/",
                     report["notebookscan"]), report["notebookscan"]
    print(f"fresh venv + pip install -r binder/requirements.txt: {installed:.0f} s; "
          f"imported {len(modules)} modules")
