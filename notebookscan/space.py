"""Parameter spaces: axes and the algebra that combines them.

A `Space` is an immutable, ordered, duplicate-free collection of points (dicts of
plain scalars). Spaces are built with `grid`, `zip_`, `points`, `sample` and `trials`
and combined with ``*`` (outer product), ``+`` (union, de-duplicated by key),
`Space.where` (filter) and `Space.refine` (replace some axes' values).

Examples
--------
>>> space = grid(k=[1, 2, 3], tau=[0.1, 0.2]) * trials(2)
>>> space
<Space: 12 points, grid k(3) × tau(2) × trial(2)>
>>> space.layout
Layout(kind='grid', dims=('k', 'tau', 'trial'))
>>> next(iter(space))
{'k': 1, 'tau': 0.1, 'trial': 0}
>>> len(space.refine(k=range(10), trials=5))
100
"""

from __future__ import annotations

import html
import inspect
import keyword
import math
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import SpaceError
from .keys import canonical_token, check_value, floats_as_float64, key_array, seed_array
from .results import KEPT_ATTRS, attrs_conflict, joined_attrs, kept_attrs
from .store.schema import RESERVED_PARAMETERS, RESERVED_RULE, Layout, is_reserved

__all__ = ["RESERVED_NAMES", "Layout", "Space", "grid", "points", "sample", "trials", "zip_"]

Scalar = bool | int | float | str
_ITER_ROWS = 4096  # rows turned into Python objects at once by Space.__iter__
Point = dict[str, Scalar]
Attrs = dict[str, dict[str, str]]  # parameter -> its units, long_name, standard_name
Predicate = Callable[[Point], object]

#: Names of the store's bookkeeping variables; parameters cannot use them.
RESERVED_NAMES: frozenset[str] = RESERVED_PARAMETERS

#: Parameters passed to the function only when it takes them (the scan strips them otherwise).
PASSED_IF_ACCEPTED: frozenset[str] = frozenset({"trial"})

_SAMPLE_METHODS = ("random", "lhs", "sobol")
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "float": (int, float), "int": (int,), "bool": (bool,), "str": (str,),
}
_REFINABLE = frozenset({"grid", "zip_", "trials"})


# -- helpers ------------------------------------------------------------------------------------
_TYPED = {int: np.int64, float: np.float64, bool: np.bool_}


def _column(name: str, values: Iterable[object]) -> np.ndarray:
    """A 1-D numpy column of (checked) values whose items come back as the same values.

    All ints, all floats or all bools get a typed array (8 bytes a point, not a Python
    object each); anything else an object array holding the values as they are. A
    parameter's values must be of one kind (`_kind_of`).
    """
    values = list(values)
    kinds = {type(v) for v in values}
    if len(kinds) == 1 and (kind := kinds.pop()) in _TYPED:
        return np.array(values, dtype=_TYPED[kind])  # checked values fit 64 bits
    out = np.empty(len(values), dtype=object)
    out[:] = values
    _kind_of(name, out)
    return out


# -- one kind of value per parameter -------------------------------------------------------
_KIND = {bool: "bool", int: "number", float: "number", str: "str"}
_EXACT_FLOAT_INT = 2**53  # ints up to this size are exact as float64


class Kind(NamedTuple):
    """What a parameter's values are: ``bool``, ``number`` or ``str``; for numbers,
    whether there are floats and ints too big for a float64 to hold exactly."""

    kind: str
    floats: bool = False
    big_int: object = None  # the first int beyond 2**53, if any


def _kind_of(name: str, column: np.ndarray, where: str = "") -> Kind:
    """The `Kind` of a column of checked values, or a `SpaceError` when they mix kinds.

    Each value of a parameter must come back from the store as itself: a column mixing
    bools, numbers and strings would be stored as text (``1``, ``True`` and ``"1"`` all
    read as ``"1"``), and ints beyond 2**53 among floats as float64 (``10**17`` and
    ``1e17`` would fall into one cell).
    """
    dtype = column.dtype.kind
    if dtype == "b":
        return Kind("bool")
    if dtype == "f":
        return Kind("number", floats=True)
    if dtype in "iu":
        big = column[(column > _EXACT_FLOAT_INT) | (column < -_EXACT_FLOAT_INT)]
        return Kind("number", big_int=big[0].item() if len(big) else None)
    found: dict[str, object] = {}
    floats, big_int = False, None
    for value in column.tolist():
        found.setdefault(_KIND[type(value)], value)
        floats = floats or type(value) is float
        if big_int is None and type(value) is int and abs(value) > _EXACT_FLOAT_INT:
            big_int = value
    if len(found) > 1:
        raise SpaceError(_mixed_kinds(name, found, where))
    kind = Kind(next(iter(found)) if found else "number", floats, big_int)
    _check_number_kind(name, kind, where)
    return kind


def _mixed_kinds(name: str, found: Mapping[str, object], where: str) -> str:
    examples = " and ".join(f"{v!r} ({type(v).__name__})" for v in found.values())
    texts = [str(v) for v in found.values()]
    if len(set(texts)) < len(texts):  # str() alone would not tell them apart
        texts = [f"{type(v).__name__}:{v}" for v in found.values()]
    return (f"{where}parameter {name!r} mixes {' and '.join(found)} values, e.g. {examples}; "
            "the values of one parameter must be all bools, all numbers or all strings, so "
            "that the store keeps and shows each one as itself (True is not 1, 1 is not "
            "'1'). Give them one type, e.g. all strings: "
            f"{texts!r}.")


def _check_number_kind(name: str, kind: Kind, where: str) -> None:
    if kind.floats and kind.big_int is not None:
        raise SpaceError(
            f"{where}parameter {name!r} mixes floats with the int {kind.big_int}, beyond "
            f"2**53: the store keeps such a column as float64, which cannot hold that int "
            f"exactly (it would read as {float(kind.big_int)!r}). Write it as a float "
            f"({float(kind.big_int)!r}) or make every value of {name!r} an int.")


