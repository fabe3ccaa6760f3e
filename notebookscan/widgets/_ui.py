"""Plumbing shared by the widgets: the UI thread, throttling, formatting, small HTML pieces.

Scan events arrive in the scan-loop thread. Widgets are only ever changed on the
kernel's own thread: :class:`UiThread` hands a call over to the kernel's event loop
(``call_soon_threadsafe``), and :class:`Throttle` coalesces bursts of requests into at
most one call per interval, always followed by a trailing call so the last state shows.
Outside a kernel (plain Python, headless tests) there is no event loop and calls run
at once, in the calling thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import math
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["Throttle", "UiThread", "error_html", "format_duration", "format_rate"]


class UiThread:
    """Runs callbacks on the thread that owns the widgets.

    Created inside a Jupyter kernel (a running asyncio loop in this thread), calls from
    other threads are queued onto that loop; otherwise they run immediately.
    Exceptions raised by a callback are kept in :attr:`errors` (newest last) and passed
    to ``on_error``, never raised into the event loop.
    """

    def __init__(self, on_error: Callable[[str], None] | None = None) -> None:
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self.thread = threading.current_thread()
        self.errors: list[str] = []
        self.on_error = on_error

    @property
    def in_kernel(self) -> bool:
        return self.loop is not None and not self.loop.is_closed()

    def guarded(self, fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # a broken display must never stop a scan
                text = f"{type(exc).__name__}: {exc}"
                self.errors = [*self.errors[-9:], traceback.format_exc()]
                if self.on_error is not None:
                    with contextlib.suppress(Exception):
                        self.on_error(text)
        return run

    def call(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the UI thread: now if this is it (or there is no loop), else soon."""
        if not self.in_kernel or threading.current_thread() is self.thread:
            self.guarded(fn)()
        else:
            # a closed loop (kernel shutting down) raises RuntimeError: nothing to update
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.guarded(fn))  # type: ignore[union-attr]

    def call_later(self, delay: float, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the UI thread after ``delay`` seconds."""
        if delay <= 0:
            self.call(fn)
        elif self.in_kernel:
            loop = self.loop
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.call_later, delay,  # type: ignore[union-attr]
                                          self.guarded(fn))
        else:
            timer = threading.Timer(delay, self.guarded(fn))
            timer.daemon = True
            timer.start()


class Throttle:
    """Call ``fn`` on the UI thread at most once per ``interval`` seconds.

    ``request()`` may be called from any thread, as often as wanted: requests made while
    a call is scheduled are merged into it, and a request always leads to one call
    after it, so the final state is shown. ``now()`` calls at once (e.g. when a run ends).

    Examples
    --------
    >>> calls = []
    >>> t = Throttle(lambda: calls.append(1), interval=10.0, ui=UiThread())
    >>> t.request(); t.request(); t.request()    # one call now, the rest merged
    >>> len(calls)
    1
    """

    def __init__(self, fn: Callable[[], Any], interval: float, ui: UiThread) -> None:
        self.fn = fn
        self.interval = interval
        self.ui = ui
        self.calls = 0
        self._lock = threading.Lock()
        self._pending = False
        self._scheduled = False
        self._last = -math.inf

    def request(self) -> None:
        with self._lock:
            self._pending = True
            if self._scheduled:
                return
            self._scheduled = True
            delay = max(0.0, self._last + self.interval - time.monotonic())
        self.ui.call_later(delay, self._fire)

    def _fire(self) -> None:
        with self._lock:
            self._scheduled = False
            if not self._pending:
                return
            self._pending = False
            self._last = time.monotonic()
        self.calls += 1
        self.fn()

    def now(self) -> None:
        with self._lock:
            self._pending = False
            self._last = time.monotonic()
        self.calls += 1
        self.ui.call(self.fn)


# --------------------------------------------------------------------------- formatting

def format_duration(seconds: float) -> str:
    """``"40 µs"``, ``"420 ms"``, ``"12 s"``, ``"3 min 5 s"``, ``"2 h 10 min"``; ``"—"``
    when unknown.

    Examples
    --------
    >>> format_duration(0.42), format_duration(65), format_duration(7800), format_duration(
    ...     float("nan"))
    ('420 ms', '1 min 5 s', '2 h 10 min', '—')
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def format_rate(points_per_second: float) -> str:
    """Points per second, readable at any speed.

    Examples
    --------
    >>> format_rate(250.3), format_rate(3.14159), format_rate(0.02)
    ('250 points/s', '3.1 points/s', '1.2 points/min')
    """
    if not points_per_second or not math.isfinite(points_per_second):
        return "—"
    if points_per_second < 0.1:
        return f"{points_per_second * 60:.2g} points/min"
    if points_per_second < 100:
        return f"{points_per_second:.2g} points/s"
    return f"{points_per_second:.0f} points/s"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# --------------------------------------------------------------------------- HTML pieces

ERROR_COLOR = "#c62828"
MUTED_COLOR = "#616161"


def error_html(message: str) -> str:
    """A short inline error (red, with a warning sign); empty for no message.

    An inline block: a long message wraps in its own box, with lines of its own height
    (not the 28 px of a widget row)."""
    if not message:
        return ""
    return (f'<span class="nbscan-error" style="display:inline-block;color:{ERROR_COLOR};'
            f'font-size:0.92em;line-height:1.3;overflow-wrap:anywhere">'
            f"⚠ {html.escape(message)}</span>")


def inline_error() -> Any:
    """An HTML widget for a field's error, beside the field in an ``HBox``.

    It takes the room left in the row and never more (``flex: 1 1 0``, ``min-width:
    0``): a long message wraps below its first line instead of squeezing the fields
    before it out of their columns."""
    import ipywidgets as w

    widget = w.HTML(layout=w.Layout(flex="1 1 0%", min_width="0", margin="0 0 0 8px"))
    widget.add_class("nbscan-field-error")
    return widget


def fixed(widget: Any) -> Any:
    """``widget`` at its own width in a row (``flex: none``): never squeezed."""
    widget.layout.flex = "0 0 auto"
    return widget


#: The widgets' own style sheet (see :func:`style_widget`)
STYLE = """
:is(.nbscan-app, .nbscan-builder, .nbscan-monitor, .nbscan-explorer)
  .jupyter-button:disabled {
  background-color: var(--jp-layout-color3, #bdbdbd);
  color: var(--jp-ui-font-color2, #616161);
  box-shadow: none;
  cursor: not-allowed;
}
.jupyter-widgets.jupyter-widget-tab.nbscan-tabs > .widget-tab-contents {
  padding: 8px 12px;
}
"""


def style_widget() -> Any:
    """An invisible HTML widget holding :data:`STYLE`; put one in each top widget.

    ipywidgets has no style sheet per widget and a disabled button keeps its
    ``button_style`` colour (an orange *Stop* looks ready to click): the sheet makes
    disabled buttons grey, and the app's tabs less padded (the Run tab fits a 900 px
    window). Several copies on a page are harmless."""
    import ipywidgets as w

    widget = w.HTML(f"<style>{STYLE}</style>", layout=w.Layout(display="none"))
    widget.add_class("nbscan-style")
    return widget


def muted_html(message: str) -> str:
    return f'<span style="color:{MUTED_COLOR};font-size:0.92em">{html.escape(message)}</span>'


def heading_html(title: str, subtitle: str = "") -> str:
    sub = (f' <span style="color:{MUTED_COLOR};font-weight:normal;font-size:0.9em">'
           f"{html.escape(subtitle)}</span>") if subtitle else ""
    return (f'<div style="font-weight:600;font-size:1.05em;margin:2px 0">'
            f"{html.escape(title)}{sub}</div>")
