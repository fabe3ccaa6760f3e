"""Showing matplotlib Figures in an ``Output`` widget, from any thread.

A Figure is rendered to PNG (Agg, no pyplot) and put into the Output widget's
``outputs`` as a plain ``display_data`` message: it shows in JupyterLab, on Binder and
in exported HTML (the widget state holds the image), and it can be prepared off the
kernel's thread. With ipympl installed, :func:`show_interactive` shows a zoomable canvas
instead (kernel thread only).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as w

__all__ = ["figure_output", "has_ipympl", "message_output", "show_interactive"]


def figure_output(fig: Any, *, dpi: int = 100) -> dict[str, Any]:
    """A ``display_data`` output holding ``fig`` as a PNG (and a text fallback)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    width, height = fig.get_size_inches() * dpi
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                 "text/plain": f"<Figure size {width:.0f}x{height:.0f}>"},
        "metadata": {"image/png": {"width": int(width), "height": int(height)}},
    }


def message_output(text: str) -> dict[str, Any]:
    """A ``display_data`` output holding a short note (plain text and HTML)."""
    import html

    return {"output_type": "display_data",
            "data": {"text/plain": text,
                     "text/html": f'<div style="color:#616161;padding:12px 0">'
                                  f"{html.escape(text)}</div>"},
            "metadata": {}}


def has_ipympl() -> bool:
    return importlib.util.find_spec("ipympl") is not None


def show_interactive(output: w.Output, fig: Any) -> bool:
    """Show ``fig`` as an ipympl canvas in ``output``; False when ipympl is missing.

    The canvas replaces the one shown before in ``output`` (which is closed)."""
    if not has_ipympl():
        return False
    from ipympl.backend_nbagg import new_figure_manager_given_figure

    canvas = new_figure_manager_given_figure(id(fig), fig).canvas
    canvas.header_visible = False
    previous = getattr(output, "_nbscan_canvas", None)
    output.outputs = ({
        "output_type": "display_data",
        "data": {"application/vnd.jupyter.widget-view+json": {
                     "model_id": canvas.model_id, "version_major": 2, "version_minor": 0},
                 "text/plain": repr(fig)},
        "metadata": {},
    },)
    output._nbscan_canvas = canvas
    if previous is not None:
        previous.close()
    return True


class LatestWorker:
    """One background thread running the latest submitted job (older ones are dropped).

    Used to render figures off the kernel's thread: when jobs come faster than they
    run, only the newest one runs next.
    """

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._job: Callable[[], Any] | None = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], Any]) -> None:
        with self._cond:
            self._job = job
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job, self._job = self._job, None
                self._busy = True
            try:
                job()  # type: ignore[misc]
            except Exception:  # reported by the job itself
                pass
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is pending or running (for tests and scripts)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._job is None and not self._busy, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
