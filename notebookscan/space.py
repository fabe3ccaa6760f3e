"""Parameter spaces: axes and the algebra that combines them.

A `Space` is an immutable, ordered, duplicate-free collection of points (dicts of
plain scalars). Spaces are built from `grid`, `zip_`, `points`, `sample` and `trials`
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np

from .errors import SpaceError
from .keys import canonical_token, check_value, keys_for_columns, point_seed

__all__ = ["RESERVED_NAMES", "Layout", "Space", "grid", "points", "sample", "trials", "zip_"]

Scalar = bool | int | float | str
Point = dict[str, Scalar]
Predicate = Callable[[Point], object]

#: Names the store uses for its own bookkeeping variables; parameters cannot use them.
RESERVED_NAMES: frozenset[str] = frozenset(
    {"point", "key", "status", "error", "traceback", "started", "finished", "duration",
     "host", "worker", "run"}
)

_SAMPLE_METHODS = ("random", "lhs", "sobol")
_SIMPLE_TYPES: dict[object, str] = {
    float: "float", int: "int", bool: "bool", str: "str",
    "float": "float", "int": "int", "bool": "bool", "str": "str",
}
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "float": (int, float), "int": (int,), "bool": (bool,), "str": (str,),
}


class Layout(NamedTuple):
    """How a space's points are arranged.

    ``kind="grid"``: the points lie on a product of per-parameter values, so results can
    be unstacked onto the dimensions `dims` (missing combinations become NaN).
    ``kind="points"``: the points are a list along one ``point`` dimension.
    """

    kind: Literal["grid", "points"]
    dims: tuple[str, ...]


def _objects(values: Iterable[object]) -> np.ndarray:
    """A 1-D numpy object array holding `values` as they are."""
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _sort_key(value: Scalar) -> tuple[int, Scalar]:
    if isinstance(value, bool):
        return (0, value)
    return (2, value) if isinstance(value, str) else (1, value)


def _first_duplicate(keys: list[str]) -> int | None:
    """Index of the first key seen before, or None."""
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key in seen:
            return i
        seen.add(key)
    return None


def _is_scalar(values: object) -> bool:
    if isinstance(values, (str, bytes)):
        return True
    if hasattr(values, "__array__"):
        return bool(np.ndim(values) == 0)  # type: ignore[arg-type]
    return not isinstance(values, Iterable)


def _merge_holders(*parts: dict[str, set[str]]) -> dict[str, set[str]]:
    holders: dict[str, set[str]] = {}
    for part in parts:
        for name, kinds in part.items():
            holders.setdefault(name, set()).update(kinds)
    return holders


def _simple_type(annotation: object) -> str | None:
    """``"float"``, ``"int"``, ``"bool"`` or ``"str"`` for those annotations, else None."""
    try:
        return _SIMPLE_TYPES.get(annotation)
    except TypeError:  # unhashable annotation
        return None


def _axis_values(name: str, values: object, *, where: str) -> tuple[Scalar, ...]:
    """Checked values of one axis; a scalar (or a 0-d array) means one fixed value."""
    if isinstance(values, (set, frozenset, Mapping)):
        raise SpaceError(
            f"{where}: axis {name!r} was given a {type(values).__name__}, which has no "
            "reliable order; pass a list, tuple, range or 1-D numpy array."
        )
    if _is_scalar(values):
        values = [values]
    elif hasattr(values, "__array__"):
        array = np.asarray(values)
        if array.ndim > 1:
            raise SpaceError(
                f"{where}: axis {name!r} was given an array of shape {array.shape}; an axis "
                "must be 1-D. Flatten it, or use zip_()/points() for linked values."
            )
        values = array.tolist()
    else:
        values = list(values)  # type: ignore[call-overload]
    if not values:
        raise SpaceError(
            f"{where}: axis {name!r} is empty; every axis needs at least one value. "
            "Give it values, or drop the axis."
        )
    return tuple(check_value(name, value) for value in values)  # type: ignore[misc]


class _Frozen(ABCMeta):
    """Marks every space immutable once its constructor has returned."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        object.__setattr__(obj, "_frozen", True)
        return obj


