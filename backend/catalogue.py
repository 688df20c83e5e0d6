"""The engine's measures seen from the API: their declarations, read without importing torch.

The measure modules import torch; the API does not. :mod:`genscope.measures.declared` reads every
measure's declaration (id, group, direction, parameters, result schema) from the modules' source,
and a run request is resolved over them by the registry's own
:func:`~genscope.measures.registry.resolve_measures` and
:func:`~genscope.measures.registry.resolve_params`: the same expansion of group names, the same
coercion and range checks, the same messages as the CLI's ``--measures`` and ``--param``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from backend.core.errors import ServiceError
from genscope.errors import GenScopeError
from genscope.measures.declared import declared_measures
from genscope.measures.registry import all_measures, resolve_measures, resolve_params


def measure_catalogue() -> list[dict[str, Any]]:
    """Every measure's description, in the registry's order (as ``genscope measures --json``)."""
    return [m.describe() for m in all_measures(declared_measures())]


def validate_measures(
    names: Iterable[str] | str | None, params: Mapping[str, Mapping[str, Any]] | None
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """A run request's measures and parameters, resolved as the engine resolves them.

    Returns:
        the selected measure ids (registry order) and the given parameters, coerced (defaults
        are left to the engine, so that a run stores only what was asked).

    Raises:
        ServiceError: ``unknown_measure`` or ``bad_parameter``, with the engine's message.
    """
    known = declared_measures()
    given = {measure_id: dict(values or {}) for measure_id, values in (params or {}).items()}
    try:
        chosen = resolve_measures(names, known)
        resolved = resolve_params(chosen, given, known)
    except GenScopeError as exc:
        raise ServiceError(exc.code, exc.message, exc.detail) from None
    coerced = {
        measure_id: {name: resolved[measure_id][name] for name in values}
        for measure_id, values in given.items()
    }
    return [m.id for m in chosen], coerced


def checkpoint_params(params: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """The ``(measure id, parameter, value)`` of the given parameters that name a checkpoint
    (``Param.checkpoint``): the service takes checkpoint ids there, never paths."""
    known = declared_measures()
    found: list[tuple[str, str, str]] = []
    for measure_id, values in params.items():
        marked = {p.name for p in known[measure_id].params if p.checkpoint}
        found.extend(
            (measure_id, name, str(value))
            for name, value in values.items()
            if name in marked and value is not None
        )
    return found
