"""The builder's adaptive axes: what an AdaptiveScan the form makes, and what it refuses.

A parameter in mode ``"adaptive"`` gives the learner's bounds; the form's other varied
parameters (lists, ranges, fixed values off their default) become its grid cells.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import NotebookscanError
from ..space import grid, points

__all__ = ["adaptive_plan", "check_adaptive"]


def adaptive_plan(form: Any, bounds: Mapping[str, tuple[float, float]],
                  axes: Mapping[str, tuple[Any, ...]], randoms: Mapping[str, Any]
                  ) -> tuple[dict[str, Any] | None, str]:
    """``({"bounds", "grid", "goal"}, "")`` of the AdaptiveScan the form ``form`` (a
    :class:`~notebookscan.widgets._model.SweepSpec`) makes, or ``(None, error)``.

    Refused with an adaptive axis: random samples (the learner chooses the continuous
    points), trials (a learner over bounds learns one value per point; AdaptiveScan's
    ``trials=True`` takes no bounds) and exclusions (a learner chooses within its
    bounds). The goal needs points or a loss (0: none).
    """
    from ..adaptive import Goal

    if randoms:
        return None, (f"random samples ({', '.join(randoms)}) cannot be combined with an "
                      f"adaptive axis ({', '.join(bounds)}): the learner chooses the "
                      "continuous points; make them adaptive too, or a list or range")
    if form.trials > 1:
        return None, ("trials cannot be combined with an adaptive axis (the learner learns "
                      "one value per point): set trials to 1")
    if form.exclusions.strip():
        return None, "exclusions do not apply to an adaptive scan: clear them"
    if form.goal_points < 0 or not form.goal_loss >= 0:
        return None, "the goal's points and loss must be 0 or more"
    if not form.goal_points and not form.goal_loss:
        return None, ("give the adaptive scan a goal: points to have in the store, or a "
                      "loss to reach")
    cells = grid(**axes) if axes else None
    goal = Goal(points=form.goal_points or None, loss=form.goal_loss or None)
    return {"bounds": dict(bounds), "grid": cells, "goal": goal}, ""


def check_adaptive(plan: Mapping[str, Any], function: Callable[..., Any]) -> str:
    """Whether ``function`` takes a point of the adaptive scan ("" when it does, else
    what is wrong)."""
    first = next(iter(plan["grid"]), {}) if plan["grid"] is not None else {}
    example = {**first, **{name: low for name, (low, _) in plan["bounds"].items()}}
    try:
        points([example]).validate(function)
    except NotebookscanError as exc:
        return str(exc)
    return ""
