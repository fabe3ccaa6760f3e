"""What the user gives: axes (``NAME=START:STOP:NUM``), config files, the function to scan."""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .common import AXIS_SYNTAX, CONFIG_KEYS, UsageError, did_you_mean


def parse_value(text: str) -> bool | int | float | str:
    """A command-line value: int, float, ``true``/``false`` or text (quotes removed).

    Examples
    --------
    >>> [parse_value(t) for t in ["3", "0.5", "1e-3", "true", "rk4", "'007'"]]
    [3, 0.5, 0.001, True, 'rk4', '007']
    """
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value


def _spaced(name: str, start: Any, stop: Any, num: Any, *, log: bool,
            where: str) -> list[int] | list[float]:
    """NUM values from START to STOP, evenly spaced (on a log scale when ``log``)."""
    import numpy as np

    def number(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise UsageError(where, f"axis {name!r}: {what} {value!r} is not a finite number; "
                                    + AXIS_SYNTAX)
        return value

    start, stop = number(start, "START"), number(stop, "STOP")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise UsageError(where, f"axis {name!r}: NUM {num!r} must be a whole number >= 1 "
                                f"(how many values from {start} to {stop})")
    if num == 1 and start != stop:
        raise UsageError(where, f"axis {name!r}: NUM=1 gives one value, but START={start} and "
                                f"STOP={stop} differ; use NUM >= 2, or NAME={start}")
    if log:
        if start <= 0 or stop <= 0:
            raise UsageError(where, f"axis {name!r}: a log axis needs START and STOP > 0, got "
                                    f"{start} and {stop}")
        return np.geomspace(start, stop, num).tolist()
    values = np.linspace(start, stop, num)
    step = (stop - start) / (num - 1) if num > 1 else 0
    if isinstance(start, int) and isinstance(stop, int) and float(step).is_integer():
        return [int(v) for v in np.rint(values)]
    return values.tolist()


def parse_axis(spec: str, *, log: bool = False, option: str = "--axis") -> tuple[str, Any]:
    """``NAME=...`` from the command line as ``(name, values)`` for :func:`notebookscan.grid`.

    Examples
    --------
    >>> parse_axis("k=1:20:4")
    ('k', [1.0, 7.333333333333333, 13.666666666666666, 20.0])
    >>> parse_axis("k=0:30:4")
    ('k', [0, 10, 20, 30])
    >>> parse_axis("tau=0.005,0.01"), parse_axis("method=rk4")
    (('tau', [0.005, 0.01]), ('method', 'rk4'))
    >>> parse_axis("dt=1e-4:1e-2:3", log=True, option="--log-axis")
    ('dt', [0.0001, 0.001, 0.01])
    """
    name, sep, text = spec.partition("=")
    name = name.strip()
    if not sep or not name or not text.strip():
        raise UsageError(option, f"{spec!r} is not NAME=VALUES; " + AXIS_SYNTAX)
    if not name.isidentifier():
        raise UsageError(option, f"{spec!r}: {name!r} is not a valid parameter name (letters, "
                                 "digits and _, not starting with a digit)")
    return name, _axis_from_text(name, text, log=log, where=option, spec=spec)


def _axis_from_text(name: str, text: str, *, log: bool, where: str, spec: str) -> Any:
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise UsageError(where, f"{spec!r}: a range is START:STOP:NUM with three parts, got "
                                    f"{len(parts)}; " + AXIS_SYNTAX)
        start, stop, num = (parse_value(p) for p in parts)
        return _spaced(name, start, stop, num, log=log, where=where)
    if log:
        raise UsageError(where, f"{spec!r}: a log axis is NAME=START:STOP:NUM (e.g. "
                                f"{name}=1e-3:1e-1:5); give explicit values with --axis")
    if "," in text:
        items = [item.strip() for item in text.split(",")]
        if not all(items):
            raise UsageError(where, f"{spec!r} has an empty value between commas; "
                                    + AXIS_SYNTAX)
        return [parse_value(item) for item in items]
    return parse_value(text)


def _axis_from_config(name: str, value: Any, *, log: bool, path: str) -> Any:
    table = "log_axes" if log else "axes"
    where = f"--config ({path}, [{table}] {name})"
    if isinstance(value, str):
        return _axis_from_text(name, value, log=log, where=where, spec=f"{name} = {value!r}")
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"start", "stop", "num", "log"})
        if unknown or not {"start", "stop", "num"} <= set(value):
            raise UsageError(where, f"a range table needs start, stop and num (and optionally "
                                    f"log = true), got keys {sorted(value)}")
        return _spaced(name, value["start"], value["stop"], value["num"],
                       log=log or bool(value.get("log", False)), where=where)
    if log:
        raise UsageError(where, "a log axis is a range: \"START:STOP:NUM\" or "
                                "{start = ..., stop = ..., num = ...}")
    if isinstance(value, list):
        if not value:
            raise UsageError(where, "the list of values is empty")
        return value
    return value


