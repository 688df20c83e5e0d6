"""Every measure's declaration, read from the measure modules' source without importing them.

The measure modules import torch; their ``@measure(...)`` decorators need none of it. This module
parses each module of the package (:func:`genscope.measures.registry.measure_module_names`, the
same modules :func:`~genscope.measures.registry.load_builtin_measures` imports) with :mod:`ast`
and evaluates only the decorators' arguments, with a restricted evaluator that knows:

* literals, tuples, lists, dicts and sets, ``*`` unpacking, f-strings, indexing;
* unary ``-``/``+`` and ``+ - * / // % **`` on numbers, ``+`` on strings, tuples and lists;
* names bound at module level to such expressions (``NAME = ...``, ``NAME: T = ...``), and
  module-level functions whose body is one ``return`` of such an expression;
* names imported from the torch-free modules :data:`TORCH_FREE_MODULES` (``Param``,
  ``Detail``, ``LOWER_IS_BETTER``...) or from another measure module of the package (read the
  same way);
* calls of ``Param``, ``Detail`` and of those functions; the builtins ``int``, ``float``,
  ``bool``, ``str``.

Anything else is a :class:`DeclarationError` naming the file and line, so that a declaration the
service could not read fails loudly (in ``tests/engine/test_declarations.py``), never silently.
The measures built here are the registry's own :class:`~genscope.measures.registry.Measure`
objects, made by the same :func:`~genscope.measures.registry.measure` call, so that
:func:`~genscope.measures.registry.resolve_measures` and
:func:`~genscope.measures.registry.resolve_params` validate a request over them exactly as the
engine does. Computing one imports its module then (:class:`DeferredCompute`).

>>> measures = declared_measures()
>>> measures["margin.output"].group, measures["margin.output"].direction
('margins', 'higher_is_better')
"""

from __future__ import annotations

import ast
import importlib
import operator
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from genscope.measures import registry, schema
from genscope.measures.registry import Known, Measure, get_measure, measure_module_names

#: Modules whose names a declaration may use as they are (they import no torch).
TORCH_FREE_MODULES: Mapping[str, Any] = MappingProxyType(
    {"genscope.measures.registry": registry, "genscope.measures.schema": schema}
)
#: Callables a declaration may call, by what they are.
_CALLABLE = (registry.Param, schema.Detail, int, float, bool, str)
_BUILTINS: Mapping[str, Any] = MappingProxyType(
    {"int": int, "float": float, "bool": bool, "str": str}
)
_BINARY: Mapping[type[ast.operator], Callable[[Any, Any], Any]] = MappingProxyType(
    {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv,
        ast.Mod: operator.mod,
        ast.Pow: operator.pow,
    }
)
#: What registers a measure: called only as ``@measure(...)`` on a module-level function.
_REGISTERING = (registry.measure, registry.register, registry.Declaration, registry.Measure)
_NUMBER = (int, float)
_SEQUENCE = (str, tuple, list)
#: Largest exponent of ``**`` (``10 ** 6`` is fine; a runaway power is refused, not computed).
_MAX_EXPONENT = 1024


class DeclarationError(ValueError):
    """A measure's declaration cannot be read without importing its module."""


