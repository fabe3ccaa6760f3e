"""The builder's model: what the form says, checked as it changes, and the Space it makes.

Kept apart from the widgets so the checks can be used (and tested) without a display:
:class:`ParameterSpec` holds one parameter's form and turns it into axis values or an
inline error; :class:`SweepSpec` combines them (plus trials, samples and exclusions)
into a :class:`~notebookscan.Space`, validates it against the function and counts what
the store already holds. Every check runs in a traitlets observer; nothing raises.
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import traitlets as t

from ..errors import ArgumentError, NotebookscanError, UnknownNameError
from ..space import PASSED_IF_ACCEPTED, Space, axis_from_description, grid, sample, trials, zip_
from ..store import Store
from ..store.attrs import recorded_attrs
from ..store.schema import PARAMETER_ATTRS
from ._adaptive_form import adaptive_plan, check_adaptive

__all__ = ["Exclusion", "ParameterSpec", "SweepSpec", "last_run_space", "parse_list",
           "parse_scalar", "space_from_node"]

MODES = ("fixed", "list", "linear", "log", "random", "adaptive")
MODE_LABELS = {"fixed": "fixed value", "list": "list of values", "linear": "linear range",
               "log": "log range", "random": "random samples",
               "adaptive": "adaptive (learner)"}
KIND_MODES = {
    "float": MODES,
    "int": ("fixed", "list", "linear", "log"),
    "bool": ("fixed", "list"),
    "str": ("fixed", "list"),
}
#: Spaces bigger than this are not hashed on every keystroke to count stored points.
COUNT_LIMIT = 200_000
_SIG_DIGITS = 12


# --------------------------------------------------------------------------- parsing

def _round(value: float) -> float:
    """A float rounded to 12 significant digits (linspace noise removed)."""
    return float(f"{value:.{_SIG_DIGITS}g}")


def parse_scalar(text: str, kind: str) -> Any:
    """One value of ``kind`` from text, or an ``ArgumentError`` with a readable message.

    Examples
    --------
    >>> parse_scalar("2.5", "float"), parse_scalar("3", "int"), parse_scalar("no", "bool")
    (2.5, 3, False)
    >>> parse_scalar("x", "float")
    Traceback (most recent call last):
    ...
    notebookscan.errors.ArgumentError: 'x' is not a number
    """
    text = text.strip()
    if not text:
        raise ArgumentError("enter a value")
    if kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise ArgumentError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise ArgumentError(f"{text!r} is not a finite number")
        return value
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise ArgumentError(f"{text!r} is not a whole number") from None
            if as_float.is_integer():
                return int(as_float)
            raise ArgumentError(f"{text!r} is not a whole number") from None
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise ArgumentError(f"{text!r} is not True or False")
    return text.strip("'\"")


def parse_list(text: str, kind: str) -> tuple[Any, ...]:
    """Values separated by commas (or spaces, for numbers); repeats are an error.

    Examples
    --------
    >>> parse_list("1, 2.5 4", "float")
    (1.0, 2.5, 4.0)
    >>> parse_list("euler, rk4", "str")
    ('euler', 'rk4')
    """
    separator = r"[,;]" if kind == "str" else r"[,;\s]+"
    parts = [p.strip() for p in re.split(separator, text) if p.strip()]
    if not parts:
        raise ArgumentError("enter one or more values separated by commas")
    values = tuple(parse_scalar(p, kind) for p in parts)
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ArgumentError(f"{value!r} is listed twice")
        seen.add(value)
    return values


# --------------------------------------------------------------------------- exclusions

_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_COMPARE = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}
_EXCLUDE_PREFIX = "exclude["


class Exclusion:
    """A predicate for :meth:`Space.where` that drops points matching simple rules.

    Each rule is a comparison of parameters with numbers, strings or booleans, joined
    with ``and``/``or``/``not``: ``"amp == 0 and freq != 1"``. Rules are separated by
    new lines or ``;``. A point is kept when no rule matches it. The rules are parsed,
    never evaluated as Python, and they are recorded in the run's provenance as
    ``exclude[rule; rule]``, from which a later session rebuilds them.

    Examples
    --------
    >>> from notebookscan import grid
    >>> rule = Exclusion("amp == 0 and freq != 1", names=("amp", "freq"))
    >>> grid(amp=[0, 1], freq=[1, 2]).where(rule).columns()
    {'amp': [0, 1, 1], 'freq': [1, 1, 2]}
    >>> rule.__qualname__
    'exclude[amp == 0 and freq != 1]'
    >>> Exclusion("amp >> 2", names=("amp",))
    Traceback (most recent call last):
    ...
    notebookscan.errors.ArgumentError: rule 'amp >> 2': only comparisons ...
    """

    def __init__(self, text: str, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.rules = [r.strip() for r in re.split(r"[;\n]", text) if r.strip()]
        self._trees = [self._parse(rule) for rule in self.rules]
        # the name Space.where() records in the provenance of every run
        self.__qualname__ = f"{_EXCLUDE_PREFIX}{'; '.join(self.rules)}]"

    @classmethod
    def from_qualname(cls, qualname: str, names: Sequence[str]) -> Exclusion | None:
        if not (qualname.startswith(_EXCLUDE_PREFIX) and qualname.endswith("]")):
            return None
        try:
            return cls(qualname[len(_EXCLUDE_PREFIX):-1], names)
        except ValueError:
            return None

    def _parse(self, rule: str) -> ast.AST:
        def fail(what: str) -> ArgumentError:
            return ArgumentError(f"rule {rule!r}: {what}")

        try:
            tree = ast.parse(rule, mode="eval").body
        except SyntaxError:
            raise fail("cannot be read; write e.g. k > 10 and tau < 0.01") from None

        def check(node: ast.AST) -> None:
            if isinstance(node, ast.BoolOp):
                for value in node.values:
                    check(value)
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                check(node.operand)
            elif isinstance(node, ast.Compare):
                for op in node.ops:
                    if type(op) not in _OPS:
                        raise fail("use only == != < <= > >= to compare")
                for operand in (node.left, *node.comparators):
                    if isinstance(operand, ast.Name):
                        if operand.id not in self.names:
                            raise fail(f"{operand.id!r} is not a parameter "
                                       f"({', '.join(self.names)})")
                    elif not _is_constant(operand):
                        raise fail("compare parameters with numbers, strings or True/False")
            else:
                raise fail("only comparisons (== != < <= > >=) joined by and/or/not are "
                           "allowed, e.g. amp == 0 and freq != 1")

        check(tree)
        return tree

    def matches(self, point: Mapping[str, Any]) -> bool:
        return any(_evaluate(tree, point) for tree in self._trees)

    def __call__(self, point: Mapping[str, Any]) -> bool:
        return not self.matches(point)

    def __repr__(self) -> str:
        return self.__qualname__


def _is_constant(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, str, bool))
    return (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, (int, float)))


def _operand(node: ast.AST, point: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return point[node.id]
    if isinstance(node, ast.UnaryOp):
        return -node.operand.value  # type: ignore[attr-defined]
    return node.value  # type: ignore[attr-defined]


def _evaluate(node: ast.AST, point: Mapping[str, Any]) -> bool:
    if isinstance(node, ast.BoolOp):
        results = (_evaluate(v, point) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.UnaryOp):
        return not _evaluate(node.operand, point)
    assert isinstance(node, ast.Compare)
    left = _operand(node.left, point)
    for op, comparator in zip(node.ops, node.comparators, strict=True):
        right = _operand(comparator, point)
        try:
            if not _COMPARE[_OPS[type(op)]](left, right):
                return False
        except TypeError:  # e.g. a string compared with a number: the rule does not match
            return False
        left = right
    return True


# --------------------------------------------------------------------------- one parameter

def kind_of(parameter: inspect.Parameter) -> str:
    """``float``/``int``/``bool``/``str`` from the annotation, else from the default."""
    annotation = parameter.annotation
    if isinstance(annotation, str):
        annotation = {"float": float, "int": int, "bool": bool, "str": str}.get(
            annotation.strip("'\""), inspect.Parameter.empty)
    if annotation in (float, int, bool, str):
        return annotation.__name__
    default = parameter.default
    for kind in (bool, int, float, str):  # bool before int: True is an int
        if isinstance(default, kind) and default is not inspect.Parameter.empty:
            return kind.__name__
    return "float"


class ParameterSpec(t.HasTraits):
    """One parameter's part of the form, checked whenever it changes.

    ``axis`` holds the values the parameter takes (``None`` for random samples, an
    adaptive axis or when the form is invalid), ``bounds`` the ``(low, high)`` of
    random samples or of an adaptive axis (a learner chooses its points), and
    ``error`` a one-line message to show next to the field ("" when fine). ``default``
    is the text of the function's default value (``None`` when it has none).

    Examples
    --------
    >>> p = ParameterSpec(name="k", kind="float", mode="linear", low=1, high=2, count=3)
    >>> p.axis, p.error
    ((1.0, 1.5, 2.0), '')
    >>> p.high = 0.5
    >>> p.axis, p.error
    (None, 'min must be below max')
    """

    name = t.Unicode()
    kind = t.Enum(("float", "int", "bool", "str"), default_value="float")
    mode = t.Enum(MODES, default_value="fixed")
    value = t.Unicode("")
    values = t.Unicode("")
    low = t.Float(0.0)
    high = t.Float(1.0)
    count = t.Int(5)
    annotation = t.Unicode("")
    default = t.Unicode(None, allow_none=True)

    axis = t.Any(None, allow_none=True, read_only=True)
    bounds = t.Any(None, allow_none=True, read_only=True)
    error = t.Unicode("", read_only=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._check()

    @t.observe("mode", "value", "values", "low", "high", "count", "kind")
    def _on_change(self, change: Any = None) -> None:
        self._check()

    def _check(self) -> None:
        try:
            if self.mode not in KIND_MODES[self.kind]:
                raise ArgumentError(f"a {self.kind} parameter cannot be {MODE_LABELS[self.mode]}")
            axis, bounds = self._compute()
            error = ""
        except ValueError as exc:
            axis, bounds, error = None, None, str(exc)
        with self.hold_trait_notifications():  # observers see the three together
            self.set_trait("axis", axis)
            self.set_trait("bounds", bounds)
            self.set_trait("error", error)

    def _compute(self) -> tuple[tuple[Any, ...] | None, tuple[float, float] | None]:
        mode, kind = self.mode, self.kind
        if mode == "fixed":
            if self.value.strip() == self.default and not _parses(self.default, kind):
                return None, None  # a default such as None: the function supplies it
            return (parse_scalar(self.value, kind),), None
        if mode == "list":
            return parse_list(self.values, kind), None
        low, high, count = self.low, self.high, self.count
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ArgumentError("min and max must be finite numbers")
        if not low < high:
            raise ArgumentError("min must be below max")
        if mode in ("random", "adaptive"):
            return None, (low, high)
        if count < 1:
            raise ArgumentError("count must be at least 1")
        if count > 1_000_000:
            raise ArgumentError("count must be at most 1,000,000")
        if mode == "log" and low <= 0:
            raise ArgumentError("a log range needs min > 0")
        raw = np.geomspace(low, high, count) if mode == "log" else np.linspace(low, high, count)
        if count == 1:
            raw = np.array([low])
        if kind == "int":
            ints = tuple(dict.fromkeys(round(v) for v in raw))
            return ints, None
        return tuple(_round(v) for v in raw), None

    @property
    def at_default(self) -> bool:
        """True when the form is the function's default value as a fixed value: the
        function then uses its default and the space leaves the parameter out."""
        if self.default is None or self.mode != "fixed":
            return False
        if self.value.strip() == self.default:
            return True
        if self.axis is None:
            return False
        try:
            default = parse_scalar(self.default, self.kind)
        except ValueError:
            return False
        return bool(self.axis[0] == default and type(self.axis[0]) is type(default))

    def show_default(self) -> None:
        """Fill the form with the function's default value (a fixed value)."""
        if self.default is not None:
            self.set(mode="fixed", value=self.default)

    def form(self) -> dict[str, Any]:
        """The form's fields as a plain dict (for saving and restoring)."""
        return {"mode": self.mode, "value": self.value, "values": self.values, "low": self.low,
                "high": self.high, "count": self.count}

    def show_values(self, values: Sequence[Any]) -> None:
        """Fill the form so that it gives exactly ``values`` (a range when they form one)."""
        values = list(values)
        if len(values) == 1:
            self.set(mode="fixed", value=_text(values[0]))
            return
        numeric = self.kind in ("float", "int") and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and len(values) > 2:
            low, high, n = float(values[0]), float(values[-1]), len(values)
            for mode, make in (("linear", np.linspace), ("log", np.geomspace)):
                if mode == "log" and low <= 0:
                    continue
                expected = make(low, high, n)
                if self.kind == "int":
                    ok = [round(v) for v in expected] == [int(v) for v in values]
                else:
                    ok = np.allclose(expected, np.asarray(values, float), rtol=1e-9, atol=0)
                if ok and low < high:
                    self.set(mode=mode, low=low, high=high, count=n)
                    return
        self.set(mode="list", values=", ".join(_text(v) for v in values))

    def set(self, **values: Any) -> None:
        with self.hold_trait_notifications():
            for name, value in values.items():
                setattr(self, name, value)
        self._check()


