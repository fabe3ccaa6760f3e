"""Every exception notebookscan raises derives from NotebookscanError.

The test reads every module of the package, finds each ``raise Name(...)``,
``raise module.Name(...)`` and ``raise make_error(...)`` (a function whose return
annotation names the class), resolves the name the way the module sees it and refuses a
class that is not a :class:`~notebookscan.errors.NotebookscanError`, unless the rule
below lets it pass through. Bare ``raise`` and ``raise exc`` of a caught exception are
re-raises and pass.

Builtins that may pass through (:data:`PASS_THROUGH`):

- ``OSError``: an operating-system condition (no such file, disk full) re-raised with
  the store's path named; callers handle it like any other I/O failure, errno kept.
- ``KeyboardInterrupt``, ``StopIteration``: the interpreter's own protocols.
- ``NotImplementedError``: only as the whole body of an abstract method.
- ``AttributeError``: only in ``__getattr__``/``__setattr__``/``__delattr__`` (the
  attribute protocol: ``hasattr``, ``copy`` and ``pickle`` rely on it).
- ``argparse.ArgumentTypeError``: only in the CLI's argument types; argparse turns it
  into a usage message.

Errors that the scanned function raises reach the user as the point's recorded error
and are not raised by notebookscan.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import notebookscan
from notebookscan.errors import NotebookscanError

PACKAGE = Path(notebookscan.__file__).parent

# builtin class -> (functions it may be raised in, None: anywhere; why it passes through)
PASS_THROUGH: dict[type[BaseException], tuple[frozenset[str] | None, str]] = {
    OSError: (None, "an OS condition re-raised with the store path named (errno kept)"),
    KeyboardInterrupt: (None, "the user's interrupt, passed on"),
    StopIteration: (None, "the iterator protocol"),
    NotImplementedError: (None, "abstract methods (checked: the whole body)"),
    AttributeError: (frozenset({"__getattr__", "__setattr__", "__delattr__"}),
                     "the attribute protocol"),
    argparse.ArgumentTypeError: (None, "argparse turns it into a usage message"),
}


@dataclass
class Offence:
    where: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"notebookscan/{self.where}:{self.line}: {self.what}"


def _modules() -> list[tuple[str, Path]]:
    return [(path.relative_to(PACKAGE).as_posix(), path) for path in sorted(PACKAGE.rglob("*.py"))]


def _module_name(rel: str) -> str:
    parts = ["notebookscan", *rel[:-3].split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class _Resolver:
    """Names as one module sees them: its globals, imports inside functions, builtins."""

    def __init__(self, module: str, tree: ast.Module):
        self.module = importlib.import_module(module)
        self.package = module if hasattr(self.module, "__path__") else module.rpartition(".")[0]
        self.imports: dict[str, ast.AST] = {}
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    self.imports.setdefault(alias.asname or alias.name.split(".")[0], node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, node)

    def _imported(self, name: str) -> Any:
        node = self.imports[name]
        if isinstance(node, ast.Import):
            return importlib.import_module(name)
        base = importlib.import_module("." * node.level + (node.module or ""),
                                       self.package if node.level else None)
        for alias in node.names:
            if (alias.asname or alias.name) == name:
                try:
                    return getattr(base, alias.name)
                except AttributeError:  # a submodule
                    return importlib.import_module(f"{base.__name__}.{alias.name}")
        raise LookupError(name)

    def name(self, name: str) -> Any:
        """The object ``name`` means in the module; LookupError when it is a local."""
        if name in vars(self.module):
            return vars(self.module)[name]
        if name in self.imports:
            return self._imported(name)
        if name in self.functions:  # a helper nested in a function
            return self.functions[name]
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise LookupError(name)

    def expr(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.Attribute):
            try:
                return getattr(self.expr(node.value), node.attr)
            except AttributeError:  # e.g. a local's method: unknown until run
                raise LookupError(ast.unparse(node)) from None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "Class"
            return self.expr(ast.parse(node.value, mode="eval").body)
        raise LookupError(ast.unparse(node))

    def raised_class(self, func: ast.expr) -> Any:
        """The class ``raise func(...)`` raises: ``func`` itself, or a factory's return."""
        obj = self.expr(func)
        if inspect.isclass(obj):
            return obj
        node = obj if isinstance(obj, ast.AST) else self.functions.get(getattr(obj, "__name__", ""))
        if node is None or node.returns is None:
            raise LookupError(f"{ast.unparse(func)}(...) builds an exception, but has no "
                              "return annotation naming its class")
        return self.expr(node.returns)


def _is_abstract_body(function: ast.AST | None, raise_node: ast.Raise) -> bool:
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return body == [raise_node]


def _raises(tree: ast.Module):
    """Every ``raise X`` with its innermost enclosing function."""
    def walk(node: ast.AST, function: ast.AST | None):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Raise):
                yield child, function
            inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.Lambda)) else function
            yield from walk(child, inner)
    yield from walk(tree, None)


