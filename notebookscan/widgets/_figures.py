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

__all__ = ["figure_output", "has_ipympl", "message_output", "show_interactive", "swap_figure"]


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


#: room left of the canvas for ipympl's vertical toolbar (it floats at the figure's
#: top left corner, over the y tick labels, when the figure starts at the edge)
TOOLBAR_ROOM = "40px"


def show_interactive(output: w.Output, fig: Any) -> bool:
    """Show ``fig`` as an ipympl canvas in ``output``; False when ipympl is missing.

    The first call puts a canvas into ``output``; later calls draw ``fig`` on that same
    canvas (see :func:`swap_figure`), so the front end keeps its view: no "Loading
    widget…" placeholder, no jump in height, the toolbar stays where it was. The
    toolbar sits in a margin left of the figure, never over the y tick labels."""
    if not has_ipympl():
        return False
    canvas = getattr(output, "_nbscan_canvas", None)
    if canvas is not None and getattr(canvas, "comm", None) is not None:
        swap_figure(canvas, fig)
        return True
    canvas = _new_canvas(fig)
    output.outputs = ({
        "output_type": "display_data",
        "data": {"application/vnd.jupyter.widget-view+json": {
                     "model_id": canvas.model_id, "version_major": 2, "version_minor": 0},
                 "text/plain": repr(fig)},
        "metadata": {},
    },)
    output._nbscan_canvas = canvas
    return True


def _new_canvas(fig: Any) -> Any:
    """An ipympl canvas for ``fig``: no header, the toolbar in a margin of its own."""
    from ipympl.backend_nbagg import new_figure_manager_given_figure

    canvas = new_figure_manager_given_figure(id(fig), fig).canvas
    canvas.header_visible = False
    canvas.toolbar_position = "left"
    canvas.layout.padding = f"0 0 0 {TOOLBAR_ROOM}"
    canvas.add_class("nbscan-canvas")
    return canvas


def swap_figure(canvas: Any, fig: Any) -> None:
    """Draw ``fig`` on an ipympl ``canvas`` shown before, in place of its figure.

    Mouse handlers live in the figure (``fig._canvas_callbacks``), so the toolbar's
    zoom/pan and the manager's key, button and scroll handlers are connected again to
    the new figure; its zoom history starts afresh. The front end is told the new size
    and redraws the whole image."""
    from matplotlib import backend_bases as bases

    old = canvas.figure
    if fig is old:
        canvas.draw_idle()
        return
    fig.set_canvas(canvas)
    canvas.figure = fig
    ratio = getattr(canvas, "device_pixel_ratio", 1) or 1
    if ratio != 1 and hasattr(fig, "_original_dpi"):  # a HiDPI screen: same sharpness
        fig._set_dpi(ratio * fig._original_dpi, forward=False)
    bases.FigureCanvasBase(old)  # the old figure lets go of the canvas
    manager, toolbar = canvas.manager, canvas.toolbar
    for attr, event, handler in (("key_press_handler_id", "key_press_event",
                                  "key_press_handler"),
                                 ("button_press_handler_id", "button_press_event",
                                  "button_press_handler"),
                                 ("scroll_handler_id", "scroll_event", "scroll_handler")):
        if getattr(manager, attr, None) is not None and hasattr(bases, handler):
            setattr(manager, attr, canvas.mpl_connect(event, getattr(bases, handler)))
    if toolbar is not None:
        toolbar._id_press = canvas.mpl_connect("button_press_event", toolbar._zoom_pan_handler)
        toolbar._id_release = canvas.mpl_connect("button_release_event",
                                                 toolbar._zoom_pan_handler)
        toolbar._id_drag = canvas.mpl_connect("motion_notify_event", toolbar.mouse_move)
        toolbar._pan_info = toolbar._zoom_info = None
        toolbar.update()  # the zoom history belonged to the old figure
    canvas._force_full = True
    canvas._png_is_old = True
    width, height = fig.bbox.bounds[2:]
    manager.resize(width, height)
    canvas.draw_idle()


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