@dataclass
class Config:
    """What a ``--config`` file says (all optional)."""

    path: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, Any] = field(default_factory=dict)


def load_config(path: str) -> Config:
    """Read a ``.toml`` (or ``.yaml``/``.yml``) scan description; see ``run --help``."""
    where = "--config"
    if not os.path.isfile(path):
        raise UsageError(where, f"{path!r} does not exist (or is not a file); give the path "
                                "of a .toml or .yaml file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise UsageError(where, "reading TOML on Python 3.10 needs tomli: "
                                        "`pip install tomli`") from None
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(where, f"{path!r} is not valid TOML: {exc}") from None
    elif ext in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UsageError(where, f"{path!r} is YAML, which needs PyYAML (`pip install "
                                    "pyyaml`); or write the same keys as a .toml file") from None
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise UsageError(where, f"{path!r} is not valid YAML: {exc}") from None
    else:
        raise UsageError(where, f"{path!r}: use a .toml file (or .yaml/.yml with PyYAML "
                                "installed)")
    if not isinstance(data, dict):
        raise UsageError(where, f"{path!r} must hold key = value pairs at the top level")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(where, f"{path!r} has unknown key(s) {', '.join(map(repr, unknown))}; "
                                f"known keys: {', '.join(CONFIG_KEYS)}"
                                f"{did_you_mean(str(unknown[0]), CONFIG_KEYS)}")
    config = Config(path=path)
    for table, log in (("axes", False), ("log_axes", True)):
        axes = data.pop(table, {})
        if not isinstance(axes, dict):
            raise UsageError(where, f"{path!r}: {table} must be a table of NAME = VALUES")
        for name, value in axes.items():
            if name in config.axes:
                raise UsageError(where, f"{path!r}: axis {name!r} is in both axes and log_axes")
            config.axes[str(name)] = _axis_from_config(str(name), value, log=log, path=path)
    config.values = data
    return config


# ====================================================================== the function


def load_function(spec: str, *, argument: str = "MODULE:FUNCTION") -> Callable[..., Any]:
    """Import ``module:function`` or ``path/to/file.py:function``.

    Modules found only through the current directory, and files, are sent to workers
    by value (cloudpickle), so engines started elsewhere need not find them.
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise UsageError(argument, f"{spec!r} is not MODULE:FUNCTION; write e.g. "
                                   "mypkg.model:simulate or path/to/model.py:simulate")
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        module = _import_file(module_part, argument)
        by_value = True
    else:
        module, by_value = _import_dotted(module_part, argument)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise UsageError(argument, f"{module_part!r} has no function {attr!r}; it defines: "
                                       f"{', '.join(names) or 'no public functions'}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(argument, f"{spec!r} is a {type(target).__name__}, not a function")
    if by_value:
        import cloudpickle

        with contextlib.suppress(ValueError):  # already registered
            cloudpickle.register_pickle_by_value(module)
    return target


def _import_file(path: str, argument: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UsageError(argument, f"the file {path!r} does not exist; check the path (relative "
                                   f"to {os.getcwd()})")
    name = os.path.splitext(os.path.basename(full))[0]
    if not name.isidentifier():
        raise UsageError(argument, f"{path!r}: the file name must be a valid module name "
                                   "(letters, digits, _)")
    if name in sys.modules:
        name = f"notebookscan_user_{name}"
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise UsageError(argument, f"cannot import {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(full)
    if directory not in sys.path:  # like `python file.py`: the file's siblings import
        sys.path.insert(0, directory)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UsageError(argument, f"importing {path!r} failed: {type(exc).__name__}: "
                                   f"{exc}") from exc
    return module


def _import_dotted(name: str, argument: str) -> tuple[Any, bool]:
    if not all(part.isidentifier() for part in name.split(".")):
        raise UsageError(argument, f"{name!r} is neither a dotted module name nor a .py file")
    top = name.split(".")[0]
    cwd = os.getcwd()
    elsewhere = [p for p in sys.path if p not in ("", ".", cwd)]
    installed = (top in sys.builtin_module_names or top in sys.modules
                 or importlib.machinery.PathFinder.find_spec(top, elsewhere) is not None)
    if not installed and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise UsageError(argument, f"no module named {exc.name!r} (looked in {cwd} and the "
                                       "installed packages); check the spelling, or give a "
                                       "file: path/to/model.py:function") from None
        raise UsageError(argument, f"importing {name!r} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(argument, f"importing {name!r} failed: {type(exc).__name__}: "
                                   f"{exc}") from exc
    return module, not installed
