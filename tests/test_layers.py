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