def _raised(exc: ast.expr, function: ast.AST | None) -> list[ast.expr]:
    """The expressions that make what ``raise exc`` raises: both arms of ``a if c else b``,
    and for a local name the calls assigned to it in the function (``err = X(...)``)."""
    if isinstance(exc, ast.IfExp):
        return _raised(exc.body, function) + _raised(exc.orelse, function)
    if isinstance(exc, ast.Name) and function is not None:
        made = [node.value for node in ast.walk(function)
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
                and any(isinstance(t, ast.Name) and t.id == exc.id
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
                and isinstance(node.value, (ast.Call, ast.IfExp))]
        if made:
            return [e for value in made for e in _raised(value, function)]
    return [exc]


def _check(rel: str, line: int, exc: ast.expr, function: ast.AST | None,
           resolve: _Resolver, raise_node: ast.Raise) -> Offence | None:
    func = exc.func if isinstance(exc, ast.Call) else exc
    try:
        cls = resolve.raised_class(func)
    except LookupError as why:
        if not isinstance(exc, ast.Call):
            return None  # raise exc: a caught exception (a local name), re-raised
        return Offence(rel, line, f"cannot tell what it raises: {why}")
    if not inspect.isclass(cls) or not issubclass(cls, BaseException):
        if isinstance(exc, ast.Call):
            return Offence(rel, line, f"raises {cls!r}, not an exception class")
        return None
    if issubclass(cls, NotebookscanError):
        return None
    if not issubclass(cls, Exception):
        # KeyboardInterrupt and the like (the command line's signal as an interrupt, a
        # point's timeout raised into the user's function): they unwind through code
        # that catches Exception, which a NotebookscanError could not
        return None
    where, _ = PASS_THROUGH.get(cls, (frozenset(), ""))
    if cls in PASS_THROUGH and (where is None or getattr(function, "name", "") in where) and (
            cls is not NotImplementedError or _is_abstract_body(function, raise_node)):
        return None
    return Offence(rel, line, f"raises {cls.__module__}.{cls.__qualname__}, "
                   "not a NotebookscanError")


def offences(rel: str, path: Path, module: str | None = None) -> list[Offence]:
    """The raises in ``path`` (module ``module``, default: its notebookscan name) that break
    the rule."""
    tree = ast.parse(path.read_text(), filename=str(path))
    resolve = _Resolver(module or _module_name(rel), tree)
    out = []
    for node, function in _raises(tree):
        if node.exc is None:
            continue  # bare re-raise
        for exc in _raised(node.exc, function):
            offence = _check(rel, node.lineno, exc, function, resolve, node)
            if offence is not None:
                out.append(offence)
                break  # one line, one report
    return out


def test_every_raise_is_a_notebookscan_error():
    found = [o for rel, path in _modules() for o in offences(rel, path)]
    assert not found, ("raise a notebookscan.errors class (derive one from a builtin too "
                       "if callers catch that builtin):\n" + "\n".join(map(str, found)))


# ------------------------------------------------ the checker itself catches offenders


CHECKED = '''
import argparse
import decimal

from notebookscan.errors import ScanError


class Quiet(ValueError):
    pass


def plain():
    raise ValueError("refused")


def dotted():
    raise decimal.InvalidOperation("refused")


def own():
    raise Quiet("refused")


def factory() -> ValueError:
    return ValueError("made")


def made():
    raise factory("refused")


def unannotated(what):
    return ScanError(what)


def unsure():
    raise unannotated("refused: no annotation says what it makes")


def nested(what):
    def fail(what: str) -> ScanError:
        return ScanError(what)

    def bad(what: str) -> TypeError:
        return TypeError(what)

    if what:
        raise fail("fine")
    raise bad("refused")


def local():
    from json import JSONDecodeError
    raise JSONDecodeError("refused", "", 0)


def fine():
    try:
        raise ScanError("fine")
    except ScanError as exc:
        raise exc


class Shape:
    def __setattr__(self, name, value):
        raise AttributeError("fine: the attribute protocol")

    def area(self):
        raise AttributeError("refused outside the protocol")

    def abstract(self):
        """Subclasses say."""
        raise NotImplementedError

    def half(self, x):
        if x:
            raise NotImplementedError("refused: not an abstract method")
        return x


def typed(text):
    raise argparse.ArgumentTypeError("fine: argparse's protocol")


def either(flag):
    raise ScanError("fine") if flag else KeyError("refused: one arm is a builtin")


def kept(flag):
    error = ValueError("made first")
    if flag:
        raise error  # refused: made here, not caught
    problem = ScanError("fine")
    raise problem
'''


def test_the_check_names_file_and_line_of_each_offender(tmp_path, monkeypatch):
    (tmp_path / "ns_checked.py").write_text(CHECKED)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = offences("ns_checked.py", tmp_path / "ns_checked.py", module="ns_checked")
    refused = {i for i, line in enumerate(CHECKED.splitlines(), 1)
               if "raise" in line and "refused" in line}
    assert {o.line for o in found} == refused, "\n".join(map(str, found))
    assert all(str(o).startswith("notebookscan/ns_checked.py:") for o in found)


@pytest.mark.parametrize("cls, builtin", [
    ("SpaceError", ValueError), ("ArgumentError", ValueError),
    ("ArgumentTypeError", TypeError), ("UnknownNameError", KeyError),
    ("ResultError", TypeError), ("StoreFormatError", ValueError), ("WaitTimeout", TimeoutError),
])
def test_each_error_is_still_the_builtin_callers_caught(cls, builtin):
    error = getattr(notebookscan.errors, cls)("what was passed; what to do")
    assert isinstance(error, NotebookscanError) and isinstance(error, builtin)
    assert str(error) == "what was passed; what to do"  # KeyError would quote it
