"""Declared result schemas: the shape of a measure's entry in the report (torch-free).

Each measure declares, next to its ``@measure``, the detail keys it writes beside ``value``:
their JSON kind, unit and meaning, and for arrays what they are indexed by (``per``: one entry
per training example, per layer, per class...). Per-example arrays name the labels that go with
them (``labels``): a reader can split them by class without guessing. The report serialiser
checks every result against its measure's schema (:func:`check_details`), and the dashboard reads
only declared fields.

The keys every result may carry whatever the measure (``reason``, ``oom_retry``...) are declared
once, in :data:`COMMON`; pieces several measures share (the sample block, quantiles, per-class
rows, labels, a radius sweep) are constants here.

Schemas are written as literal expressions only (``Detail(...)`` calls with literal arguments,
tuples of them and module-level constants bound to such expressions), so that a reader can
evaluate them without importing the measures (or torch).

>>> schema = (Detail("values", "array", per="example", labels="labels"),
...           Detail("labels", "array", per="example"))
>>> check_details("m", schema, {"values": [0.5, 1.0], "labels": [0, 1]})
[]
>>> check_details("m", schema, {"values": [0.5], "labels": [0, 1], "extra": 1})
['m.values has 1 entries per example but m.labels has 2', 'm.extra is not declared']

A per-example array inside an object finds its labels in the object or in an enclosing one:

>>> nested = (Detail("l2", "object", fields=(Detail("values", "array", per="example",
...           labels="labels"),)), Detail("labels", "array", per="example"))
>>> check_details("m", nested, {"l2": {"values": [1.0, 2.0]}, "labels": [0, 1]})
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: JSON kinds a detail can have; ``any`` where the value's kind depends on the model.
KINDS = ("number", "integer", "boolean", "string", "object", "array", "any")
#: What an array can be indexed by.
AXES = (
    "example",  # one entry per example of the sample the measure used (with ``labels``)
    "layer",  # one entry per layer, in forward order
    "class",  # one entry per class
    "eigenvalue",  # one entry per eigenvalue found
    "point",  # one entry per grid point (a curve's abscissa or a landscape's coordinates)
    "draw",  # one entry per random draw (probe, direction, noise sample)
    "batch",  # one entry per batch of the sample (m-sharpness)
    "item",  # a list whose entries are the declared ``fields`` (any other index)
)


@dataclass(frozen=True)
class Detail:
    """One declared key of a measure's result.

    Attributes:
        name: the key in the result object.
        kind: its JSON kind (:data:`KINDS`); ``null`` is always allowed (a missing value).
        help: what it is, with its unit or the equation it comes from.
        per: for arrays, what they are indexed by (:data:`AXES`).
        labels: for per-example arrays, the key holding the examples' labels.
        fields: for objects (or arrays of objects), their declared keys; empty means the keys are
            data (names of layers, classes, quantiles) and are not checked.
    """

    name: str
    kind: str
    help: str = ""
    per: str | None = None
    labels: str | None = None
    fields: tuple[Detail, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"detail {self.name}: unknown kind {self.kind!r}")
        if self.per is not None and (self.per not in AXES or self.kind != "array"):
            raise ValueError(f"detail {self.name}: per={self.per!r} needs an array and {AXES}")
        if self.labels is not None and self.per != "example":
            raise ValueError(f"detail {self.name}: labels go with per='example' arrays")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "help": self.help}
        if self.per:
            out["per"] = self.per
        if self.labels:
            out["labels"] = self.labels
        if self.fields:
            out["fields"] = [f.describe() for f in self.fields]
        return out


class SchemaDeparture(ValueError):
    """A measure's result departs from its declared schema (raised in strict mode)."""


#: Keys any result may carry, written by the orchestrator or by shared helpers.
COMMON: tuple[Detail, ...] = (
    Detail("reason", "string", "why the value is null (skipped, not finite, not defined)"),
    Detail("form", "string", "the model form a skipped measure was given (registry FORMS)"),
    Detail(
        "oom_retry",
        "object",
        "out-of-memory retries: the chunk size that worked, the sizes that failed",
        fields=(
            Detail("chunk_size", "integer", "examples per forward pass that worked"),
            Detail("failed_chunk_sizes", "array", "chunk sizes that ran out of memory", per="item"),
        ),
    ),
    Detail("notes", "array", "remarks on how the value was obtained", per="item"),
    Detail(
        "schema_problems",
        "array",
        "how the result departs from its declared schema (a conforming result has no such key)",
        per="item",
    ),
)

# --- shared pieces -------------------------------------------------------------------------------

