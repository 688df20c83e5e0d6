"""The measure registry: every measure declares its id, group, typed parameters and direction.

Measures live in the modules of :mod:`genscope.measures` and register themselves with
:func:`measure` when imported; :func:`load_builtin_measures` imports them all. The CLI's
``--measures`` and ``--param MEASURE.NAME=VALUE`` resolve through :func:`resolve_measures` and
:func:`resolve_params` over this registry; the service resolves a run request through the same
functions over the declarations read from the modules' source without importing them
(:mod:`genscope.measures.declared`, which needs no torch).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genscope.errors import BadParameter, UnknownMeasure
from genscope.measures.schema import Detail

if TYPE_CHECKING:
    from genscope.measures.context import MeasureContext

GROUPS = ("metrics", "margins", "hessian", "sharpness", "bounds", "representation")
#: The forms a model arrives in: a zoo or plain module, a state dict with an architecture,
#: a ``torch.export`` program. A measure declares the forms it is defined for (default: all);
#: on another form it reports ``value: null`` with a reason.
FORMS = ("module", "state_dict", "program")
HIGHER_IS_BETTER = "higher_is_better"
LOWER_IS_BETTER = "lower_is_better"

#: Longest string a parameter takes (ids, paths, short lists such as margin.robust.eps).
MAX_STR_LEN = 1024

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """A typed measure parameter with a default and an allowed range."""

    name: str
    kind: type  # int, float, bool or str
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False  # None is allowed (the measure then derives the value)
    checkpoint: bool = False  # a checkpoint path; the service takes a checkpoint id here

    def coerce(self, raw: Any, measure_id: str = "") -> Any:
        """Parse ``raw`` (a CLI string or a JSON value) and check type and range.

        Refused: booleans for numbers (JSON ``true`` is not 1), non-integral floats for ints,
        NaN and infinities, values outside ``[min, max]``, strings longer than
        :data:`MAX_STR_LEN`, and anything but a string for a string. Numeric strings are
        accepted for numbers (the CLI's ``--param`` passes strings).
        """
        where = f"{measure_id}.{self.name}" if measure_id else self.name
        if raw is None or (isinstance(raw, str) and raw.lower() in {"none", "null"}):
            if self.optional:
                return None
            raise BadParameter(f"{where} needs a value")
        try:
            value = self._parse(raw)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadParameter(
                f"{where} must be a {self.kind.__name__}, got {_short(raw)}", {"param": where}
            ) from exc
        if self.kind is str and len(value) > MAX_STR_LEN:
            raise BadParameter(
                f"{where} is longer than {MAX_STR_LEN} characters ({len(value)})", {"param": where}
            )
        if self.choices is not None and value not in self.choices:
            raise BadParameter(
                f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}",
                {"param": where},
            )
        if self.kind in (int, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise BadParameter(f"{where} must be finite, got {value!r}", {"param": where})
            if self.min is not None and value < self.min:
                raise BadParameter(f"{where} must be >= {self.min}, got {value}", {"param": where})
            if self.max is not None and value > self.max:
                raise BadParameter(f"{where} must be <= {self.max}, got {value}", {"param": where})
        return value

    def _parse(self, raw: Any) -> Any:
        if self.kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(raw)
        if self.kind is int:
            if isinstance(raw, bool):
                raise TypeError(raw)
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError(raw)
                return int(raw)
            return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
        if self.kind is float:
            if isinstance(raw, bool):
                raise TypeError(raw)
            return float(raw)
        if self.kind is str:
            if not isinstance(raw, str):
                raise TypeError(raw)
            return raw
        raise TypeError(f"unsupported parameter kind {self.kind}")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.kind.__name__,
            "default": self.default,
            "help": self.help,
        }
        for key in ("min", "max", "choices"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.checkpoint:
            out["checkpoint"] = True
        return out


def _short(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else f"{text[:77]}..."


Compute = Callable[["MeasureContext", dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Measure:
    """A registered measure.

    ``compute(ctx, params)`` returns a dict with ``value`` (float or None) and any details; the
    orchestrator adds ``params`` and ``seconds``. ``cost`` is a rough relative cost (number of
    forward/backward passes over the sample, in units of one pass) shown to users before a run.
    """

    id: str
    group: str
    compute: Compute
    params: tuple[Param, ...] = ()
    direction: str | None = None
    description: str = ""
    source: str = ""
    cost: str = "cheap"  # cheap | moderate | expensive
    requires: frozenset[str] = field(default_factory=frozenset)  # e.g. {"functional"}
    forms: frozenset[str] = frozenset(FORMS)  # the model forms the measure is defined for
    result: tuple[Detail, ...] = ()  # the declared detail keys (genscope.measures.schema)

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"measure {self.id}: unknown group {self.group!r}")
        if not self.forms <= set(FORMS):
            raise ValueError(f"measure {self.id}: unknown forms {sorted(self.forms - set(FORMS))}")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params) or "none"
        raise BadParameter(
            f"{self.id} has no parameter {name!r} (its parameters: {known})",
            {"param": f"{self.id}.{name}"},
        )

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "direction": self.direction,
            "description": self.description,
            "source": self.source,
            "cost": self.cost,
            "forms": sorted(self.forms),
            "params": [p.describe() for p in self.params],
            "result": [d.describe() for d in self.result],
        }


#: Measures by id: the runtime registry, or declarations read without importing the modules.
Known = Mapping[str, Measure]

_REGISTRY: dict[str, Measure] = {}


def register(m: Measure) -> Measure:
    """Add a measure to the registry; ids are unique."""
    if m.id in _REGISTRY and _REGISTRY[m.id].compute is not m.compute:
        raise ValueError(f"measure id {m.id!r} registered twice")
    _REGISTRY[m.id] = m
    return m


@dataclass(frozen=True)
class Declaration:
    """What one ``@measure(...)`` declares: everything of a :class:`Measure` but its function.

    Applied to a function it registers the measure (the docstring's first line becomes the
    description); :meth:`measure` builds the measure without registering it.
    """

    id: str
    group: str
    params: tuple[Param, ...] = ()
    direction: str | None = None
    source: str = ""
    cost: str = "cheap"
    requires: frozenset[str] = frozenset()
    forms: frozenset[str] = frozenset(FORMS)
    result: tuple[Detail, ...] = ()

    def measure(self, compute: Compute, doc: str | None) -> Measure:
        """The measure computed by ``compute``, described by the first line of ``doc``."""
        lines = (doc or "").strip().splitlines()
        return Measure(
            id=self.id,
            group=self.group,
            compute=compute,
            params=self.params,
            direction=self.direction,
            description=lines[0] if lines else "",
            source=self.source,
            cost=self.cost,
            requires=self.requires,
            forms=self.forms,
            result=self.result,
        )

    def __call__(self, fn: Compute) -> Compute:
        register(self.measure(fn, fn.__doc__))
        return fn


def measure(
    id: str,
    group: str,
    params: Iterable[Param] = (),
    direction: str | None = None,
    source: str = "",
    cost: str = "cheap",
    requires: Iterable[str] = (),
    forms: Iterable[str] = FORMS,
    result: Iterable[Detail] = (),
) -> Declaration:
    """Decorator form of :func:`register`; the docstring's first line becomes the description."""
    return Declaration(
        id=id,
        group=group,
        params=tuple(params),
        direction=direction,
        source=source,
        cost=cost,
        requires=frozenset(requires),
        forms=frozenset(forms),
        result=tuple(result),
    )


_loaded = False
#: Modules of :mod:`genscope.measures` that hold no measures.
NOT_MEASURE_MODULES = frozenset({"registry", "context"})


def measure_module_names(folder: str | Path) -> list[str]:
    """Names of the modules in the measures package ``folder`` that may declare measures."""
    return [
        info.name
        for info in pkgutil.iter_modules([str(folder)])
        if info.name not in NOT_MEASURE_MODULES and not info.name.startswith("_")
    ]


def load_builtin_measures() -> None:
    """Import every module of :mod:`genscope.measures` so that its measures register."""
    global _loaded
    if _loaded:
        return
    import genscope.measures as package

    for folder in package.__path__:
        for name in measure_module_names(folder):
            importlib.import_module(f"{package.__name__}.{name}")
    _loaded = True


def _known(known: Known | None) -> Known:
    """``known``, or the runtime registry with every built-in measure loaded."""
    if known is not None:
        return known
    load_builtin_measures()
    return _REGISTRY


def _in_order(measures: Iterable[Measure]) -> list[Measure]:
    return sorted(measures, key=lambda m: (GROUPS.index(m.group), m.id))


def all_measures(known: Known | None = None) -> list[Measure]:
    """Every measure of ``known`` (default: the registry), by group then id."""
    return _in_order(_known(known).values())


def get_measure(measure_id: str, known: Known | None = None) -> Measure:
    """The measure ``measure_id`` of ``known`` (default: the registry).

    Raises:
        UnknownMeasure: naming the known ids.
    """
    measures = _known(known)
    try:
        return measures[measure_id]
    except KeyError:
        raise UnknownMeasure(
            f"unknown measure {measure_id!r}; known: {', '.join(sorted(measures))}",
            {"measure": measure_id},
        ) from None


def resolve_measures(
    names: Iterable[str] | str | None, known: Known | None = None
) -> list[Measure]:
    """Expand ids and group names (``margins``, ``hessian``, ``all`` …) into measures, in order.

    A group name selects every measure of that group; ``all`` every measure; an id one measure.
    ``None`` or an empty list selects the default set: ``margin.output``. ``known`` is the set
    the names are looked up in (default: the registry).

    Raises:
        UnknownMeasure: for a name that is neither an id nor a group, naming both.
    """
    measures = _known(known)
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    wanted = [n.strip() for n in (names or []) if n and n.strip()]
    if not wanted:
        wanted = ["margin.output"]
    chosen: dict[str, Measure] = {}
    for name in wanted:
        if name == "all":
            chosen.update(measures)
        elif name in GROUPS:
            chosen.update((m.id, m) for m in measures.values() if m.group == name)
        elif name in measures:
            chosen[name] = measures[name]
        else:
            raise UnknownMeasure(
                f"unknown measure {name!r}; known: {', '.join(sorted(measures))}; "
                f"groups: {', '.join(('all', *GROUPS))}",
                {"measure": name},
            )
    return _in_order(chosen.values())


def parse_param_assignments(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """Parse CLI ``MEASURE.NAME=VALUE`` items into ``{measure_id: {name: raw value}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        measure_id, dot, name = key.strip().rpartition(".")
        if not sep or not dot or not measure_id or not name:
            raise BadParameter(
                f"--param expects MEASURE.NAME=VALUE (e.g. hessian.top_eigenvalues.k=10), "
                f"got {item!r}"
            )
        out.setdefault(measure_id, {})[name] = raw.strip()
    return out


def resolve_params(
    measures: Iterable[Measure],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    known: Known | None = None,
) -> dict[str, dict[str, Any]]:
    """Defaults of each measure with ``overrides`` applied, typed and range-checked.

    Overrides for a measure that was not selected are an error (a typo would otherwise be
    silently ignored); an id missing from ``known`` (default: the registry) is unknown.
    """
    measures = list(measures)
    overrides = dict(overrides or {})
    selected = {m.id for m in measures}
    for measure_id in overrides:
        if measure_id not in selected:
            get_measure(measure_id, known)  # unknown id -> UnknownMeasure
            raise BadParameter(
                f"a parameter was given for {measure_id}, which is not among the selected measures",
                {"measure": measure_id},
            )
    resolved: dict[str, dict[str, Any]] = {}
    for m in measures:
        values = m.defaults()
        for name, raw in (overrides.get(m.id) or {}).items():
            values[name] = m.param(name).coerce(raw, m.id)
        resolved[m.id] = values
    return resolved