@dataclass(frozen=True)
class DeferredCompute:
    """A declared measure's function: imports its module when first called, then computes."""

    module: str
    measure_id: str

    def __call__(self, ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        importlib.import_module(self.module)
        return get_measure(self.measure_id).compute(ctx, params)


@dataclass(frozen=True)
class _Function:
    """A module-level function whose body returns one declarable expression."""

    module: _Module
    node: ast.FunctionDef


@dataclass(frozen=True)
class _Imported:
    """A name imported from another module, resolved when used."""

    module: str
    name: str
    line: int


class _Module:
    """One measure module's source: its module-level bindings, read on demand."""

    def __init__(self, reader: _Reader, name: str, path: Path) -> None:
        self.reader = reader
        self.name = name
        self.path = path
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        # each name's bindings in source order: (line, expression | function | import)
        self.bindings: dict[str, list[tuple[int, ast.expr | _Function | _Imported]]] = {}
        self._values: dict[tuple[str, int], Any] = {}
        for stmt in self.tree.body:
            for name_, bound in self._bound_by(stmt):
                self.bindings.setdefault(name_, []).append((stmt.lineno, bound))

    def _bound_by(self, stmt: ast.stmt) -> list[tuple[str, ast.expr | _Function | _Imported]]:
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            return [(t.id, stmt.value) for t in stmt.targets if isinstance(t, ast.Name)]
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            return [(stmt.target.id, stmt.value)]
        if isinstance(stmt, ast.FunctionDef):
            return [(stmt.name, _Function(self, stmt))]
        if isinstance(stmt, ast.ImportFrom):
            source = self._absolute(stmt)
            return [
                (alias.asname or alias.name, _Imported(source, alias.name, stmt.lineno))
                for alias in stmt.names
            ]
        if isinstance(stmt, ast.Import):  # a module: never a declaration itself
            modules = [
                alias.name if alias.asname else alias.name.split(".")[0] for alias in stmt.names
            ]
            return [
                (alias.asname or module, _Imported(module, "", stmt.lineno))
                for alias, module in zip(stmt.names, modules, strict=True)
            ]
        return []

    def _absolute(self, stmt: ast.ImportFrom) -> str:
        if not stmt.level:
            return stmt.module or ""
        package = self.reader.package.rsplit(".", stmt.level - 1)[0]
        return f"{package}.{stmt.module}" if stmt.module else package

    def where(self, node: ast.AST) -> str:
        return f"{self.path}:{getattr(node, 'lineno', '?')}"

    def fail(self, node: ast.AST, why: str) -> DeclarationError:
        text = ast.unparse(node)
        if len(text) > 80:
            text = f"{text[:77]}..."
        return DeclarationError(
            f"{self.where(node)}: {why} in {text!r}; a measure's declaration may use literals, "
            "arithmetic, module-level constants, Param(...), Detail(...) and names of "
            f"{', '.join(TORCH_FREE_MODULES)} or of another measure module"
        )

    def lookup(self, name: str, node: ast.AST, before: int | None) -> Any:
        """The value ``name`` has at line ``before`` (None: once the module has run)."""
        bindings = [b for b in self.bindings.get(name, []) if before is None or b[0] < before]
        if not bindings:
            if name in _BUILTINS:
                return _BUILTINS[name]
            raise self.fail(node, f"{name!r} is not bound at module level")
        line, bound = bindings[-1]
        key = (name, line)
        if key not in self._values:
            self._values[key] = self._value_of(bound, node)
        return self._values[key]

    def _value_of(self, bound: ast.expr | _Function | _Imported, node: ast.AST) -> Any:
        if isinstance(bound, _Function):
            return bound
        if isinstance(bound, _Imported):
            return self.reader.imported(self, bound, node)
        return _Evaluator(self, bound.lineno, {}).value(bound)

    def refers_to(self, node: ast.expr, target: object) -> bool:
        """Whether ``node`` is a name imported as ``target`` (e.g. registry.measure)."""
        if not isinstance(node, ast.Name):
            return False
        return any(
            isinstance(bound, _Imported)
            and bound.module in TORCH_FREE_MODULES
            and getattr(TORCH_FREE_MODULES[bound.module], bound.name, None) is target
            for _line, bound in self.bindings.get(node.id, [])
        )


class _Evaluator:
    """Evaluates one expression of a module: its names as bound before ``line``."""

    def __init__(self, module: _Module, line: int | None, local: Mapping[str, Any]) -> None:
        self.module = module
        self.line = line
        self.local = local

    def value(self, node: ast.expr) -> Any:
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is None:
            raise self.module.fail(node, f"an expression of type {type(node).__name__} is not read")
        return handler(node)

    def _Constant(self, node: ast.Constant) -> Any:
        if node.value is None or isinstance(node.value, (bool, int, float, str)):
            return node.value
        raise self.module.fail(node, "only numbers, strings, booleans and None are literals")

    def _Name(self, node: ast.Name) -> Any:
        if node.id in self.local:
            return self.local[node.id]
        return self.module.lookup(node.id, node, self.line)

    def _items(self, nodes: list[ast.expr]) -> list[Any]:
        out: list[Any] = []
        for item in nodes:
            if isinstance(item, ast.Starred):
                inner = self.value(item.value)
                if not isinstance(inner, (tuple, list)):
                    raise self.module.fail(item, "only tuples and lists unpack")
                out.extend(inner)
            else:
                out.append(self.value(item))
        return out

    def _Tuple(self, node: ast.Tuple) -> tuple[Any, ...]:
        return tuple(self._items(node.elts))

    def _List(self, node: ast.List) -> list[Any]:
        return self._items(node.elts)

    def _Set(self, node: ast.Set) -> set[Any]:
        return set(self._items(node.elts))

    def _Dict(self, node: ast.Dict) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key, item in zip(node.keys, node.values, strict=True):
            if key is None:
                inner = self.value(item)
                if not isinstance(inner, dict):
                    raise self.module.fail(item, "only dicts unpack into a dict")
                out.update(inner)
            else:
                out[self.value(key)] = self.value(item)
        return out

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        operand = self.value(node.operand)
        if isinstance(node.op, (ast.USub, ast.UAdd)) and _is_number(operand):
            return -operand if isinstance(node.op, ast.USub) else +operand
        raise self.module.fail(node, "only - and + apply to a number")

    def _BinOp(self, node: ast.BinOp) -> Any:
        left, right = self.value(node.left), self.value(node.right)
        op = _BINARY.get(type(node.op))
        numbers = _is_number(left) and _is_number(right)
        joined = isinstance(node.op, ast.Add) and type(left) is type(right)
        if op is None or not (numbers or (joined and isinstance(left, _SEQUENCE))):
            raise self.module.fail(node, "arithmetic is on numbers, + joins strings or sequences")
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise self.module.fail(node, f"an exponent beyond {_MAX_EXPONENT}")
        try:
            return op(left, right)
        except (ArithmeticError, ValueError) as exc:
            raise self.module.fail(node, f"{type(exc).__name__}: {exc}") from None

    def _JoinedStr(self, node: ast.JoinedStr) -> str:
        return "".join(str(self.value(part)) for part in node.values)

    def _FormattedValue(self, node: ast.FormattedValue) -> str:
        value = self.value(node.value)
        if node.conversion == ord("r"):
            value = repr(value)
        elif node.conversion == ord("a"):
            value = ascii(value)
        elif node.conversion == ord("s"):
            value = str(value)
        spec = self.value(node.format_spec) if node.format_spec is not None else ""
        return format(value, spec)

    def _Subscript(self, node: ast.Subscript) -> Any:
        container = self.value(node.value)
        if isinstance(node.slice, ast.Slice):
            parts = (node.slice.lower, node.slice.upper, node.slice.step)
            index: Any = slice(*(None if p is None else self.value(p) for p in parts))
        else:
            index = self.value(node.slice)
        if not isinstance(container, (tuple, list, dict, str)):
            raise self.module.fail(node, "only tuples, lists, dicts and strings are indexed")
        try:
            return container[index]
        except (LookupError, TypeError) as exc:
            raise self.module.fail(node, f"{type(exc).__name__}: {exc}") from None

    def arguments(self, node: ast.Call) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments of a call, evaluated."""
        args = self._items(node.args)
        kwargs: dict[str, Any] = {}
        for keyword in node.keywords:
            value = self.value(keyword.value)
            if keyword.arg is not None:
                kwargs[keyword.arg] = value
            elif isinstance(value, dict):
                kwargs.update(value)
            else:
                raise self.module.fail(keyword.value, "only dicts unpack into keywords")
        return args, kwargs

    def _Call(self, node: ast.Call) -> Any:
        fn = self.value(node.func)
        args, kwargs = self.arguments(node)
        if isinstance(fn, _Function):
            return _call_function(fn, args, kwargs, node, self.module)
        if not any(fn is allowed for allowed in _CALLABLE):
            raise self.module.fail(node, "only Param, Detail, int, float, bool and str are called")
        return _checked(self.module, node, fn, args, kwargs)


def _checked(
    module: _Module, node: ast.AST, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """``fn(*args, **kwargs)``, its refusal of the arguments reported at ``node``."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise module.fail(node, f"{type(exc).__name__}: {exc}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _call_function(
    fn: _Function, args: list[Any], kwargs: dict[str, Any], node: ast.AST, caller: _Module
) -> Any:
    """Evaluate a module-level function of one ``return`` with the call's arguments."""
    definition = fn.node
    body = list(definition.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    spec = definition.args
    if (
        len(body) != 1
        or not isinstance(body[0], ast.Return)
        or body[0].value is None
        or definition.decorator_list
        or spec.vararg
        or spec.kwarg
        or spec.posonlyargs
    ):
        raise caller.fail(
            node,
            f"{definition.name}() (line {definition.lineno} of {fn.module.path.name}) is not "
            "one return of a declaration",
        )
    names = [a.arg for a in spec.args]
    defaults_at = _Evaluator(fn.module, definition.lineno, {})
    defaults = dict(zip(names[len(names) - len(spec.defaults) :], spec.defaults, strict=True))
    kw_defaults = {a.arg: d for a, d in zip(spec.kwonlyargs, spec.kw_defaults, strict=True) if d}
    if len(args) > len(names):
        raise caller.fail(node, f"{definition.name}() takes {len(names)} positional arguments")
    local = dict(zip(names, args, strict=False))
    for name in [*names, *(a.arg for a in spec.kwonlyargs)]:
        if name in kwargs:
            if name in local:
                raise caller.fail(node, f"{definition.name}() got {name!r} twice")
            local[name] = kwargs.pop(name)
        elif name not in local:
            default = defaults.get(name, kw_defaults.get(name))
            if default is None:
                raise caller.fail(node, f"{definition.name}() is missing {name!r}")
            local[name] = defaults_at.value(default)
    if kwargs:
        raise caller.fail(node, f"{definition.name}() has no parameter {next(iter(kwargs))!r}")
    # Globals of a function are looked up when it runs: after the module has run to the caller.
    return _Evaluator(fn.module, None, local).value(body[0].value)


class _Reader:
    """Reads the measure modules of one package folder, each once."""

    def __init__(self, folder: Path, package: str) -> None:
        self.folder = folder
        self.package = package
        self.names = set(measure_module_names(folder))
        self._modules: dict[str, _Module] = {}

    def module(self, name: str) -> _Module:
        if name not in self._modules:
            self._modules[name] = _Module(self, name, self.folder / f"{name}.py")
        return self._modules[name]

    def imported(self, module: _Module, bound: _Imported, node: ast.AST) -> Any:
        """The value of a name a module imports (torch-free module, or a sibling's source)."""
        if not bound.name:
            raise module.fail(node, f"the module {bound.module} is not a declaration")
        if bound.module in TORCH_FREE_MODULES:
            value = getattr(TORCH_FREE_MODULES[bound.module], bound.name, _MISSING)
            if value is _MISSING or not _declarable(value):
                raise module.fail(node, f"{bound.name!r} of {bound.module} is not a declaration")
            return value
        prefix = f"{self.package}."
        sibling = bound.module[len(prefix) :] if bound.module.startswith(prefix) else None
        if sibling is None or sibling not in self.names:
            raise module.fail(
                node, f"{bound.name!r} is imported from {bound.module} (line {bound.line})"
            )
        return self.module(sibling).lookup(bound.name, node, None)

    def declarations(self, name: str) -> list[Measure]:
        """The measures module ``name`` declares, as ``@measure(...)`` would register them."""
        module = self.module(name)
        found: list[Measure] = []
        decorators: set[int] = set()
        for stmt in module.tree.body:
            if not isinstance(stmt, ast.FunctionDef):
                continue
            for decorator in stmt.decorator_list:
                if isinstance(decorator, ast.Call) and module.refers_to(
                    decorator.func, registry.measure
                ):
                    decorators.add(id(decorator))
                    found.append(self._declared(module, stmt, decorator))
        for node in ast.walk(module.tree):  # any other call would register unseen measures
            if (
                isinstance(node, ast.Call)
                and id(node) not in decorators
                and any(module.refers_to(node.func, target) for target in _REGISTERING)
            ):
                raise module.fail(node, "a measure registered other than by @measure(...)")
        return found

    def _declared(self, module: _Module, fn: ast.FunctionDef, decorator: ast.Call) -> Measure:
        # registry.measure itself binds and defaults the arguments, as when the module runs
        args, kwargs = _Evaluator(module, decorator.lineno, {}).arguments(decorator)
        declaration = _checked(module, decorator, registry.measure, args, kwargs)
        compute = DeferredCompute(f"{self.package}.{module.name}", declaration.id)
        doc = ast.get_docstring(fn, clean=False)
        return _checked(module, decorator, declaration.measure, [compute, doc], {})


_MISSING = object()


def _declarable(value: Any) -> bool:
    """Whether an imported value may appear in a declaration: data, Param/Detail, a kind."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (tuple, list, frozenset, set)):
        return all(_declarable(v) for v in value)
    if isinstance(value, dict):
        return all(_declarable(k) and _declarable(v) for k, v in value.items())
    if isinstance(value, (registry.Param, schema.Detail)):
        return True
    return any(value is allowed for allowed in _CALLABLE)


def read_declarations(folder: Path, package: str) -> dict[str, Measure]:
    """Every measure declared in the measure modules of ``folder`` (package ``package``), by id.

    Raises:
        DeclarationError: a declaration that cannot be read statically, or an id declared twice.
    """
    reader = _Reader(folder, package)
    out: dict[str, Measure] = {}
    for name in sorted(reader.names):
        for m in reader.declarations(name):
            if m.id in out:
                raise DeclarationError(f"{reader.folder / name}.py: measure id {m.id!r} twice")
            out[m.id] = m
    return out


_lock = threading.Lock()
_cache: dict[tuple[Any, ...], Known] = {}


def _package_folder() -> Path:
    return Path(registry.__file__).resolve().parent


def _fingerprint(folder: Path) -> tuple[Any, ...]:
    """Name, size and mtime of each module: a changed file is read again."""
    return tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.py"))
    )


def declared_measures() -> Known:
    """The built-in measures as declared in :mod:`genscope.measures`, read once per change of
    its files (read-only mapping by id)."""
    folder = _package_folder()
    key = (str(folder), _fingerprint(folder))
    with _lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = MappingProxyType(read_declarations(folder, "genscope.measures"))
        return _cache[key]