def _parses(text: str, kind: str) -> bool:
    try:
        parse_scalar(text, kind)
    except ValueError:
        return False
    return True


def _text(value: Any) -> str:
    if isinstance(value, float):
        return repr(_round(value))
    return str(value)


# --------------------------------------------------------------------------- the sweep

class SweepSpec(t.HasTraits):
    """The whole form: parameters, trials, random samples, exclusions and the store.

    ``space`` is the :class:`~notebookscan.Space` the form describes (``None`` while
    something is invalid, with ``error`` saying what), ``size`` its number of points,
    ``stored``/``failed_before`` how many of them the store holds, and ``estimate`` the
    time left in seconds (``nan`` until a time per point is known).

    Examples
    --------
    >>> def model(k: float, tau: float = 0.01, seed: int = 0): ...
    >>> spec = SweepSpec.for_function(model)
    >>> [p.name for p in spec.parameters], spec.size
    (['k', 'tau'], 5)
    >>> spec.parameters[1].set(mode="list", values="0.01, 0.02")
    >>> spec.trials = 3
    >>> spec.space
    <Space: 30 points, grid k(5) × tau(2) × trial(3)>
    """

    function = t.Any(None, allow_none=True)
    parameters = t.List(t.Instance(ParameterSpec))
    trials = t.Int(1)
    samples = t.Int(16)
    method = t.Enum(("random", "lhs", "sobol"), default_value="random")
    seed = t.Int(0)
    exclusions = t.Unicode("")
    store = t.Unicode("")
    workers = t.Int(os.cpu_count() or 1)
    seconds_per_point = t.Float(math.nan)
    #: a space given in code or restored from a store; the form replaces it when edited
    base_space = t.Any(None, allow_none=True)
    #: while True the store is not read (a run is writing it): counts are updated after
    paused = t.Bool(False)
    #: parameters that stay in the space at their default (those of a space shown)
    keep = t.Set(t.Unicode())
    #: units and long names of parameters (``Space.with_attrs``) for the spaces the form
    #: builds: those of a space shown, so editing its form keeps them
    attrs = t.Dict()
    #: the goal of an adaptive scan (a parameter in mode "adaptive"): points to have in
    #: the store, and/or a loss to reach (0: none)
    goal_points = t.Int(100)
    goal_loss = t.Float(0.0)

    space = t.Any(None, allow_none=True, read_only=True)
    #: with adaptive axes: ``{"bounds", "grid", "goal"}`` of the AdaptiveScan the form
    #: makes (``space`` is None then); None otherwise
    adaptive = t.Any(None, allow_none=True, read_only=True)
    error = t.Unicode("", read_only=True)
    trials_error = t.Unicode("", read_only=True)
    samples_error = t.Unicode("", read_only=True)
    exclusions_error = t.Unicode("", read_only=True)
    size = t.Int(0, read_only=True)
    stored = t.Int(0, read_only=True)
    failed_before = t.Int(0, read_only=True)
    estimate = t.Float(math.nan, read_only=True)

    def __init__(self, **kwargs: Any) -> None:
        self._stores: dict[str, Store] = {}
        super().__init__(**kwargs)
        self.attrs = {**self._stored_attrs(), **self.attrs}
        for spec in self.parameters:
            spec.observe(self._on_parameter, names=["axis", "bounds", "error"])
        self._rebuild()

    @classmethod
    def for_function(cls, function: Callable[..., Any], **kwargs: Any) -> SweepSpec:
        """A form with one row per parameter of ``function`` (``seed`` and ``trial`` are
        supplied by the scan, ``*args``/``**kwargs`` skipped)."""
        specs = []
        for param in inspect.signature(function).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if param.name == "seed" or param.name in PASSED_IF_ACCEPTED:
                continue
            kind = kind_of(param)
            has_default = param.default is not inspect.Parameter.empty
            annotation = "" if param.annotation is inspect.Parameter.empty else (
                getattr(param.annotation, "__name__", None) or str(param.annotation))
            spec = ParameterSpec(name=param.name, kind=kind, annotation=annotation,
                                 default=_text(param.default) if has_default else None)
            if has_default:
                spec.show_default()
            elif kind == "float":
                spec.set(mode="linear", low=0.0, high=1.0, count=5)
            elif kind == "int":
                spec.set(mode="list", values="1, 2, 3")
            elif kind == "bool":
                spec.set(mode="list", values="False, True")
            else:
                spec.set(mode="fixed", value="")
            specs.append(spec)
        return cls(function=function, parameters=specs, **kwargs)

    def parameter(self, name: str) -> ParameterSpec:
        for spec in self.parameters:
            if spec.name == name:
                return spec
        raise UnknownNameError(f"no parameter {name!r}; the parameters are "
                               f"{', '.join(p.name for p in self.parameters)}")

    def _on_parameter(self, change: Any) -> None:
        if self.base_space is not None and change["name"] == "axis":
            self.base_space = None  # an edited form replaces a restored space
        self._rebuild()

    @t.observe("store", "paused")
    def _on_store(self, change: Any) -> None:
        if change["name"] == "store":
            recorded = self._stored_attrs()
            if recorded:  # the units the store records, unless a space declared others
                self.attrs = {**recorded, **self.attrs}
            self._rebuild()  # the store's parameters decide which defaults stay in
        else:
            self._count_stored()

    @t.observe("trials", "samples", "method", "seed", "exclusions", "base_space", "function",
               "keep", "attrs", "goal_points", "goal_loss")
    def _on_change(self, change: Any) -> None:
        if self.base_space is not None and change["name"] in (
                "trials", "samples", "method", "seed", "exclusions"):
            self.base_space = None
        self._rebuild()

    # ------------------------------------------------------------------ building

    def _build(self) -> tuple[Space | None, str]:
        trials_error = "" if self.trials >= 1 else "trials must be at least 1"
        randoms = {p.name: p.bounds for p in self.parameters if p.mode == "random"}
        adaptives = {p.name: p.bounds for p in self.parameters if p.mode == "adaptive"}
        samples_error = ""
        if randoms and self.samples < 1:
            samples_error = "the number of samples must be at least 1"
        if randoms and self.seed < 0:
            samples_error = "the seed must be 0 or more"
        self.set_trait("trials_error", trials_error)
        self.set_trait("samples_error", samples_error)
        bad = [p.name for p in self.parameters if p.error]
        if bad:
            return None, f"fix the field{'s' if len(bad) > 1 else ''} of {', '.join(bad)}"
        if trials_error or samples_error:
            return None, trials_error or samples_error
        axes = {p.name: p.axis for p in self.parameters
                if p.mode not in ("random", "adaptive")}
        # parameters at their default are left to the function (no length-1 dims),
        # unless the store already holds them (its points keep their parameters)
        kept = self._stored_names() | set(self.keep)
        varied = {name: axis for name, axis in axes.items()
                  if name in kept or not self.parameter(name).at_default}
        if varied or randoms or self.trials > 1:
            axes = varied
        axes = {name: axis for name, axis in axes.items() if axis is not None}
        if adaptives:
            plan, error = adaptive_plan(self, adaptives, axes, randoms)
            self.set_trait("adaptive", plan)
            return None, error
        space: Space | None = grid(**axes) if axes else None
        if randoms:
            drawn = sample(self.samples, method=self.method, seed=self.seed,
                           **{name: tuple(b) for name, b in randoms.items()})
            space = drawn if space is None else space * drawn
        if self.trials > 1:
            space = trials(self.trials) if space is None else space * trials(self.trials)
        if space is None:
            return None, "the function takes no parameters to scan; set trials to 2 or more"
        exclusion_error = ""
        if self.exclusions.strip():
            try:
                space = space.where(Exclusion(self.exclusions, space.names))
            except ValueError as exc:
                exclusion_error = str(exc)
        self.set_trait("exclusions_error", exclusion_error)
        if exclusion_error:
            return None, "fix the exclusions"
        if len(space) == 0:
            return None, "the exclusions leave no point to run"
        declared = {name: a for name, a in self.attrs.items() if name in space.names}
        return (space.with_attrs(**declared) if declared else space), ""

    def _rebuild(self) -> None:
        error = ""
        self.set_trait("adaptive", None)
        if self.base_space is not None:
            space: Space | None = self.base_space
        else:
            try:
                space, error = self._build()
            except NotebookscanError as exc:
                space, error = None, str(exc)
        if space is not None and self.function is not None:
            try:
                space.validate(self.function)
            except NotebookscanError as exc:
                space, error = None, str(exc)
        if self.adaptive is not None and self.function is not None:
            error = check_adaptive(self.adaptive, self.function)
            if error:
                self.set_trait("adaptive", None)
        self.set_trait("space", space)
        self.set_trait("error", error)
        size = len(space) if space is not None else 0
        if self.adaptive is not None:
            size = self.adaptive["goal"].points or 0
        self.set_trait("size", size)
        self._count_stored()

    def _store(self) -> Store | None:
        path = self.store.strip()
        if not path:
            return None
        if path not in self._stores:
            self._stores[path] = Store(path)
        return self._stores[path]

    def _stored_attrs(self) -> dict[str, dict[str, str]]:
        """The parameters' units and long names the store records (none: ``{}``)."""
        store = self._store()
        if store is None or not store.exists:
            return {}
        try:
            return recorded_attrs(store.metadata(), PARAMETER_ATTRS)
        except (NotebookscanError, OSError, ValueError):
            return {}

    def _stored_names(self) -> set[str]:
        """The parameter names the store records ("" store or a new one: none)."""
        store = self._store()
        if store is None or not store.exists:
            return set()
        try:
            return set(store.metadata().get("names", []))
        except (NotebookscanError, OSError, ValueError):
            return set()

    def _count_stored(self) -> None:
        if self.paused:
            self._estimate()
            return
        stored = failed = 0
        store = self._store()
        space = self.space
        if space is not None and store is not None and store.exists and len(space) <= COUNT_LIMIT:
            try:
                index = store.index()
            except NotebookscanError:
                index = None
            if index is not None:
                keys = space.keys()
                stored = sum(1 for k in keys if k in index.done)
                failed = sum(1 for k in keys if k in index.failed)
        if self.adaptive is not None and store is not None and store.exists:
            # an adaptive scan's points are the store's (as the Run tab counts them)
            try:
                index = store.index()
                stored, failed = len(index.done_keys), len(index.failed_keys)
            except NotebookscanError:
                pass
        self.set_trait("stored", stored)
        self.set_trait("failed_before", failed)
        self._estimate()

    def refresh(self) -> None:
        """Re-read the store (after a run) and update the counts and the estimate."""
        self._count_stored()

    @t.observe("workers", "seconds_per_point")
    def _on_timing(self, change: Any) -> None:
        self._estimate()

    def _estimate(self) -> None:
        left = self.size - self.stored - self.failed_before
        spp = self.seconds_per_point
        self.set_trait("estimate", left * spp / max(1, self.workers)
                       if math.isfinite(spp) else math.nan)

    def measure_from_store(self, max_bytes: int = 64 * 2**20) -> None:
        """Take the time per point from the durations of points already in the store."""
        store = self._store()
        if store is None or not store.exists or not store.shard_files():
            return
        if store.size_bytes() > max_bytes:
            return
        try:
            table = store.table()
        except NotebookscanError:
            return
        status = table.bookkeeping.get("status")
        duration = table.bookkeeping.get("duration")
        if status is None or duration is None:
            return
        done = np.asarray(duration, dtype=float)[np.asarray(status) == "done"]
        done = done[np.isfinite(done)]
        if len(done):
            self.seconds_per_point = float(done.mean())

    # ------------------------------------------------------------------ restoring

    def show_space(self, space: Space, node: Mapping[str, Any] | None = None) -> bool:
        """Fill the form from a space; returns False (keeping it as ``base_space``) when
        the form cannot express it, e.g. a union made by refining."""
        node = node or space.describe()["node"]
        names = [p.name for p in self.parameters]
        optional = {p.name for p in self.parameters if p.default is not None}
        self.keep = set(space.names) & set(names)  # the form gives back the same names
        self.attrs = {**self.attrs, **space.attrs}
        form = _form_of(node, names, optional)
        if form is None:
            first = _first_part(node)
            if first is not None:
                self._fill(_form_of(first, names, optional))
            self.base_space = space
            return False
        self._fill(form)
        self.base_space = None
        return True

    def _fill(self, form: dict[str, Any] | None) -> None:
        if not form:
            return
        with self.hold_trait_notifications():
            for spec in self.parameters:  # a parameter the space leaves out is at its default
                if spec.name not in form["axes"] and spec.name not in form["random"]:
                    spec.show_default()
            for name, values in form["axes"].items():
                self.parameter(name).show_values(values)
            for name, (low, high) in form["random"].items():
                self.parameter(name).set(mode="random", low=low, high=high)
            if form["random"]:
                self.samples, self.method, self.seed = form["samples"]
            self.trials = form["trials"]
            self.exclusions = form["exclusions"]
        self._rebuild()