def _joined_kinds(name: str, a: Kind, b: Kind) -> Kind:
    """The `Kind` of a union's column, or a `SpaceError` when the two sides differ."""
    if a.kind != b.kind:
        raise SpaceError(
            f"a + b: parameter {name!r} has {a.kind} values in a and {b.kind} values in b; "
            "the values of one parameter must be all bools, all numbers or all strings, so "
            "that the store keeps and shows each one as itself (True is not 1, 1 is not "
            "'1'). Give both sides the same type, e.g. strings on both.")
    joined = Kind(a.kind, a.floats or b.floats,
                  a.big_int if a.big_int is not None else b.big_int)
    _check_number_kind(name, joined, "a + b: ")
    return joined


def _concatenate(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Columns end to end; different types meet as objects (an int never becomes a float)."""
    if len({c.dtype for c in columns}) > 1:
        columns = [c.astype(object) for c in columns]
    return np.concatenate(columns)


def _sort_key(value: Scalar) -> tuple[int, Scalar]:
    return (0 if isinstance(value, bool) else 2 if isinstance(value, str) else 1, value)


def _is_scalar(values: object) -> bool:
    if isinstance(values, (str, bytes)):
        return True
    if hasattr(values, "__array__"):
        return bool(np.ndim(values) == 0)  # type: ignore[arg-type]
    return not isinstance(values, Iterable)


def _count(value: object, what: str, example: str, *, minimum: int = 1) -> int:
    """`value` as an int >= `minimum`, or a `SpaceError` naming `what`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or (
            value < minimum):
        kind = "positive" if minimum == 1 else "non-negative"
        raise SpaceError(f"{what} must be a {kind} integer, got {value!r}; e.g. {example}.")
    return int(value)


def _simple_type(annotation: object) -> str | None:
    """``"float"``, ``"int"``, ``"bool"`` or ``"str"`` for those annotations, else None."""
    if isinstance(annotation, type):
        annotation = annotation.__name__ if annotation in (float, int, bool, str) else None
    if isinstance(annotation, str):  # postponed evaluation, possibly of a quoted name
        annotation = annotation.strip("'\"")
        return annotation if annotation in _ACCEPTS else None
    return None


def _axis_values(name: str, values: object, *, where: str) -> np.ndarray:
    """Checked values of one axis as a column (see `_column`); a scalar (or a 0-d array)
    means one fixed value."""
    if isinstance(values, (set, frozenset, Mapping)):
        raise SpaceError(f"{where}: axis {name!r} was given a {type(values).__name__}, which has "
                         "no reliable order; pass a list, tuple, range or 1-D numpy array.")
    array = None
    if _is_scalar(values):
        values = [values]
    elif isinstance(values, range):
        array = np.arange(values.start, values.stop, values.step, dtype=np.int64)
    elif hasattr(values, "__array__"):
        array = np.asarray(values)
        if array.ndim > 1:
            raise SpaceError(f"{where}: axis {name!r} was given an array of shape {array.shape}; "
                             "an axis must be 1-D. Flatten it, or use zip_()/points() for linked "
                             "values.")
    else:
        values = list(values)  # type: ignore[call-overload]
    if array is not None:
        if array.dtype.kind in "bi" or (array.dtype.kind == "u" and array.size
                                        and array.max() < 2**63):
            values = array.astype(bool if array.dtype.kind == "b" else np.int64, copy=False)
        elif array.dtype.kind == "f" and np.isfinite(array).all():
            values = floats_as_float64(array)  # float32 0.1 is 0.1 (see keys)
        else:
            values = array.tolist()  # each value checked below (names the bad one)
    if not len(values):
        raise SpaceError(f"{where}: axis {name!r} is empty; every axis needs at least one value. "
                         "Give it values, or drop the axis.")
    if isinstance(values, np.ndarray):
        return values  # numbers already checked, as a whole
    return _column(name, [check_value(name, value) for value in values])  # type: ignore[attr-defined]


#: Axes longer than this are described by their rule when they follow one (`describe_axis`).
DESCRIBE_LIST_UP_TO = 64

_SPACINGS = {"linspace": np.linspace, "geomspace": np.geomspace}


def describe_axis(values: np.ndarray) -> list[Scalar] | dict[str, list[Scalar]]:
    """An axis's values for :meth:`Space.describe`: a list, or, for a long axis that is a
    ``range``, ``np.linspace`` or ``np.geomspace``, that rule (which gives back the same
    values bit for bit), so provenance does not grow with the number of points.

    Examples
    --------
    >>> describe_axis(np.array([1, 2, 4]))
    [1, 2, 4]
    >>> describe_axis(np.arange(0, 1000, 10))
    {'range': [0, 1000, 10]}
    >>> describe_axis(np.linspace(0.0, 1.0, 101))
    {'linspace': [0.0, 1.0, 101]}
    """
    n = len(values)
    if n > DESCRIBE_LIST_UP_TO:
        first, last = values[0].item(), values[-1].item()
        if values.dtype.kind == "i" and max(abs(first), abs(last)) < 2**62:
            step = int(values[1] - values[0])
            if step and bool((np.diff(values) == step).all()):
                return {"range": [first, last + step, step]}
        elif values.dtype.kind == "f":
            for rule, make in _SPACINGS.items():
                if rule == "geomspace" and not bool((values > 0).all()):
                    continue  # geomspace cannot include zero; negative runs stay lists
                with np.errstate(all="ignore"):
                    again = make(first, last, n)
                if np.array_equal(again.view(np.int64), values.view(np.int64)):
                    return {rule: [first, last, n]}
    return values.tolist()


def axis_from_description(described: object) -> object:
    """The values that `describe_axis` described, as ``grid()`` and ``zip_()`` accept them.

    Examples
    --------
    >>> axis_from_description({"range": [0, 1000, 10]})
    range(0, 1000, 10)
    >>> axis_from_description([1, 2, 4])
    [1, 2, 4]
    """
    if isinstance(described, Mapping):
        ((rule, args),) = described.items()
        if rule == "range":
            return range(*(int(a) for a in args))
        first, last, n = args
        return _SPACINGS[rule](float(first), float(last), int(n))
    return described


def _first_repeat(values: np.ndarray) -> tuple[Scalar, Scalar] | None:
    """The first value of an axis that repeats an earlier one (to 12 digits), and that one."""
    if values.dtype.kind in "bi" and (len(values) < 2 or bool((values[1:] > values[:-1]).all())
                                      or len(np.unique(values)) == len(values)):
        return None  # distinct integers (rising ones need no sort): no text to compare
    seen: dict[str, Scalar] = {}
    for value in values.tolist():
        token = canonical_token(value)
        if token in seen:
            return seen[token], value
        seen[token] = value
    return None


class _Frozen(ABCMeta):
    """Marks every space immutable once its constructor has returned."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        object.__setattr__(obj, "_frozen", True)
        return obj


# -- the base class -----------------------------------------------------------------------------
class Space(metaclass=_Frozen):
    """An immutable, ordered, duplicate-free collection of parameter points.

    Build spaces with `grid`, `zip_`, `points`, `sample` and `trials`; combine them with
    ``a * b`` (outer product, disjoint names; ``a`` varies slowest), ``a + b`` (union,
    same names, de-duplicated by key, first occurrence wins), `where` and `refine`.
    Iteration yields point dicts in order; `columns`, `keys` and `seeds` give the same
    order column by column.

    Examples
    --------
    >>> space = grid(amp=[0, 0.5, 1], freq=[1, 2, 4]).where(
    ...     lambda p: p["amp"] > 0 or p["freq"] == 1)
    >>> len(space), space.layout.kind
    (7, 'grid')
    >>> space.columns()["amp"]
    [0, 0.5, 0.5, 0.5, 1, 1, 1]
    >>> len(space + grid(amp=[0, 2], freq=1))
    8
    """

    def __init__(self, names: tuple[str, ...], *, on_grid: bool) -> None:
        self._names = names
        self._layout = Layout("grid" if on_grid else "points", names)
        self._cache: dict[str, Any] = {}

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("a Space is immutable; build a new one with refine(), "
                                 "where(), * or +")
        object.__setattr__(self, name, value)

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in order."""
        return self._names

    @property
    def layout(self) -> Layout:
        """``Layout("grid", dims)`` or ``Layout("points", names)``."""
        return self._layout

    # what each node provides
    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _build_columns(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _expr(self) -> str: ...

    @abstractmethod
    def _node(self) -> dict[str, Any]: ...

    @abstractmethod
    def _holders(self) -> dict[str, set[str]]:
        """Each name that refine() may be asked about -> kinds of node holding it."""

    @abstractmethod
    def _refine(self, changes: Mapping[str, object]) -> Space: ...

    def _build_keys(self) -> np.ndarray:
        return key_array(self._names, self.column_arrays())

    def _build_attrs(self) -> Attrs:
        return {}

    @property
    def attrs(self) -> Attrs:
        """Each parameter's declared units and names (:meth:`with_attrs`), a copy.

        Examples
        --------
        >>> grid(tau=[0.01, 0.02]).with_attrs(tau={"units": "s"}).attrs
        {'tau': {'units': 's'}}
        """
        if "attrs" not in self._cache:
            self._cache["attrs"] = self._build_attrs()
        return {name: dict(a) for name, a in self._cache["attrs"].items()}

    def with_attrs(self, **attrs: Mapping[str, str]) -> Space:
        """The same points, with units and long names declared for some parameters.

        Each keyword is a parameter name; its value a dict of CF attributes
        (``units``, ``long_name``, ``standard_name``, text). They are kept through
        ``*``, ``+``, `where` and `refine`, recorded in the store (``notebookscan.json``)
        and put on the parameter's coordinate when the store is read, so that xarray's
        and :mod:`notebookscan.plotting`'s axis labels read e.g. "membrane time
        constant [s]". They are not part of the points' keys. A parameter declared in
        two units is refused, here and by a store that records other units for it (a
        second ``long_name`` is not: the first declared is kept). A grid or zip_ axis
        given as an :class:`xarray.DataArray` declares its ``attrs`` the same way.

        Examples
        --------
        >>> space = grid(tau=[0.01, 0.02], k=[1, 2]).with_attrs(
        ...     tau={"units": "s", "long_name": "membrane time constant"})
        >>> space.refine(tau=[0.01, 0.015, 0.02]).attrs["tau"]["units"]
        's'
        >>> space.keys() == grid(tau=[0.01, 0.02], k=[1, 2]).keys()
        True
        """
        return _Attrs(self, _checked_attrs(self._names, attrs, "with_attrs()")) if attrs else self

    def _kinds(self) -> dict[str, Kind]:
        """Each parameter's `Kind` (see `_kind_of`), without building the columns."""
        if "kinds" not in self._cache:
            self._cache["kinds"] = self._build_kinds()
        return self._cache["kinds"]

    def _build_kinds(self) -> dict[str, Kind]:
        return {name: _kind_of(name, column) for name, column in self.column_arrays().items()}

    def column_arrays(self) -> dict[str, np.ndarray]:
        """The points column by column as numpy arrays (cached; do not modify)."""
        if "columns" not in self._cache:
            self._cache["columns"] = self._build_columns()
        return self._cache["columns"]

    def key_array(self) -> np.ndarray:
        """The points' keys as 20-byte ASCII (``keys.KEY_DTYPE``): 20 bytes a point."""
        if "keys" not in self._cache:
            self._cache["keys"] = self._build_keys()
        return self._cache["keys"]

    # public API
    def columns(self) -> dict[str, list[Scalar]]:
        """The points column by column (plain Python scalars), in iteration order."""
        return {name: column.tolist() for name, column in self.column_arrays().items()}

    def __iter__(self) -> Iterator[Point]:
        names, columns = self._names, list(self.column_arrays().values())
        # Python scalars for a chunk of rows at a time: a whole column as a list costs
        # ~32 bytes a value (where() iterates spaces of 10^5-10^6 points)
        for start in range(0, len(columns[0]) if columns else 0, _ITER_ROWS):
            chunk = [c[start:start + _ITER_ROWS].tolist() for c in columns]
            for row in zip(*chunk, strict=True):
                yield dict(zip(names, row, strict=True))

    def keys(self) -> list[str]:
        """Stable keys of the points (see `notebookscan.keys.point_key`), in order."""
        return self.key_array().astype(str).tolist()

    def seeds(self) -> list[int]:
        """Per-point 32-bit seeds derived from the keys, so independent of run order."""
        return self.seed_array().tolist()

    def seed_array(self) -> np.ndarray:
        """The per-point seeds as a uint32 array (cached; see :meth:`seeds`)."""
        # 4 bytes a point, where a list of Python ints costs ~36: a scan keeps them all
        if "seeds" not in self._cache:
            self._cache["seeds"] = seed_array(self.key_array())
        return self._cache["seeds"]

    def grid_coords(self) -> dict[str, list[Scalar]]:
        """Per grid dimension, the sorted distinct values that occur in the points.

        Examples
        --------
        >>> (grid(k=[0, 2], tau=1) + grid(k=[1, 2], tau=1)).grid_coords()
        {'k': [0, 1, 2], 'tau': [1]}
        """
        if self._layout.kind != "grid":
            raise SpaceError(f"grid_coords() needs a grid layout, but {self._expr()} has a "
                             "points layout (it contains zip_(), points() or sample()); use "
                             "columns() instead.")
        coords: dict[str, list[Scalar]] = {}
        for dim, column in self.column_arrays().items():
            values = column.tolist()
            distinct: dict[str, Scalar] = {}
            for _, value in dict.fromkeys(zip(map(type, values), values, strict=True)):
                distinct.setdefault(canonical_token(value), value)
            coords[dim] = sorted(distinct.values(), key=_sort_key)
        return coords

    def __mul__(self, other: object) -> Space:
        return _Product(self, other) if isinstance(other, Space) else NotImplemented

    def __add__(self, other: object) -> Space:
        return _Union(self, other) if isinstance(other, Space) else NotImplemented

    def where(self, predicate: Predicate) -> Space:
        """Keep the points for which ``predicate(point)`` is true; the layout is kept.

        The predicate is called once per point, at once; if it raises, a `SpaceError`
        names the point.

        Examples
        --------
        >>> grid(n=range(6)).where(lambda p: p["n"] % 2 == 0).columns()
        {'n': [0, 2, 4]}
        """
        return _Where(self, predicate)

    def refine(self, **axes: object) -> Space:
        """The same space with the named axes' values replaced.

        Axes of `grid` and `zip_` nodes are replaced wherever they occur (through
        products, unions and `where`, whose predicate is applied again);
        ``trials=n`` sets the count of a `trials` node. Values of `points` and `sample`
        nodes cannot be refined.

        Examples
        --------
        >>> coarse = grid(k=[1, 2], tau=[0.1, 0.2]) * trials(3)
        >>> coarse.refine(k=[1, 1.5, 2], trials=10)
        <Space: 60 points, grid k(3) × tau(2) × trial(10)>
        """
        holders = self._holders()
        refinable = sorted(name for name, kinds in holders.items() if kinds <= _REFINABLE)
        for name in axes:
            kinds = holders.get(name)
            if kinds is None:
                raise SpaceError(f"refine(): the space has no axis {name!r}; axes that can be "
                                 f"refined: {', '.join(refinable) or 'none'}.")
            if "trial" in kinds:
                raise SpaceError("refine(): the 'trial' axis comes from trials(n); change the "
                                 "number of trials with refine(trials=n).")
            fixed = sorted(kinds & {"points", "sample"})
            if fixed:
                raise SpaceError(f"refine(): parameter {name!r} comes from {fixed[0]}(), whose "
                                 f"values cannot be refined; build a new {fixed[0]}(...) and "
                                 "combine it with + or *.")
        return self._refine(axes) if axes else self

    def validate(self, fn: Callable[..., object]) -> None:
        """Check that the space fits ``fn``'s signature, before anything runs.

        One `SpaceError` lists every problem: reserved or non-identifier names, names
        ``fn`` does not take (unless it takes ``**kwargs``), required parameters the space
        does not set (``seed`` is supplied by the scan), and values whose type contradicts
        a simple annotation (``float``, ``int``, ``bool``, ``str``; an int is fine for a
        float). Callables without a signature (some builtins) get the name checks only.

        Examples
        --------
        >>> def model(k: float, tau: float, seed: int) -> float:
        ...     return k * tau
        >>> grid(k=[1, 2.5], tau=0.1).validate(model)
        >>> grid(k=[1, 2.5]).validate(model)
        Traceback (most recent call last):
        ...
        notebookscan.errors.SpaceError: the space does not fit model():
          - model() requires parameter 'tau', which the space does not set; ...
        """
        problems: list[str] = []
        for name in self._names:
            if is_reserved(name):
                problems.append(f"{name!r} is reserved for the store ({RESERVED_RULE}); "
                                f"rename the parameter, e.g. {name.removeprefix('ns_')}_.")
            elif not name.isidentifier() or keyword.iskeyword(name):
                problems.append(f"{name!r} is not a valid Python identifier; rename it to "
                                "letters, digits and underscores not starting with a digit.")
        fname = getattr(fn, "__name__", type(fn).__name__)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # no signature to check against
            params = None
        if params is not None:
            problems += self._signature_problems(fname, params)
        if problems:
            raise SpaceError(f"the space does not fit {fname}():\n  - " + "\n  - ".join(problems))

    def _signature_problems(self, fname: str, params: Mapping[str, inspect.Parameter]
                            ) -> list[str]:
        kind = inspect.Parameter
        var = (kind.VAR_POSITIONAL, kind.VAR_KEYWORD)
        takes_kwargs = any(p.kind is kind.VAR_KEYWORD for p in params.values())
        named = ", ".join(n for n, p in params.items() if p.kind not in var) or "none"
        problems = []
        for name in self._names:
            p = params.get(name)
            if p is None and name in PASSED_IF_ACCEPTED:
                continue  # e.g. `trial`: told apart in the store, passed only if asked for
            if (p is None or p.kind in var) and not takes_kwargs:
                problems.append(f"{fname}() has no parameter {name!r} (it takes {named}); "
                                f"remove {name!r} from the space or add it to the function.")
            elif p is not None and p.kind is kind.POSITIONAL_ONLY:
                problems.append(f"parameter {name!r} of {fname}() is positional-only, but "
                                "points are passed by keyword; remove the '/' from the signature.")
        for p in params.values():
            if p.kind in var or p.default is not p.empty or p.name in (*self._names, "seed"):
                continue
            problems.append(f"{fname}() requires parameter {p.name!r}, which the space does not "
                            f"set; add it, e.g. space * grid({p.name}=...), or give it a default "
                            f"in {fname}().")
        for name, column in self.column_arrays().items():
            expected = _simple_type(params[name].annotation) if name in params else None
            if expected is None:
                continue
            accepts = _ACCEPTS[expected]
            bad = next((v for v in column.tolist() if type(v) not in accepts), None)
            if bad is not None:
                problems.append(f"{fname}() annotates {name}: {expected}, but the space gives "
                                f"{name}={bad!r} ({type(bad).__name__}); change the axis values "
                                "or the annotation.")
        return problems

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary of the space (node kinds, axes, sizes) for provenance.

        Examples
        --------
        >>> d = (grid(k=[1, 2]) * trials(3)).describe()
        >>> d["size"], d["layout"], [part["kind"] for part in d["node"]["parts"]]
        (6, {'kind': 'grid', 'dims': ['k', 'trial']}, ['grid', 'trials'])
        """
        described = {"names": list(self._names), "size": len(self),
                     "layout": {"kind": self._layout.kind, "dims": list(self._layout.dims)},
                     "node": self._node()}
        if self.attrs:
            described["attrs"] = self.attrs
        return described

    def table(self) -> Any:
        """The points as a pandas DataFrame (one column per name, plus ``key``), for dry runs.

        Examples
        --------
        >>> grid(k=[1, 2], tau=0.5).table().shape
        (2, 3)
        """
        import pandas as pd

        # numpy columns as they are (pandas infers the same dtypes as from lists of
        # Python scalars, at 8 bytes a value instead of ~32); object columns as lists,
        # so that pandas infers from the values as before
        data: dict[str, Any] = {name: column.tolist() if column.dtype.kind == "O" else column
                                for name, column in self.column_arrays().items()}
        data["key"] = self.key_array().astype(str)
        return pd.DataFrame(data, columns=[*self._names, "key"], copy=True)

    def _size(self) -> str:
        return f"{len(self)} point{'' if len(self) == 1 else 's'}"

    def __repr__(self) -> str:
        return f"<Space: {self._size()}, {self._layout.kind} {self._expr()}>"

    def _repr_html_(self) -> str:
        rows = []
        for name, column in self.column_arrays().items():
            values = [v for _, v in {(type(v), v) for v in column.tolist()}]
            numeric = bool(values) and all(type(v) in (int, float) for v in values)
            low, high = (min(values), max(values)) if numeric else ("", "")
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>"
                                         for cell in (name, len(values), low, high)) + "</tr>")
        return (
            f"<div><b>Space</b>: {self._size()}, {self._layout.kind} layout "
            f"({html.escape(', '.join(self._layout.dims))})<br>"
            f"<code>{html.escape(self._expr())}</code><table><thead><tr><th>name</th>"
            "<th>values</th><th>min</th><th>max</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )


# -- leaf nodes ---------------------------------------------------------------------------------
class _Grid(Space):
    def __init__(self, axes: Mapping[str, np.ndarray]) -> None:
        super().__init__(tuple(axes), on_grid=True)
        self._axes = dict(axes)  # each axis's values as a column (see _column)

    def __len__(self) -> int:
        return math.prod(len(values) for values in self._axes.values())

    def _build_columns(self) -> dict[str, np.ndarray]:
        n = stride = len(self)
        cols = {}
        for name, values in self._axes.items():  # first axis slowest, as itertools.product
            stride //= len(values)
            column = np.repeat(values, stride) if stride > 1 else values
            cols[name] = np.tile(column, n // len(column)) if len(column) < n else column
        return cols

    def _expr(self) -> str:
        return " × ".join(f"{name}({len(values)})" for name, values in self._axes.items())

    def _node(self) -> dict[str, Any]:
        return {"kind": "grid", "size": len(self),
                "axes": {name: describe_axis(values) for name, values in self._axes.items()}}

    def _build_kinds(self) -> dict[str, Kind]:
        return {name: _kind_of(name, values) for name, values in self._axes.items()}

    def _holders(self) -> dict[str, set[str]]:
        return {name: {"grid"} for name in self._axes}

    def _refine(self, changes: Mapping[str, object]) -> Space:
        if not any(name in changes for name in self._axes):
            return self
        return grid(**{name: changes.get(name, values) for name, values in self._axes.items()})


class _Trials(_Grid):
    def __init__(self, n: int) -> None:
        super().__init__({"trial": np.arange(n, dtype=np.int64)})

    def _expr(self) -> str:
        return f"trial({len(self)})"

    def _node(self) -> dict[str, Any]:
        return {"kind": "trials", "size": len(self), "axes": {"trial": len(self)}}

    def _holders(self) -> dict[str, set[str]]:
        return {"trials": {"trials"}, "trial": {"trial"}}

    def _refine(self, changes: Mapping[str, object]) -> Space:
        return trials(changes["trials"]) if "trials" in changes else self  # type: ignore[arg-type]


class _Explicit(Space):
    """Points given column by column (zip_, points, sample): a points layout."""

    kind = "points"

    def __init__(self, cols: Mapping[str, list[Scalar]], *, check_duplicates: bool = True) -> None:
        super().__init__(tuple(cols), on_grid=False)
        self._cols = {name: _column(name, values) for name, values in cols.items()}
        if check_duplicates:
            seen: dict[bytes, int] = {}
            for i, key in enumerate(self.key_array().tolist()):
                if key in seen:
                    point = {name: col[i] for name, col in self._cols.items()}
                    raise SpaceError(f"{self.kind}(): the point {point} occurs more than once "
                                     f"(points {seen[key]} and {i}, comparing values to 12 "
                                     "significant digits); remove the repeats.")
                seen[key] = i

    def __len__(self) -> int:
        return len(next(iter(self._cols.values())))

    def _build_columns(self) -> dict[str, np.ndarray]:
        return self._cols

    def _expr(self) -> str:
        return f"{self.kind}({', '.join(self._names)})[{len(self)}]"

    def _node(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": len(self), "names": list(self._names)}

    def _holders(self) -> dict[str, set[str]]:
        return {name: {self.kind} for name in self._names}

    def _refine(self, changes: Mapping[str, object]) -> Space:
        return self


class _Zip(_Explicit):
    kind = "zip_"

    def _node(self) -> dict[str, Any]:
        return {"kind": "zip_", "size": len(self),
                "axes": {name: describe_axis(column) for name, column in self._cols.items()}}

    def _refine(self, changes: Mapping[str, object]) -> Space:
        if not any(name in changes for name in self._cols):
            return self
        return zip_(**{name: changes.get(name, col.tolist()) for name, col in self._cols.items()})


class _Sample(_Explicit):
    kind = "sample"

    def __init__(self, cols: Mapping[str, list[Scalar]], info: dict[str, Any]) -> None:
        super().__init__(cols, check_duplicates=False)
        self._info = info

    def _expr(self) -> str:
        return f"sample[{self._info['method']}]({', '.join(self._names)})[{len(self)}]"

    def _node(self) -> dict[str, Any]:
        return {"kind": "sample", "size": len(self), **self._info}


# -- combinators --------------------------------------------------------------------------------
class _Binary(Space):
    kind = ""

    def __init__(self, left: Space, right: Space, names: tuple[str, ...]) -> None:
        super().__init__(names, on_grid=left.layout.kind == right.layout.kind == "grid")
        self._left, self._right = left, right
        self.attrs  # noqa: B018  (units that disagree are refused before any work)

    def _build_attrs(self) -> Attrs:
        return _joined_attrs(self._left.attrs, self._right.attrs, f"a {self.kind} of spaces")

    def _node(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": len(self),
                "parts": [self._left._node(), self._right._node()]}

    def _build_kinds(self) -> dict[str, Kind]:
        kinds = dict(self._left._kinds())
        for name, kind in self._right._kinds().items():
            kinds[name] = _joined_kinds(name, kinds[name], kind) if name in kinds else kind
        return kinds

    def _holders(self) -> dict[str, set[str]]:
        holders = {name: set(kinds) for name, kinds in self._left._holders().items()}
        for name, kinds in self._right._holders().items():
            holders.setdefault(name, set()).update(kinds)
        return holders

    def _refine(self, changes: Mapping[str, object]) -> Space:
        left, right = self._left._refine(changes), self._right._refine(changes)
        if left is self._left and right is self._right:
            return self
        return type(self)(left, right)  # type: ignore[call-arg]


class _Product(_Binary):
    kind = "product"

    def __init__(self, left: Space, right: Space) -> None:
        common = ", ".join(repr(name) for name in left.names if name in right.names)
        if common:
            raise SpaceError(f"a * b needs disjoint names, but both spaces have {common}; rename "
                             "the parameter in one of them, or use + for a union of spaces.")
        super().__init__(left, right, left.names + right.names)

    def __len__(self) -> int:
        return len(self._left) * len(self._right)

    def _build_columns(self) -> dict[str, np.ndarray]:
        n_left, n_right = len(self._left), len(self._right)
        left, right = self._left.column_arrays(), self._right.column_arrays()
        cols = {name: np.repeat(col, n_right) for name, col in left.items()}
        cols.update({name: np.tile(col, n_left) for name, col in right.items()})
        return cols

    def _expr(self) -> str:
        return " × ".join(f"({s._expr()})" if isinstance(s, _Union) else s._expr()
                          for s in (self._left, self._right))


class _Union(_Binary):
    kind = "union"

    def __init__(self, left: Space, right: Space) -> None:
        only_left = [n for n in left.names if n not in right.names]
        only_right = [n for n in right.names if n not in left.names]
        if only_left or only_right:
            raise SpaceError("a + b needs the same parameter names on both sides; only in a: "
                             f"{', '.join(only_left) or '-'}; only in b: "
                             f"{', '.join(only_right) or '-'}. Add the missing parameters (e.g. "
                             "b * grid(name=value)) or use * for a product.")
        super().__init__(left, right, left.names)
        self._kinds()  # one kind per parameter on both sides, before any work

    def _keep(self) -> np.ndarray:
        """Indices of the right-hand points whose keys are not already in the union."""
        if "keep" not in self._cache:
            right = self._right.key_array()
            first = np.zeros(len(right), dtype=bool)  # a key's first occurrence on the right
            first[np.unique(right, return_index=True)[1]] = True
            new = ~np.isin(right, self._left.key_array())
            self._cache["keep"] = np.flatnonzero(first & new)
        return self._cache["keep"]

    def __len__(self) -> int:
        return len(self._left) + len(self._keep())

    def _build_columns(self) -> dict[str, np.ndarray]:
        keep, left, right = self._keep(), self._left.column_arrays(), self._right.column_arrays()
        return {name: _concatenate([left[name], right[name][keep]]) for name in self._names}

    def _build_keys(self) -> np.ndarray:
        return np.concatenate([self._left.key_array(), self._right.key_array()[self._keep()]])

    def _expr(self) -> str:
        return f"{self._left._expr()} + {self._right._expr()}"



class _Where(Space):
    def __init__(self, base: Space, predicate: Predicate) -> None:
        if not callable(predicate):
            raise SpaceError(f"where() needs a function point -> bool, got {predicate!r}; "
                             "e.g. space.where(lambda p: p['amp'] > 0).")
        super().__init__(base.names, on_grid=base.layout.kind == "grid")
        self._base, self._predicate = base, predicate
        self._pred_name = getattr(predicate, "__qualname__", type(predicate).__name__)
        mask = np.zeros(len(base), dtype=bool)
        for i, point in enumerate(base):
            try:
                mask[i] = bool(predicate(point))
            except Exception as exc:
                raise SpaceError(f"where(): the predicate {self._pred_name} raised "
                                 f"{type(exc).__name__}: {exc} on the point {point}; "
                                 "make it handle this point (e.g. test for it first).") from exc
        self._index = np.flatnonzero(mask)

    def __len__(self) -> int:
        return len(self._index)

    def _build_columns(self) -> dict[str, np.ndarray]:
        return {name: col[self._index] for name, col in self._base.column_arrays().items()}

    def _build_keys(self) -> np.ndarray:
        if "keys" in self._base._cache:  # filtering is cheaper than hashing again
            return self._base.key_array()[self._index]
        return super()._build_keys()

    def _expr(self) -> str:
        base = self._base._expr()
        if " × " in base or " + " in base:
            base = f"({base})"
        return f"{base}.where({self._pred_name})"

    def _node(self) -> dict[str, Any]:
        return {"kind": "where", "size": len(self), "predicate": self._pred_name,
                "base": self._base._node()}

    def _build_kinds(self) -> dict[str, Kind]:
        return self._base._kinds()

    def _build_attrs(self) -> Attrs:
        return self._base.attrs

    def _holders(self) -> dict[str, set[str]]:
        return self._base._holders()

    def _refine(self, changes: Mapping[str, object]) -> Space:
        base = self._base._refine(changes)
        return self if base is self._base else _Where(base, self._predicate)


class _Attrs(Space):
    """A space with units and names declared for some of its parameters (see
    :meth:`Space.with_attrs`): the base's points, unchanged."""

    def __init__(self, base: Space, attrs: Attrs) -> None:
        super().__init__(base.names, on_grid=base.layout.kind == "grid")
        self._base, self._own = base, attrs
        self.attrs  # noqa: B018  (a parameter declared twice differently is refused now)

    def __len__(self) -> int:
        return len(self._base)

    def _build_columns(self) -> dict[str, np.ndarray]:
        return self._base.column_arrays()

    def _build_keys(self) -> np.ndarray:
        return self._base.key_array()

    def _expr(self) -> str:
        return self._base._expr()

    def _node(self) -> dict[str, Any]:
        return {**self._base._node(), "attrs": {n: dict(a) for n, a in self._own.items()}}

    def _build_kinds(self) -> dict[str, Kind]:
        return self._base._kinds()

    def _build_attrs(self) -> Attrs:
        return _joined_attrs(self._base.attrs, self._own, "with_attrs()")

    def _holders(self) -> dict[str, set[str]]:
        return self._base._holders()

    def _refine(self, changes: Mapping[str, object]) -> Space:
        base = self._base._refine(changes)
        return self if base is self._base else _Attrs(base, self._own)


def _checked_attrs(names: Sequence[str], attrs: Mapping[str, object], where: str) -> Attrs:
    """``attrs`` ({parameter: {attribute: text}}) checked: known names, kept attributes."""
    out: Attrs = {}
    for name, declared in attrs.items():
        if name not in names:
            raise SpaceError(f"{where}: {name!r} is not a parameter of the space (it has "
                             f"{', '.join(names)}); declare units for those.")
        if not isinstance(declared, Mapping):
            raise SpaceError(f"{where}: {name}= takes a dict of attributes, e.g. "
                             f"{name}={{'units': 's', 'long_name': '...'}}; got {declared!r}.")
        kept, problem = kept_attrs(declared, strict=True)
        if problem:
            raise SpaceError(f"{where}: parameter {name!r}: {problem}; give "
                             f"{', '.join(KEPT_ATTRS)} as text.")
        if kept:
            out[name] = kept
    return out


def _joined_attrs(first: Attrs, second: Attrs, where: str) -> Attrs:
    """Both declarations in one, the first's names winning; a parameter declared in two
    units is refused (one parameter, one unit)."""
    out = {name: dict(a) for name, a in first.items()}
    for name, attrs in second.items():
        key = attrs_conflict(out.get(name, {}), attrs)
        if key:
            raise SpaceError(f"{where}: parameter {name!r} is declared with {key} "
                             f"{out[name][key]!r} and with {key} {attrs[key]!r}; one parameter "
                             "has one unit: give its values in one of them and declare it once.")
        out[name] = joined_attrs(out.get(name, {}), attrs)
    return out


def _axis_attrs(axes: Mapping[str, object], where: str) -> Attrs:
    """The kept attributes of axes given as xarray objects (``DataArray.attrs``)."""
    found = {}
    for name, values in axes.items():
        attrs = getattr(values, "attrs", None)
        if isinstance(attrs, Mapping) and attrs and hasattr(values, "__array__"):
            kept, problem = kept_attrs(attrs)
            if problem:
                raise SpaceError(f"{where}: axis {name!r}: {problem}; give "
                                 f"{', '.join(KEPT_ATTRS)} as text.")
            if kept:
                found[name] = kept
    return found


# -- constructors -------------------------------------------------------------------------------
def grid(**axes: object) -> Space:
    """The outer product of the given axes (the first axis varies slowest).

    Parameters
    ----------
    **axes
        Each a 1-D sequence, numpy array or range of values (int, float, bool or str),
        or a scalar meaning one fixed value. Values must be finite and distinct
        (compared to 12 significant digits). An :class:`xarray.DataArray` axis also
        declares the parameter's ``units`` and ``long_name`` from its ``attrs`` (see
        :meth:`Space.with_attrs`).

    Examples
    --------
    >>> list(grid(k=[1, 2], method="rk4"))
    [{'k': 1, 'method': 'rk4'}, {'k': 2, 'method': 'rk4'}]
    >>> grid(k=[0.1, 0.2, 0.1])
    Traceback (most recent call last):
    ...
    notebookscan.errors.SpaceError: grid(): axis 'k' has the value 0.1 twice; ...
    """
    if not axes:
        raise SpaceError("grid() needs at least one axis, e.g. grid(k=[1, 2, 3]).")
    checked = {}
    for name, values in axes.items():
        checked[name] = _axis_values(name, values, where="grid()")
        repeat = _first_repeat(checked[name])
        if repeat is not None:
            first, value = repeat
            same = repr(first) == repr(value)
            raise SpaceError(f"grid(): axis {name!r} has the value {value!r} twice"
                             f"{'' if same else f' (as {first!r} and {value!r})'}; values are "
                             "compared to 12 significant digits. Remove the repeat.")
    return _Grid(checked).with_attrs(**_axis_attrs(axes, "grid()"))


def trials(n: int) -> Space:
    """A grid axis ``trial`` = 0, 1, ..., n-1, for repeated runs of a random model.

    Each trial is a different point, so it has its own key and its own seed.

    Examples
    --------
    >>> space = grid(k=[1, 2]) * trials(3)
    >>> len(space), space.layout.dims, len(set(space.seeds()))
    (6, ('k', 'trial'), 6)
    """
    return _Trials(_count(n, "trials(n): the number of trials", "trials(10)"))


def zip_(**axes: object) -> Space:
    """Linked axes of equal length: the i-th point takes the i-th value of every axis.

    Examples
    --------
    >>> list(zip_(k=[1, 2], tau=[0.1, 0.2]))
    [{'k': 1, 'tau': 0.1}, {'k': 2, 'tau': 0.2}]
    >>> zip_(k=[1, 2], tau=[0.1])
    Traceback (most recent call last):
    ...
    notebookscan.errors.SpaceError: zip_() needs axes of equal length, got k: 2, tau: 1; ...
    """
    if not axes:
        raise SpaceError("zip_() needs at least one axis, e.g. zip_(k=[1, 2], tau=[0.1, 0.2]).")
    cols: dict[str, list[Scalar]] = {}
    for name, values in axes.items():
        if _is_scalar(values):
            raise SpaceError(f"zip_(): axis {name!r} is the single value {values!r}; zip_ axes "
                             "are sequences. For a fixed value use zip_(...) * "
                             f"grid({name}={values!r}).")
        cols[name] = _axis_values(name, values, where="zip_()").tolist()
    lengths = ", ".join(f"{name}: {len(values)}" for name, values in cols.items())
    if len({len(values) for values in cols.values()}) > 1:
        raise SpaceError(f"zip_() needs axes of equal length, got {lengths}; make them the "
                         "same length, or use grid() for an outer product.")
    return _Zip(cols).with_attrs(**_axis_attrs(axes, "zip_()"))


def points(points: Iterable[Mapping[str, object]]) -> Space:
    """Explicit points, given as dicts with the same keys (in the first dict's order).

    Examples
    --------
    >>> space = points([{"k": 1, "tau": 0.1}, {"k": 5, "tau": 0.3}])
    >>> len(space), space.layout
    (2, Layout(kind='points', dims=('k', 'tau')))
    """
    rows = list(points)
    if not rows:
        raise SpaceError("points() needs at least one point, e.g. points([{'k': 1}]).")
    cols: dict[str, list[Scalar]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise SpaceError(f"points(): item {i} is a {type(row).__name__}, not a dict; pass "
                             "a list of dicts such as [{'k': 1, 'tau': 0.1}, ...].")
        if i == 0:
            if not row or not all(isinstance(name, str) for name in row):
                raise SpaceError(f"points(): point 0 has parameter names {list(row)!r}; names "
                                 "must be non-empty strings, e.g. {'k': 1}.")
            cols = {name: [] for name in row}
        elif set(row) != set(cols):
            missing = ", ".join(n for n in cols if n not in row) or "-"
            extra = ", ".join(repr(n) for n in row if n not in cols) or "-"
            raise SpaceError(f"points(): point {i} has different names from point 0 (missing: "
                             f"{missing}; extra: {extra}); every point needs the same names.")
        for name, column in cols.items():
            column.append(check_value(name, row[name]))  # type: ignore[arg-type]
    return _Explicit(cols)


def _bounds(name: str, spec: object) -> tuple[float, float, str]:
    """``(low, high, scale)`` of one sample range, or a `SpaceError` naming it."""
    if isinstance(spec, (tuple, list)) and len(spec) in (2, 3):
        scale = spec[2] if len(spec) == 3 else "linear"
        try:
            low, high = float(spec[0]), float(spec[1])
        except (TypeError, ValueError):
            low = high = math.nan
        if (scale in ("linear", "log") and math.isfinite(low) and math.isfinite(high)
                and low < high and (scale == "linear" or low > 0)):
            return low, high, scale
    raise SpaceError(f"sample(): range {name!r} is {spec!r}; give (low, high) with finite "
                     "low < high, or (low, high, 'log') with 0 < low < high.")


def sample(
    n: int, *, method: str = "random", seed: int | None = None, **ranges: tuple[Any, ...]
) -> Space:
    """``n`` points drawn in a box of parameter ranges, reproducibly for a given ``seed``.

    Parameters
    ----------
    n
        Number of points.
    method
        ``"random"`` (independent uniform draws, `numpy.random.default_rng`), ``"lhs"``
        (Latin hypercube) or ``"sobol"`` (scrambled Sobol' sequence), from
        `scipy.stats.qmc`. Sobol' points are best balanced when ``n`` is a power of two;
        other ``n`` are allowed, and scipy's warning about that is silenced.
    seed
        Required: the same seed (and ranges, in the same order) gives the same points,
        which is how a scan recognises the points it has already computed.
    **ranges
        ``name=(low, high)`` for a uniform range or ``name=(low, high, "log")`` for a
        log-uniform one (``low > 0``). ``n``, ``method`` and ``seed`` are options, so
        they cannot be parameter names here.

    Examples
    --------
    >>> space = sample(8, method="sobol", seed=1, k=(0, 1), tau=(1e-3, 1e-1, "log"))
    >>> len(space), space.names, space.layout.kind
    (8, ('k', 'tau'), 'points')
    >>> space.keys() == sample(8, method="sobol", seed=1, k=(0, 1),
    ...                        tau=(1e-3, 1e-1, "log")).keys()
    True
    """
    n = _count(n, "sample(n): the number of points", "sample(64, seed=0, k=(0, 1))")
    if method not in _SAMPLE_METHODS:
        raise SpaceError(f"sample(): unknown method {method!r}; use one of "
                         f"{', '.join(_SAMPLE_METHODS)}.")
    if seed is None:
        raise SpaceError("sample() needs seed=<int> so that the same points are drawn every time "
                         "(a scan recognises finished points by their values); e.g. sample(64, "
                         "seed=0, k=(0, 1)).")
    seed = _count(seed, "sample(seed=...)", "seed=0", minimum=0)
    if not ranges:
        raise SpaceError("sample() needs at least one range, e.g. sample(64, seed=0, k=(0, 1)).")
    bounds = {name: _bounds(name, spec) for name, spec in ranges.items()}
    rng = np.random.default_rng(seed)  # a Generator gives the same draws via seed= or rng=
    if method == "random":
        unit = rng.random((n, len(bounds)))
    else:
        from scipy.stats import qmc

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*balance properties of Sobol")
            engine = (qmc.LatinHypercube(d=len(bounds), seed=rng) if method == "lhs"
                      else qmc.Sobol(d=len(bounds), scramble=True, seed=rng))
            unit = engine.random(n)
    cols: dict[str, list[Scalar]] = {}
    for (name, (low, high, scale)), u in zip(bounds.items(), unit.T, strict=True):
        if scale == "log":
            values = np.exp(np.log(low) + u * (np.log(high) - np.log(low)))
        else:
            values = low + u * (high - low)
        cols[name] = np.clip(values, low, high).tolist()
    info = {"method": method, "seed": seed, "n": n,
            "ranges": {name: list(bound) for name, bound in bounds.items()}}
    return _Sample(cols, info)
