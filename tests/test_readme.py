"""The two commands at the top of README.md work as written on a fresh clone.

The first (``make demo``) is run for real in a ``git clone`` of the committed HEAD:
it creates its own .venv, installs the package, runs a scan on local ipyparallel engines
and must leave the NetCDF store and the PNG it promises, and no process behind. With
pip's cache warm (CI's own ``make test`` has just filled it) that takes about a minute.
The second (``make test``) is not run from inside the test suite it starts; the test
checks that it is the command .ci/run runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO_TIMEOUT = 1200  # seconds; about 60 with a warm pip cache, minutes with a cold one


def readme_commands(text: str | None = None) -> list[str]:
    """The commands of README.md's first code block, comments and blank lines dropped."""
    text = README.read_text(encoding="utf-8") if text is None else text
    block = re.search(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)
    assert block, "README.md has no code block"
    commands = []
    for line in block.group(1).splitlines():
        command = re.sub(r"(^|\s)#.*$", "", line).strip()
        if command:
            commands.append(command)
    return commands


def test_readme_commands_are_parsed():
    text = "# x\n\nintro\n\n```bash\nmake demo   # a # b\n\nmake test  # c\n```\n```\nno\n```"
    assert readme_commands(text) == ["make demo", "make test"]


def test_readme_starts_with_the_demo_and_the_test_command():
    commands = readme_commands()
    assert len(commands) >= 2, commands
    assert commands[0].split()[:2] == ["make", "demo"], commands
    assert commands[1] == "make test", commands


def test_ci_runs_the_readme_test_command():
    # CI must check what the README tells a newcomer to run, not something else
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in ci.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert readme_commands()[1] in lines, lines


def test_makefile_demo_writes_where_the_readme_says():
    # the README promises "NetCDF store + PNG in demo-results/"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:.*\n(\t.*\n)*\t.*notebookscan demo --out demo-results\s*$",
                     makefile, re.M), "make demo must write to demo-results/"
    assert "demo-results/" in README.read_text(encoding="utf-8").split("```")[1]


# --------------------------------------------------------------------------- the demo


def _clean_env() -> dict[str, str]:
    """The environment of a fresh shell: not this test session's venv, make or paths."""
    outer_bins = {str(Path(sys.prefix) / "bin"), str(ROOT / ".venv" / "bin")}
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "MAKEFLAGS", "MFLAGS",
                        "MAKELEVEL", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and p not in outer_bins)
    # kept on purpose: IPYTHONDIR (the session's temporary one, so the demo's profile
    # stays out of ~/.ipython) and the session tag conftest checks for leftovers
    return env


def _processes_from(directory: Path, exclude: set[int]) -> list:
    """Live processes whose executable, command line or cwd is inside ``directory``."""
    import psutil

    found = []
    prefix = str(directory)
    for proc in psutil.process_iter(["pid", "cmdline", "exe", "cwd", "status"]):
        info = proc.info
        if info["pid"] in exclude or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        where = [info["exe"] or "", info["cwd"] or "", *(info["cmdline"] or ())]
        if any(prefix in part for part in where):
            found.append(proc)
    return found


def test_leftover_processes_are_found_by_their_directory(tmp_path: Path):
    # the check the demo test relies on: a process running in the clone is found
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               cwd=tmp_path)
    try:
        assert [p.pid for p in _processes_from(tmp_path, set())] == [sleeper.pid]
        assert _processes_from(tmp_path, {sleeper.pid}) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.cluster
@pytest.mark.timeout(DEMO_TIMEOUT + 120)
def test_readme_demo_command_works_in_a_fresh_clone(tmp_path: Path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to clone")
    if shutil.which("make") is None:
        pytest.skip("needs make")
    import psutil

    command = readme_commands()[0]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    before = {p.pid for p in psutil.process_iter()}
    t0 = time.monotonic()
    # its own session, so a timeout kills make, pip and the engines together
    proc = subprocess.Popen(command, shell=True, cwd=clone, env=_clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        try:
            output, _ = proc.communicate(timeout=DEMO_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            pytest.fail(f"`{command}` did not finish in {DEMO_TIMEOUT} s")
        elapsed = time.monotonic() - t0
        print(f"`{command}` in a fresh clone: {elapsed:.0f} s")
        assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{output[-5000:]}"

        out = clone / "demo-results"
        shards = sorted((out / "store" / "shards").glob("*.nc"))
        assert shards, f"no NetCDF shard in {out / 'store'}:\n{output[-3000:]}"
        for shard in shards:  # NetCDF-4 is HDF5 underneath; classic NetCDF starts "CDF"
            assert shard.read_bytes()[:4] in (b"\x89HDF", b"CDF\x01", b"CDF\x02"), shard
        png = out / "firing_rate.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

        # the store is complete and readable by the library, as the demo's output says
        import notebookscan as ns

        ds = ns.open_store(out / "store")
        status = ds["ns_status"].values.ravel().tolist()
        assert status and set(status) == {"done"}, sorted(set(status))

        # nothing from the clone (make, its venv's python, the engines) keeps running
        deadline = time.monotonic() + 15
        left = _processes_from(clone, before)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = _processes_from(clone, before)
        if left:
            described = [f"{p.pid}: {' '.join(p.info['cmdline'] or ())[:150]}" for p in left]
            for p in left:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            pytest.fail("the demo left processes running (killed now):\n"
                        + "\n".join(described))
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        # the clone holds a full virtual environment (about 1 GB): do not keep it
        shutil.rmtree(clone, ignore_errors=True)