class Space(metaclass=_Frozen):
    """An immutable, ordered, duplicate-free collection of parameter points.

    Build spaces with `grid`, `zip_`, `points`, `sample` and `trials`; combine them with
    ``a * b`` (outer product, disjoint names), ``a + b`` (union, same names,
    de-duplicated by key, first occurrence wins), `where` and `refine`.

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

    _cache: dict[str, Any]

    def __init__(self) -> None:
        self._cache = {}

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(
                "a Space is immutable; build a new one with refine(), where(), * or +"
            )
        object.__setattr__(self, name, value)

    # -- what each node provides ---------------------------------------------------------
    @property
    @abstractmethod
    def names(self) -> tuple[str, ...]:
        """Parameter names, in order."""

    @property
    @abstractmethod
    def layout(self) -> Layout:
        """`Layout` of the points: ``grid`` (with its dims) or ``points``."""

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
        """Map each refinable-looking name to the kinds of node holding it."""

    @abstractmethod
    def _refine(self, changes: Mapping[str, object]) -> Space: ...

    def _build_keys(self) -> list[str]:
        cols = self._columns()
        return keys_for_columns(self.names, {name: cols[name].tolist() for name in cols})

    # -- cached data -----------------------------------------------------------------------
    def _columns(self) -> dict[str, np.ndarray]:
        if "columns" not in self._cache:
            self._cache["columns"] = self._build_columns()
        return self._cache["columns"]

    def _keys(self) -> list[str]:
        if "keys" not in self._cache:
            self._cache["keys"] = self._build_keys()
        return self._cache["keys"]

    # -- public API ----------------------------------------------------------------------
    def columns(self) -> dict[str, list[Scalar]]:
        """The points column by column (plain Python scalars), in iteration order."""
        return {name: column.tolist() for name, column in self._columns().items()}

    def __iter__(self) -> Iterator[Point]:
        names = self.names
        for row in zip(*self._columns().values(), strict=True):
            yield dict(zip(names, row, strict=True))

    def keys(self) -> list[str]:
        """Stable keys of the points (see `notebookscan.keys.point_key`), in order."""
        return list(self._keys())

    def seeds(self) -> list[int]:
        """Per-point 32-bit seeds derived from the keys: independent of execution order."""
        return [point_seed(key) for key in self._keys()]

    def grid_coords(self) -> dict[str, list[Scalar]]:
        """Per grid dimension, the sorted distinct values that occur in the points.

        Raises `SpaceError` for a ``points`` layout, which has no grid dimensions.
        """
        layout = self.layout
        if layout.kind != "grid":
            raise SpaceError(
                f"grid_coords() needs a grid layout, but {self._expr()} has a points layout "
                "(it contains zip_(), points() or sample()); use columns() instead."
            )
        cols = self._columns()
        coords: dict[str, list[Scalar]] = {}
        for dim in layout.dims:
            column = cols[dim].tolist()
            distinct: dict[str, Scalar] = {}
            for _, value in dict.fromkeys(zip(map(type, column), column, strict=True)):
                distinct.setdefault(canonical_token(value), value)
            coords[dim] = sorted(distinct.values(), key=_sort_key)
        return coords

    def __mul__(self, other: object) -> Space:
        if not isinstance(other, Space):
            return NotImplemented
        return _Product(self, other)

    def __add__(self, other: object) -> Space:
        if not isinstance(other, Space):
            return NotImplemented
        return _Union(self, other)

    def where(self, predicate: Predicate) -> Space:
        """Keep the points for which ``predicate(point)`` is true.

        Parameters
        ----------
        predicate
            Called once per point with the point's dict. If it raises, a `SpaceError`
            names the point. The layout of the space is kept.

        Examples
        --------
        >>> space = grid(n=range(6)).where(lambda p: p["n"] % 2 == 0)
        >>> space.columns()
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
        refinable = sorted(n for n, kinds in holders.items() if kinds <= {"grid", "zip_", "trials"})
        for name in axes:
            kinds = holders.get(name)
            if kinds is None:
                raise SpaceError(
                    f"refine(): the space has no axis {name!r}; axes that can be refined: "
                    f"{', '.join(refinable) or 'none'}."
                )
            if "trial" in kinds:
                raise SpaceError(
                    "refine(): the 'trial' axis comes from trials(n); change the number of "
                    "trials with refine(trials=n)."
                )
            fixed = sorted(kinds & {"points", "sample"})
            if fixed:
                raise SpaceError(
                    f"refine(): parameter {name!r} comes from {fixed[0]}(), whose values cannot "
                    f"be refined; build a new {fixed[0]}(...) and combine it with + or *."
                )
        return self._refine(axes) if axes else self

    def validate(self, fn: Callable[..., object]) -> None:
        """Check that the space fits ``fn``'s signature, before anything runs.

        Reports in one `SpaceError` every problem found: reserved or non-identifier names,
        names ``fn`` does not take (unless it takes ``**kwargs``), required parameters of
        ``fn`` the space does not set (``seed`` is supplied by the scan), and values whose
        type contradicts a simple annotation (``float``, ``int``, ``bool``, ``str``; an int
        is fine for a float).

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
        for name in self.names:
            if name in RESERVED_NAMES:
                problems.append(
                    f"{name!r} is reserved for the store's bookkeeping "
                    f"({', '.join(sorted(RESERVED_NAMES))}); rename the parameter, e.g. "
                    f"{name}_ or my_{name}."
                )
            elif not name.isidentifier() or keyword.iskeyword(name):
                problems.append(
                    f"{name!r} is not a valid Python identifier; rename it to letters, digits "
                    "and underscores not starting with a digit."
                )
        fname = getattr(fn, "__name__", type(fn).__name__)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # builtins and the like: nothing more to check
            params = None
        if params is not None:
            problems += self._signature_problems(fname, params)
        if problems:
            raise SpaceError(f"the space does not fit {fname}():\n  - " + "\n  - ".join(problems))

    def _signature_problems(
        self, fname: str, params: Mapping[str, inspect.Parameter]
    ) -> list[str]:
        kind = inspect.Parameter
        takes_kwargs = any(p.kind is kind.VAR_KEYWORD for p in params.values())
        named = [n for n, p in params.items() if p.kind not in (kind.VAR_POSITIONAL,
                                                                 kind.VAR_KEYWORD)]
        problems = []
        for name in self.names:
            p = params.get(name)
            if p is None or p.kind in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD):
                if not takes_kwargs:
                    problems.append(
                        f"{fname}() has no parameter {name!r} (it takes "
                        f"{', '.join(named) or 'none'}); remove {name!r} from the space or add "
                        "it to the function."
                    )
            elif p.kind is kind.POSITIONAL_ONLY:
                problems.append(
                    f"parameter {name!r} of {fname}() is positional-only, but points are passed "
                    "by keyword; remove the '/' from the signature."
                )
        for p in params.values():
            if (p.kind in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD) or p.default is not p.empty
                    or p.name in self.names or p.name == "seed"):
                continue
            problems.append(
                f"{fname}() requires parameter {p.name!r}, which the space does not set; add "
                f"it, e.g. space * grid({p.name}=...), or give it a default in {fname}()."
            )
        cols = self._columns()
        for name in self.names:
            p = params.get(name)
            expected = _simple_type(p.annotation) if p is not None else None
            if expected is None:
                continue
            accepts = _ACCEPTS[expected]
            bad = next((v for v in cols[name].tolist() if type(v) not in accepts), None)
            if bad is not None:
                problems.append(
                    f"{fname}() annotates {name}: {expected}, but the space gives {name}="
                    f"{bad!r} ({type(bad).__name__}); change the axis values or the annotation."
                )
        return problems

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary of the space (node kinds, axes, sizes) for provenance.

        Examples
        --------
        >>> d = (grid(k=[1, 2]) * trials(3)).describe()
        >>> d["size"], d["layout"], d["node"]["kind"]
        (6, {'kind': 'grid', 'dims': ['k', 'trial']}, 'product')
        """
        layout = self.layout
        return {
            "names": list(self.names),
            "size": len(self),
            "layout": {"kind": layout.kind, "dims": list(layout.dims)},
            "node": self._node(),
        }

    def table(self) -> Any:
        """The points as a pandas DataFrame (one column per name, plus ``key``).

        Examples
        --------
        >>> grid(k=[1, 2], tau=0.5).table().shape
        (2, 3)
        """
        import pandas as pd

        data: dict[str, list[object]] = dict(self.columns())
        data["key"] = self.keys()
        return pd.DataFrame(data, columns=[*self.names, "key"])

    def __repr__(self) -> str:
        n = len(self)
        return f"<Space: {n} point{'' if n == 1 else 's'}, {self.layout.kind} {self._expr()}>"

    def _repr_html_(self) -> str:
        cols = self._columns()
        rows = []
        for name in self.names:
            distinct = {(type(v), v) for v in cols[name].tolist()}
            values = [v for _, v in distinct]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          for v in values)
            low, high = (min(values), max(values)) if numeric and values else ("", "")
            cells = (name, len(values), low, high)
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                        + "</tr>")
        layout = self.layout
        return (
            f"<div><b>Space</b>: {len(self)} points, {layout.kind} layout "
            f"({html.escape(', '.join(layout.dims))})<br><code>{html.escape(self._expr())}"
            "</code><table><thead><tr><th>name</th><th>values</th><th>min</th><th>max</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )


# -- leaf nodes ------------------------------------------------------------------------------
class _Grid(Space):
    def __init__(self, axes: Mapping[str, tuple[Scalar, ...]]) -> None:
        super().__init__()
        self._axes = dict(axes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._axes)

    @property
    def layout(self) -> Layout:
        return Layout("grid", self.names)

    def __len__(self) -> int:
        return math.prod(len(values) for values in self._axes.values())

    def _build_columns(self) -> dict[str, np.ndarray]:
        n = len(self)
        index = np.arange(n, dtype=np.int64)
        stride = n
        cols = {}
        for name, values in self._axes.items():
            stride //= len(values)
            cols[name] = _objects(values)[(index // stride) % len(values)]
        return cols

    def _expr(self) -> str:
        return " × ".join(f"{name}({len(values)})" for name, values in self._axes.items())

    def _node(self) -> dict[str, Any]:
        return {"kind": "grid", "size": len(self),
                "axes": {name: list(values) for name, values in self._axes.items()}}

    def _holders(self) -> dict[str, set[str]]:
        return {name: {"grid"} for name in self._axes}

    def _refine(self, changes: Mapping[str, object]) -> Space:
        if not any(name in changes for name in self._axes):
            return self
        return grid(**{name: changes.get(name, values) for name, values in self._axes.items()})


class _Trials(_Grid):
    def __init__(self, n: int) -> None:
        super().__init__({"trial": tuple(range(n))})
        self._n = n

    def _expr(self) -> str:
        return f"trial({self._n})"

    def _node(self) -> dict[str, Any]:
        return {"kind": "trials", "size": self._n, "axes": {"trial": self._n}}

    def _holders(self) -> dict[str, set[str]]:
        return {"trials": {"trials"}, "trial": {"trial"}}

    def _refine(self, changes: Mapping[str, object]) -> Space:
        return trials(changes["trials"]) if "trials" in changes else self  # type: ignore[arg-type]


class _Explicit(Space):
    """Points given column by column (zip_, points, sample): a points layout."""

    kind = "points"

    def __init__(self, cols: Mapping[str, list[Scalar]], *, check_duplicates: bool = True) -> None:
        super().__init__()
        self._cols = {name: _objects(values) for name, values in cols.items()}
        self._n = len(next(iter(cols.values())))
        if check_duplicates:
            keys = self._keys()
            i = _first_duplicate(keys)
            if i is not None:
                raise SpaceError(
                    f"{self.kind}(): the point {self._point(i)} occurs more than once (as "
                    f"point {keys.index(keys[i])} and point {i}, comparing values to 12 "
                    "significant digits); remove the repeats."
                )

    def _point(self, i: int) -> Point:
        return {name: column[i] for name, column in self._cols.items()}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._cols)

    @property
    def layout(self) -> Layout:
        return Layout("points", self.names)

    def __len__(self) -> int:
        return self._n

    def _build_columns(self) -> dict[str, np.ndarray]:
        return self._cols

    def _expr(self) -> str:
        return f"{self.kind}({', '.join(self.names)})[{self._n}]"

    def _node(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": self._n, "names": list(self.names)}

    def _holders(self) -> dict[str, set[str]]:
        return {name: {self.kind} for name in self.names}

    def _refine(self, changes: Mapping[str, object]) -> Space:
        return self


class _Zip(_Explicit):
    kind = "zip_"

    def _node(self) -> dict[str, Any]:
        return {"kind": "zip_", "size": self._n,
                "axes": {name: column.tolist() for name, column in self._cols.items()}}

    def _refine(self, changes: Mapping[str, object]) -> Space:
        if not any(name in changes for name in self._cols):
            return self
        return zip_(**{name: changes.get(name, col.tolist()) for name, col in self._cols.items()})


class _Points(_Explicit):
    kind = "points"


class _Sample(_Explicit):
    kind = "sample"

    def __init__(self, cols: Mapping[str, list[Scalar]], info: dict[str, Any]) -> None:
        self._info = info
        super().__init__(cols, check_duplicates=False)

    def _expr(self) -> str:
        return f"sample[{self._info['method']}]({', '.join(self.names)})[{self._n}]"

    def _node(self) -> dict[str, Any]:
        return {"kind": "sample", "size": self._n, **self._info}


# -- combinators ------------------------------------------------------------------------------
class _Product(Space):
    def __init__(self, left: Space, right: Space) -> None:
        super().__init__()
        common = [name for name in left.names if name in right.names]
        if common:
            raise SpaceError(
                f"a * b needs disjoint names, but both spaces have {', '.join(map(repr, common))};"
                " rename the parameter in one of them, or use + for a union of spaces."
            )
        self._left, self._right = left, right

    @property
    def names(self) -> tuple[str, ...]:
        return self._left.names + self._right.names

    @property
    def layout(self) -> Layout:
        left, right = self._left.layout, self._right.layout
        if left.kind == right.kind == "grid":
            return Layout("grid", left.dims + right.dims)
        return Layout("points", self.names)

    def __len__(self) -> int:
        return len(self._left) * len(self._right)

    def _build_columns(self) -> dict[str, np.ndarray]:
        n_left, n_right = len(self._left), len(self._right)
        cols = {name: np.repeat(col, n_right) for name, col in self._left._columns().items()}
        cols.update({name: np.tile(col, n_left) for name, col in self._right._columns().items()})
        return cols

    def _expr(self) -> str:
        return " × ".join(
            f"({s._expr()})" if isinstance(s, _Union) else s._expr()
            for s in (self._left, self._right)
        )

    def _node(self) -> dict[str, Any]:
        return {"kind": "product", "size": len(self),
                "parts": [self._left._node(), self._right._node()]}

    def _holders(self) -> dict[str, set[str]]:
        return _merge_holders(self._left._holders(), self._right._holders())

    def _refine(self, changes: Mapping[str, object]) -> Space:
        left, right = self._left._refine(changes), self._right._refine(changes)
        return self if (left, right) == (self._left, self._right) else _Product(left, right)


class _Union(Space):
    def __init__(self, left: Space, right: Space) -> None:
        super().__init__()
        only_left = [n for n in left.names if n not in right.names]
        only_right = [n for n in right.names if n not in left.names]
        if only_left or only_right:
            raise SpaceError(
                "a + b needs the same parameter names on both sides; only in a: "
                f"{', '.join(only_left) or '-'}; only in b: {', '.join(only_right) or '-'}. "
                "Add the missing parameters (e.g. b * grid(name=value)) or use * for a product."
            )
        self._left, self._right = left, right

    @property
    def names(self) -> tuple[str, ...]:
        return self._left.names

    @property
    def layout(self) -> Layout:
        left, right = self._left.layout, self._right.layout
        if left.kind == right.kind == "grid":
            return Layout("grid", left.dims)
        return Layout("points", self.names)

    def _keep(self) -> np.ndarray:
        """Indices of the right-hand points not already in the left (nor earlier on the right)."""
        if "keep" not in self._cache:
            seen = set(self._left._keys())
            keep = []
            for i, key in enumerate(self._right._keys()):
                if key not in seen:
                    seen.add(key)
                    keep.append(i)
            self._cache["keep"] = np.asarray(keep, dtype=np.int64)
        return self._cache["keep"]

    def __len__(self) -> int:
        return len(self._left) + len(self._keep())

    def _build_columns(self) -> dict[str, np.ndarray]:
        keep, left, right = self._keep(), self._left._columns(), self._right._columns()
        return {name: np.concatenate([left[name], right[name][keep]]) for name in self.names}

    def _build_keys(self) -> list[str]:
        right = self._right._keys()
        return self._left._keys() + [right[i] for i in self._keep().tolist()]

    def _expr(self) -> str:
        return f"{self._left._expr()} + {self._right._expr()}"

    def _node(self) -> dict[str, Any]:
        return {"kind": "union", "size": len(self),
                "parts": [self._left._node(), self._right._node()]}

    def _holders(self) -> dict[str, set[str]]:
        return _merge_holders(self._left._holders(), self._right._holders())

    def _refine(self, changes: Mapping[str, object]) -> Space:
        left, right = self._left._refine(changes), self._right._refine(changes)
        return self if (left, right) == (self._left, self._right) else _Union(left, right)


class _Where(Space):
    def __init__(self, base: Space, predicate: Predicate) -> None:
        super().__init__()
        if not callable(predicate):
            raise SpaceError(
                f"where() needs a function point -> bool, got {predicate!r}; e.g. "
                "space.where(lambda p: p['amp'] > 0)."
            )
        self._base, self._predicate = base, predicate
        mask = np.zeros(len(base), dtype=bool)
        for i, point in enumerate(base):
            try:
                mask[i] = bool(predicate(point))
            except Exception as exc:
                raise SpaceError(
                    f"where(): the predicate {self._pred_name()} raised "
                    f"{type(exc).__name__}: {exc} on the point {point}; make it handle this "
                    "point (e.g. test for it first)."
                ) from exc
        self._index = np.flatnonzero(mask)

    def _pred_name(self) -> str:
        return getattr(self._predicate, "__qualname__", type(self._predicate).__name__)

    @property
    def names(self) -> tuple[str, ...]:
        return self._base.names

    @property
    def layout(self) -> Layout:
        return self._base.layout

    def __len__(self) -> int:
        return len(self._index)

    def _build_columns(self) -> dict[str, np.ndarray]:
        return {name: col[self._index] for name, col in self._base._columns().items()}

    def _build_keys(self) -> list[str]:
        if "keys" in self._base._cache:
            base = self._base._keys()
            return [base[i] for i in self._index.tolist()]
        return super()._build_keys()

    def _expr(self) -> str:
        base = self._base._expr()
        if isinstance(self._base, (_Product, _Union)) or " × " in base:
            base = f"({base})"
        return f"{base}.where({self._pred_name()})"

    def _node(self) -> dict[str, Any]:
        return {"kind": "where", "size": len(self), "predicate": self._pred_name(),
                "base": self._base._node()}

    def _holders(self) -> dict[str, set[str]]:
        return self._base._holders()

    def _refine(self, changes: Mapping[str, object]) -> Space:
        base = self._base._refine(changes)
        return self if base is self._base else _Where(base, self._predicate)


# -- constructors -----------------------------------------------------------------------------
def grid(**axes: object) -> Space:
    """The outer product of the given axes (the first axis varies slowest).

    Parameters
    ----------
    **axes
        Each a 1-D sequence, numpy array or range of values (int, float, bool or str),
        or a scalar meaning one fixed value. Values must be finite and distinct
        (compared to 12 significant digits).

    Examples
    --------
    >>> space = grid(k=[1, 2], method="rk4")
    >>> list(space)
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
        tokens: dict[str, Scalar] = {}
        for value in checked[name]:
            token = canonical_token(value)
            if token in tokens:
                raise SpaceError(
                    f"grid(): axis {name!r} has the value {value!r} twice"
                    + ("" if tokens[token] == value and type(tokens[token]) is type(value)
                       else f" (as {tokens[token]!r} and {value!r})")
                    + "; values are compared to 12 significant digits. Remove the repeat."
                )
            tokens[token] = value
    return _Grid(checked)


def trials(n: int) -> Space:
    """A grid axis ``trial`` = 0, 1, ..., n-1, for repeated runs of a random model.

    Each trial is a different point, so it has its own key and its own seed.

    Examples
    --------
    >>> space = grid(k=[1, 2]) * trials(3)
    >>> len(space), space.layout.dims
    (6, ('k', 'trial'))
    >>> len(set(space.seeds()))
    6
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SpaceError(f"trials() needs a positive integer count, got {n!r}; e.g. trials(10).")
    return _Trials(int(n))


def zip_(**axes: object) -> Space:
    """Linked axes: the i-th point takes the i-th value of every axis.

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
            raise SpaceError(
                f"zip_(): axis {name!r} is the single value {values!r}; zip_ axes are "
                f"sequences. For a fixed value use zip_(...) * grid({name}={values!r})."
            )
        cols[name] = list(_axis_values(name, values, where="zip_()"))
    lengths = {name: len(values) for name, values in cols.items()}
    if len(set(lengths.values())) > 1:
        raise SpaceError(
            "zip_() needs axes of equal length, got "
            + ", ".join(f"{name}: {n}" for name, n in lengths.items())
            + "; make them the same length, or use grid() for an outer product."
        )
    return _Zip(cols)


def points(points: Iterable[Mapping[str, object]]) -> Space:
    """Explicit points, given as dicts with the same keys.

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
            raise SpaceError(
                f"points(): item {i} is a {type(row).__name__}, not a dict; pass a list of "
                "dicts such as [{'k': 1, 'tau': 0.1}, ...]."
            )
        if i == 0:
            bad = [name for name in row if not isinstance(name, str)]
            if bad or not row:
                raise SpaceError(
                    f"points(): point 0 has parameter names {list(row)!r}; names must be "
                    "non-empty strings, e.g. {'k': 1}."
                )
            cols = {name: [] for name in row}
        elif set(row) != set(cols):
            missing = [n for n in cols if n not in row]
            extra = [repr(n) for n in row if n not in cols]
            raise SpaceError(
                f"points(): point {i} has different names from point 0 (missing: "
                f"{', '.join(missing) or '-'}; extra: {', '.join(extra) or '-'}); every point "
                "needs the same parameters."
            )
        for name, column in cols.items():
            column.append(check_value(name, row[name]))  # type: ignore[arg-type]
    return _Points(cols)


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
        other ``n`` are allowed and scipy's warning about it is silenced.
    seed
        Required: the same seed (and ranges, in the same order) gives the same points.
    **ranges
        ``name=(low, high)`` for a uniform range or ``name=(low, high, "log")`` for a
        log-uniform one (``low > 0``). ``n``, ``method`` and ``seed`` are options, so
        they cannot be parameter names here.

    Examples
    --------
    >>> space = sample(8, method="sobol", seed=1, k=(0.0, 1.0), tau=(1e-3, 1e-1, "log"))
    >>> len(space), space.names
    (8, ('k', 'tau'))
    >>> space.columns() == sample(8, method="sobol", seed=1, k=(0.0, 1.0),
    ...                           tau=(1e-3, 1e-1, "log")).columns()
    True
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SpaceError(f"sample() needs a positive integer number of points, got n={n!r}.")
    if method not in _SAMPLE_METHODS:
        raise SpaceError(
            f"sample(): unknown method {method!r}; use one of {', '.join(_SAMPLE_METHODS)}."
        )
    if seed is None:
        raise SpaceError(
            "sample() needs seed=<int> so that the same points are drawn every time (a scan "
            "recognises finished points by their values); e.g. sample(64, seed=0, k=(0, 1))."
        )
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpaceError(f"sample(): seed must be a non-negative integer, got {seed!r}.")
    if not ranges:
        raise SpaceError("sample() needs at least one range, e.g. sample(64, seed=0, k=(0, 1)).")
    bounds = []
    for name, spec in ranges.items():
        ok = isinstance(spec, (tuple, list)) and len(spec) in (2, 3)
        scale = spec[2] if ok and len(spec) == 3 else "linear"
        if ok:
            try:
                low, high = float(spec[0]), float(spec[1])
            except (TypeError, ValueError):
                ok = False
        if not ok or scale not in ("linear", "log") or not (
            math.isfinite(low) and math.isfinite(high) and low < high
        ) or (scale == "log" and low <= 0):
            raise SpaceError(
                f"sample(): range {name!r} is {spec!r}; give (low, high) with finite "
                "low < high, or (low, high, 'log') with 0 < low < high."
            )
        bounds.append((low, high, scale))
    rng = np.random.default_rng(int(seed))
    d = len(bounds)
    if method == "random":
        unit = rng.random((int(n), d))
    else:
        from scipy.stats import qmc

        if method == "lhs":
            unit = qmc.LatinHypercube(d=d, seed=rng).random(int(n))
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*balance properties of Sobol")
                unit = qmc.Sobol(d=d, scramble=True, seed=rng).random(int(n))
    cols: dict[str, list[Scalar]] = {}
    for (name, (low, high, scale)), u in zip(zip(ranges, bounds, strict=True), unit.T,
                                            strict=True):
        if scale == "log":
            values = np.exp(np.log(low) + u * (np.log(high) - np.log(low)))
        else:
            values = low + u * (high - low)
        cols[name] = np.clip(values, low, high).tolist()
    info = {"method": method, "seed": int(seed), "n": int(n),
            "ranges": {name: [low, high, scale] for name, (low, high, scale)
                       in zip(ranges, bounds, strict=True)}}
    return _Sample(cols, info)

