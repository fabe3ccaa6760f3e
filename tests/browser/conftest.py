"""Fixtures for the real-browser tests: one JupyterLab server and one headless Chromium
for the whole test run, both in temporary directories, both stopped as soon as the last
browser test is done (package scope: the rest of the suite does not keep them alive).

* Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright's Python API through
  ``executable_path`` (``playwright install`` is never run). When it is missing,
  ``tests/browser/install-chromium.sh`` installs it; if that fails the tests fail under
  ``CI=true`` and skip (saying why) elsewhere.
* JupyterLab listens on 127.0.0.1 with a random token, with temporary config, runtime,
  data, settings and workspace directories and a temporary notebook directory; the
  "news" notification is turned off in its settings.
* Screenshots go to ``test-artifacts/browser/`` at the repository root.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    """Fail in CI (the browser tests must run there), skip with the reason elsewhere."""
    if IN_CI:
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's Chromium, installed with apt-get when missing."""
    if not os.path.exists(CHROMIUM):
        script = HERE / "install-chromium.sh"
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                              timeout=900)
        if done.returncode != 0 or not os.path.exists(CHROMIUM):
            _unavailable(f"{CHROMIUM} is missing and could not be installed "
                         f"({script.name}: {done.stderr.strip()[-300:] or 'no output'})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab: its URL pieces, notebook directory and process."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut every kernel down through the REST API (they stop their process pools)."""
        with contextlib.suppress(Exception):
            for session in self.api("GET", "/api/sessions"):
                self.api("DELETE", f"/api/sessions/{session['id']}")


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a temporary token and temporary directories."""
    with running_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@contextlib.contextmanager
def running_lab(base: Path) -> Iterator[Lab]:
    """JupyterLab with its directories under ``base``, stopped on exit (also used by
    ``benchmarks/bench_widgets.py``)."""
    dirs = {name: base / name for name in ("config", "runtime", "data", "settings",
                                           "workspaces", "ipython", "notebooks")}
    for path in dirs.values():
        path.mkdir()
    notification = dirs["settings"] / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    token = secrets.token_hex(16)
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(dirs["config"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
               JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
               IPYTHONDIR=str(dirs["ipython"]))
    log = base / "lab.log"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={dirs['notebooks']}", "--allow-root",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               f"--LabApp.workspaces_dir={dirs['workspaces']}",
               "--ServerApp.open_browser=False"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = Lab(url, token, dirs["notebooks"], process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n"
                                   f"{log.read_text()[-3000:]}")
            try:
                server.api("GET", "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not answer in 60 s:\n"
                                       f"{log.read_text()[-3000:]}") from None
                time.sleep(0.1)
        yield server
    finally:
        _stop_lab(server)


def _stop_lab(server: Lab) -> None:
    """Stop kernels, then Lab by its PID; kill whatever of its process group is left."""
    import psutil

    server.shutdown_kernels()
    try:
        family = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
    _, alive = psutil.wait_procs(family, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="package")
def browser_context(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium (persistent context in an empty temporary profile)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class Notebook:
    """A notebook open in Lab: run its cells, wait for widgets, talk to its kernel."""

    def __init__(self, page: Any, lab: Lab, name: str) -> None:
        self.page, self.lab, self.name = page, lab, name

    def open(self) -> Notebook:
        # ?reset: do not restore the previous test's tabs from the workspace
        self.page.goto(f"{self.lab.url}/lab/tree/{self.name}?reset&token={self.lab.token}")
        self.page.wait_for_function(
            "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel"
            "?.status === 'idle'", timeout=90_000)
        panel_id = self.page.evaluate("window.jupyterapp.shell.currentWidget.id")
        #: the notebook's own panel: locate widgets inside it only
        self.panel = self.page.locator(f"[id='{panel_id}']")
        self.page.evaluate("window.jupyterapp.shell.collapseLeft()")
        return self

    def run_all(self) -> None:
        self.page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def execute_ms(self, code: str) -> float:
        """Run ``code`` in the notebook's kernel; milliseconds until its reply."""
        return self.page.evaluate(
            """async (code) => {
                const kernel = window.jupyterapp.shell.currentWidget.sessionContext
                    .session.kernel;
                const t0 = performance.now();
                const future = kernel.requestExecute({code, silent: false});
                const reply = await future.done;
                if (reply.content.status !== 'ok') { throw new Error(reply.content.evalue); }
                return performance.now() - t0;
            }""", code)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.page.evaluate(
                "window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        self.page.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def open_notebook(request: pytest.FixtureRequest, lab: Lab, browser_context: Any,
                  artifacts: Path) -> Iterator[Any]:
    """``open_notebook(name)`` opens ``lab.root / name`` in a new tab; closed (and its
    kernel shut down) after the test. A failing test leaves a screenshot of each page."""
    opened: list[Notebook] = []

    def opener(name: str) -> Notebook:
        page = browser_context.new_page()
        notebook = Notebook(page, lab, name)
        opened.append(notebook)
        return notebook.open()

    yield opener
    report = getattr(request.node, "report_call", None)
    for notebook in opened:
        if report is not None and report.failed:
            with contextlib.suppress(Exception):
                notebook.page.screenshot(path=artifacts / f"FAILED-{request.node.name}-"
                                         f"{Path(notebook.name).stem}.png", full_page=True)
        notebook.close()
