"""python-adaptive learners behind a scan: which learner, and its points as parameters.

A :class:`Plan` turns the user's description (bounds of continuous parameters, a grid
of discrete ones, seeded trials) into a learner, and converts between the learner's
points (``x``, ``(x, y)``, a trial index, ``(cell, point)`` of a ``BalancingLearner``)
and notebookscan points (``dict`` of named parameter values).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ScanError

__all__ = ["TRIAL", "Plan", "require_adaptive"]

TRIAL = "trial"  # the parameter of seeded trials (as ns.trials() names it)


def require_adaptive() -> Any:
    """The ``adaptive`` package, or a :class:`ScanError` saying how to install it."""
    try:
        import adaptive
    except ImportError as exc:
        raise ScanError(
            "adaptive scans need the python-adaptive package, which is not installed "
            f"({exc}); install it with `pip install 'notebookscan[adaptive]'`") from None
    return adaptive


def _unused(*_: Any) -> float:
    """The function a learner is built with: the scan's run loop computes the points."""
    raise ScanError("an adaptive scan's learner is driven by the scan; run scan.run()")


class Plan:
    """The learner of an adaptive scan and the mapping of its points to parameters.

    Parameters
    ----------
    bounds
        ``{name: (low, high)}`` of the continuous parameters: one gives a
        ``Learner1D``, two a ``Learner2D``, more a ``LearnerND``; none (with
        ``trials``) an ``AverageLearner`` over seeded trials.
    cells
        The points of a grid of discrete or categorical parameters (a list of dicts,
        e.g. ``list(ns.grid(kind=["a", "b"]))``): one learner per cell, balanced by a
        ``BalancingLearner``. Empty: a single learner.
    trials
        Average over seeded trials (an integer parameter ``trial``) instead of learning
        a function of continuous parameters.
    learner
        A learner class, or a callable ``learner(function, bounds)`` that returns a
        learner (``bounds`` as the class expects them); ``None`` chooses by the bounds.
    options
        Keyword arguments of the learner (``loss_per_interval``, ``atol``, ``rtol``, …).
    balance
        How the ``BalancingLearner`` of grid cells chooses a cell: its ``strategy``
        (``"loss_improvements"``, its default, ``"loss"``, ``"npoints"``, ``"cycle"``).
    """

    def __init__(self, bounds: Mapping[str, Sequence[float]],
                 cells: Sequence[Mapping[str, Any]] = (),
                 trials: bool = False, learner: Callable[..., Any] | None = None,
                 options: Mapping[str, Any] | None = None, balance: str | None = None):
        self.adaptive = require_adaptive()
        self.balance = balance
        self.bounds = {name: _pair(name, b) for name, b in bounds.items()}
        self.names_inner = list(self.bounds) or ([TRIAL] if trials else [])
        if trials and self.bounds:
            raise ScanError(f"trials=True averages seeded trials of a point; it cannot be "
                            f"combined with continuous bounds {list(self.bounds)}: give the "
                            "continuous parameters as a grid (cells) instead")
        if not self.names_inner:
            raise ScanError("an adaptive scan needs bounds of at least one continuous "
                            "parameter, e.g. bounds={'x': (0, 1)}, or trials=True")
        self.cells = [dict(c) for c in cells]
        self.cell_names = list(self.cells[0]) if self.cells else []
        for cell in self.cells:
            if list(cell) != self.cell_names:
                raise ScanError(f"every grid cell needs the parameters {self.cell_names}, got "
                                f"{list(cell)}")
        clash = set(self.cell_names) & set(self.names_inner)
        if clash:
            raise ScanError(f"{sorted(clash)} are both grid and continuous parameters; "
                            "give each parameter once")
        self.trials = trials
        self.factory = learner
        self.options = dict(options or {})
        self._cell_index = {self._cell_key(c): i for i, c in enumerate(self.cells)}

    @property
    def names(self) -> list[str]:
        """Every parameter of the scan's points: grid ones first."""
        return [*self.cell_names, *self.names_inner]

    # ------------------------------------------------------------ learners

    def make(self) -> Any:
        """A new learner (a ``BalancingLearner`` of one learner per cell with cells)."""
        if not self.cells:
            return self._checked_single()
        options = {} if self.balance is None else {"strategy": self.balance}
        try:
            return self.adaptive.BalancingLearner([self._checked_single() for _ in self.cells],
                                                  **options)
        except ValueError as exc:
            raise ScanError(f"balance={self.balance!r} is not a strategy of adaptive's "
                            f"BalancingLearner ({exc}); use 'loss_improvements', 'loss', "
                            "'npoints' or 'cycle'") from None

    def _checked_single(self) -> Any:
        try:
            return self._single()
        except TypeError as exc:  # an option the learner does not take
            raise ScanError(f"the learner does not take learner_options {self.options} "
                            f"({exc}); see the learner's documentation") from None

    def _single(self) -> Any:
        adaptive = self.adaptive
        lows_highs = list(self.bounds.values())
        if self.factory is not None:
            if self.trials:
                return self.factory(_unused, **self.options)
            bounds = lows_highs[0] if len(lows_highs) == 1 else lows_highs
            return self.factory(_unused, bounds, **self.options)
        if self.trials:
            options = {"atol": 0.01, **self.options}
            return adaptive.AverageLearner(_unused, **options)
        if len(lows_highs) == 1:
            return adaptive.Learner1D(_unused, lows_highs[0], **self.options)
        if len(lows_highs) == 2:
            return adaptive.Learner2D(_unused, lows_highs, **self.options)
        return adaptive.LearnerND(_unused, lows_highs, **self.options)

    # ------------------------------------------------------------ points

    def to_params(self, point: Any) -> dict[str, Any]:
        """The parameters of a learner's point."""
        if self.cells:
            index, inner = point
            return {**self.cells[index], **self._inner_params(inner)}
        return self._inner_params(point)

    def _inner_params(self, inner: Any) -> dict[str, Any]:
        if self.trials:
            return {TRIAL: int(inner)}
        if len(self.names_inner) == 1:
            return {self.names_inner[0]: float(inner)}
        return {name: float(v) for name, v in zip(self.names_inner, inner, strict=True)}

    def to_point(self, params: Mapping[str, Any]) -> Any:
        """The learner's point of stored parameters (``None``: not one of this scan's)."""
        if self.trials:
            inner: Any = int(params[TRIAL])
        elif len(self.names_inner) == 1:
            inner = float(params[self.names_inner[0]])
        else:
            inner = tuple(float(params[name]) for name in self.names_inner)
        if not self.trials and not self._inside(params):
            return None
        if not self.cells:
            return inner
        index = self._cell_index.get(self._cell_key(params))
        return None if index is None else (index, inner)

    def _inside(self, params: Mapping[str, Any]) -> bool:
        return all(lo <= float(params[name]) <= hi for name, (lo, hi) in self.bounds.items())

    def _cell_key(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(_plain(params[name]) for name in self.cell_names)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _pair(name: str, bounds: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ScanError(f"bounds of {name!r} must be (low, high) numbers, got {bounds!r}") from None
    if not low < high:
        raise ScanError(f"bounds of {name!r} must have low < high, got {bounds!r}")
    return low, high