QUANTILE_FIELDS: tuple[Detail, ...] = (
    Detail("p10", "number", "10th percentile"),
    Detail("p25", "number", "25th percentile (first quartile)"),
    Detail("p50", "number", "median"),
    Detail("p75", "number", "75th percentile (third quartile)"),
    Detail("p90", "number", "90th percentile"),
)
#: p10…p90 of the finite per-example values, linear interpolation (numpy's default).
QUANTILES = Detail(
    "quantiles",
    "object",
    "p10, p25, p50, p75, p90 of the finite values (linear interpolation, Hyndman & Fan type 7)",
    fields=QUANTILE_FIELDS,
)
SAMPLE_FIELDS: tuple[Detail, ...] = (
    Detail("size", "integer", "number of examples used"),
    Detail("whole_set", "boolean", "whether they are the whole split, in order"),
    Detail("split", "string", "the split they come from: train or test"),
    Detail("batch_size", "integer", "examples per batch"),
    Detail("batches", "integer", "number of batches"),
)
#: The examples a measure used.
SAMPLE = Detail(
    "sample", "object", "the examples the measure used (split, size)", fields=SAMPLE_FIELDS
)
#: The class label of each example of the sample, in the order of its per-example values.
LABELS = Detail(
    "labels",
    "array",
    "class label (integer) of each example, same order and length as the per-example values; "
    "the split is sample.split",
    per="example",
)
#: Count, mean and quantiles of a per-example value within each class.
PER_CLASS = Detail(
    "per_class",
    "array",
    "per class: count, mean and quantiles of the per-example values",
    per="class",
    fields=(
        Detail("class", "integer", "class index"),
        Detail("count", "integer", "examples of the class in the sample"),
        Detail("mean", "number", "mean of the class's values"),
        *QUANTILE_FIELDS,
    ),
)
#: A radius-defined measure evaluated at several radii (``sweep`` parameter).
RHO_CURVE = Detail(
    "rho_curve",
    "object",
    "the measure at several radii, ascending: rho[i] = multiples[i] × the radius, value[i] the "
    "measure there, stderr[i] its standard error; the point at the measure's own radius "
    "(multiple 1) is the headline value. For sharpness.keskar rho holds the box size ε",
    fields=(
        Detail("rho", "array", "radii (ρ, or ε where radius is epsilon), ascending", per="point"),
        Detail("value", "array", "the measure at each radius (same unit as value)", per="point"),
        Detail("stderr", "array", "standard error at each radius (null if none)", per="point"),
        Detail("multiples", "array", "the radii as multiples of the measure's own", per="point"),
        Detail("radius", "string", "which parameter the radii are: rho or epsilon"),
        Detail("evaluated", "integer", "radii computed beyond the measure's own"),
        Detail("num_grad", "integer", "gradient evaluations the sweep took (beyond the headline)"),
        Detail("num_forward", "integer", "forward passes the sweep took (beyond the headline)"),
    ),
)

_JSON_KIND = {
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "string": (str,),
    "object": (Mapping,),
    "array": (list, tuple),
}


def _kind_ok(kind: str, value: Any) -> bool:
    if value is None or kind == "any":
        return True
    if kind in ("number", "integer") and isinstance(value, bool):
        return False
    if kind == "array" and hasattr(value, "tolist"):  # a tensor or numpy array before JSON
        return True
    if kind in ("number", "integer") and hasattr(value, "item") and not hasattr(value, "keys"):
        return True
    return isinstance(value, _JSON_KIND[kind])


def _length(value: Any) -> int | None:
    if value is None:
        return None
    shape = getattr(value, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else None
    return len(value) if isinstance(value, (list, tuple)) else None


def check_details(
    where: str,
    schema: Iterable[Detail],
    details: Mapping[str, Any],
    common: bool = True,
    outer: Mapping[str, Any] | None = None,
) -> list[str]:
    """The ways ``details`` departs from ``schema``: undeclared keys, wrong kinds, per-example
    arrays whose labels are missing or of another length. Empty when it conforms.

    ``outer`` holds the keys of the enclosing objects, where labels may also be found."""
    declared = {d.name: d for d in (*COMMON, *schema)} if common else {d.name: d for d in schema}
    scope = {**(outer or {}), **details}
    problems: list[str] = []
    for key, value in details.items():
        d = declared.get(key)
        if d is None:
            problems.append(f"{where}.{key} is not declared")
            continue
        if not _kind_ok(d.kind, value):
            problems.append(f"{where}.{key} is a {type(value).__name__}, declared {d.kind}")
            continue
        if d.fields and value is not None:
            rows = [value] if d.kind == "object" else list(value)
            for i, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    problems.append(f"{where}.{key}[{i}] is not an object")
                    break
                sub = f"{where}.{key}" if d.kind == "object" else f"{where}.{key}[{i}]"
                found = check_details(sub, d.fields, row, common=False, outer=scope)
                problems += found
                if found:
                    break
        if d.labels and value is not None:
            labels = scope.get(d.labels)
            n, m = _length(value), _length(labels)
            if labels is None:
                problems.append(f"{where}.{key} is per example but {where}.{d.labels} is missing")
            elif n != m:
                problems.append(
                    f"{where}.{key} has {n} entries per example but {where}.{d.labels} has {m}"
                )
    return problems