def _first_part(node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    while node.get("kind") == "union":
        node = node["parts"][0]
    return node if node.get("kind") != "union" else None


def _form_of(node: Mapping[str, Any], names: Sequence[str],
             optional: set[str] | frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """The builder form that produces ``node``, or None when there is none (``optional``
    names, those with a default, may be missing from the space)."""
    form: dict[str, Any] = {"axes": {}, "random": {}, "samples": None, "trials": 1,
                            "exclusions": ""}
    if node.get("kind") == "where":
        exclusion = Exclusion.from_qualname(str(node.get("predicate", "")), names)
        if exclusion is None:
            return None
        form["exclusions"] = "\n".join(exclusion.rules)
        node = node["base"]

    def walk(part: Mapping[str, Any]) -> bool:
        kind = part.get("kind")
        if kind == "product":
            return all(walk(p) for p in part["parts"])
        if kind == "grid":
            form["axes"].update(_axes_of(part))
            return True
        if kind == "trials":
            form["trials"] = int(part["axes"]["trial"])
            return True
        if kind == "sample" and form["samples"] is None:
            ranges = part["ranges"]
            if any(len(r) > 2 and r[2] != "linear" for r in ranges.values()):
                return False
            form["random"].update({name: (float(r[0]), float(r[1]))
                                   for name, r in ranges.items()})
            form["samples"] = (int(part["n"]), part["method"], int(part["seed"]))
            return True
        return False

    if not walk(node):
        return None
    covered = set(form["axes"]) | set(form["random"])
    if not covered <= set(names) or set(names) - covered - set(optional):
        return None
    return form


def _axes_of(node: Mapping[str, Any]) -> dict[str, Any]:
    return {name: axis_from_description(values) for name, values in node["axes"].items()}


def space_from_node(node: Mapping[str, Any], names: Sequence[str] = ()) -> Space | None:
    """Rebuild a space from its :meth:`Space.describe` node, or None when it cannot be
    (explicit ``points()`` and ``where()`` with a predicate other than the builder's).

    Examples
    --------
    >>> from notebookscan import grid, trials
    >>> space = grid(k=[1, 2], tau=0.5) * trials(2)
    >>> space_from_node(space.describe()["node"]).keys() == space.keys()
    True
    """
    kind = node.get("kind")
    if kind == "grid":
        return grid(**_axes_of(node))
    if kind == "trials":
        return trials(int(node["axes"]["trial"]))
    if kind == "zip_":
        return zip_(**_axes_of(node))
    if kind == "sample":
        ranges = {name: tuple(r) for name, r in node["ranges"].items()}
        return sample(int(node["n"]), method=node["method"], seed=int(node["seed"]), **ranges)
    if kind in ("product", "union"):
        parts = [space_from_node(p, names) for p in node["parts"]]
        if any(p is None for p in parts):
            return None
        left, right = parts
        return left * right if kind == "product" else left + right  # type: ignore[operator]
    if kind == "where":
        base = space_from_node(node["base"], names)
        if base is None:
            return None
        exclusion = Exclusion.from_qualname(str(node.get("predicate", "")), base.names)
        return None if exclusion is None else base.where(exclusion)
    return None


def last_run_space(store: Store) -> tuple[Space | None, Mapping[str, Any] | None]:
    """The space of the most recent run recorded in ``store`` (and its node), if it can
    be rebuilt from the provenance."""
    if not store.exists or not store.shard_files():
        return None, None
    runs = store.table().runs
    described = [r for r in runs.values() if isinstance(r, Mapping) and "space" in r]
    if not described:
        return None, None
    latest = max(described, key=lambda r: (str(r.get("created", "")),
                                           int(r["space"].get("size", 0))))
    node = latest["space"].get("node")
    if not node:
        return None, None
    try:
        return space_from_node(node, latest["space"].get("names", ())), node
    except NotebookscanError:
        return None, node

