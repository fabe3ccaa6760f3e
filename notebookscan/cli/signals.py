"""SIGINT and SIGTERM during a command: stop as one Ctrl-C does, never cut the clean-up."""

from __future__ import annotations

import signal
import threading
from typing import Any

from .common import note


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C (the scan loop stops on it, writing every
    finished point), remembering which signal it was."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_words(signum: int) -> str:
    return ("terminated (SIGTERM)" if signum == signal.SIGTERM
            else f"interrupted ({signal.Signals(signum).name})")


class Signals:
    """SIGINT and SIGTERM for the whole command, handled alike.

    The first signal raises :class:`Interrupted` (a ``KeyboardInterrupt``): the scan
    loop stops now on it and writes every finished point, as on Ctrl-C. Later signals
    raise nothing (the final write and the clean-up of engines must not be cut); they
    only say that the command is stopping. ``signum`` is the first signal received; the
    exit code is 128 + it.
    """

    def __init__(self, prog: str):
        self.prog = prog
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            # once stopping, the process is about to end: more signals must not raise in
            # the clean-up at exit
            signal.signal(signum, self._late if self.signum else handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            raise Interrupted(signum)
        self._late(signum, frame)

    def _late(self, signum: int, frame: Any) -> None:
        note(f"{self.prog}: {signal_words(signum)} again; still stopping (writing what "
              "finished, stopping the engines), a moment")
