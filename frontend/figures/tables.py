"""The dashboard's tables: every measure of a run, its sharpness and bound rows, the headline
scalars of the runs table, and the side-by-side scalar table of a comparison with each
measure's Kendall τ-a against the generalization gap, with its bootstrap interval, the run
count and what the runs' population cannot tell apart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from frontend.figures.bounds import bound_verdict, bounds_of, is_vacuous
from frontend.figures.common import Report, mapping, measure, measures_of, metric, num
from frontend.stats import (
    MIN_RUNS_TO_RANK,
    format_tau,
    kendall_tau_a,
    kendall_tau_interval,
)

#: The note on a rank correlation over fewer than ``MIN_RUNS_TO_RANK`` runs.
TOO_FEW_RUNS = "too few runs to rank measures"

#: Metrics shown in scalar tables: (key, label, direction).
METRIC_ROWS: tuple[tuple[str, str, str | None], ...] = (
    ("train_accuracy", "Train accuracy", "higher_is_better"),
    ("test_accuracy", "Test accuracy", "higher_is_better"),
    ("generalization_gap", "Generalization gap", "lower_is_better"),
    ("train_loss", "Train loss", "lower_is_better"),
    ("test_loss", "Test loss", "lower_is_better"),
)

#: Measures shown in the runs table beside the accuracies: (measure id, label).
HEADLINE_MEASURES: tuple[tuple[str, str], ...] = (
    ("margin.all_layer", "median all-layer margin"),
    ("hessian.top_eigenvalues", "λ_max"),
    ("hessian.trace", "Hessian trace"),
    ("sharpness.adaptive_worst", "adaptive sharpness"),
)


def _note(m: Mapping[str, Any]) -> str:
    """Why a measure failed or has no value: its error's message or code, else its
    ``reason``."""
    err = mapping(m.get("error"))
    return str(err.get("message") or err.get("code") or m.get("reason") or "")


def _why(m: Mapping[str, Any]) -> str:
    """Why a bound has no value: its ``reason`` (the theorem's condition that failed), else
    its error's message."""
    return str(m.get("reason") or mapping(m.get("error")).get("message") or "")


def measure_rows(report: Report) -> list[dict[str, Any]]:
    """One row per measure: id, group, value, direction, seconds, status and why it failed
    or has no value."""
    return [
        {
            "id": mid,
            "group": mid.split(".", 1)[0],
            "value": num(m.get("value")),
            "direction": m.get("direction"),
            "seconds": num(m.get("seconds")),
            "status": m.get("status", "ok"),
            "note": _note(m),
        }
        for mid, m in sorted(measures_of(report).items())
    ]


def sharpness_rows(report: Report) -> list[dict[str, Any]]:
    """Sharpness and smoothness measures with their value and parameters (ρ, steps…)."""
    return [
        {
            "id": mid,
            "value": num(m.get("value")),
            "direction": m.get("direction"),
            "params": {str(k): v for k, v in mapping(m.get("params")).items()},
            "status": m.get("status", "ok"),
        }
        for mid, m in sorted(measures_of(report).items())
        if mid.startswith(("sharpness.", "smoothness."))
    ]


def _fmt(v: Any) -> str:
    f = num(v)
    return f"{f:.4g}" if f is not None else str(v)


def flatten_terms(terms: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten a bound's ``terms`` (nested objects, lists of per-layer objects) into
    (dotted name, value) rows; long lists are cut at 12 entries.

    >>> flatten_terms({"kl": 1.5, "layers": [{"name": "fc", "norm": 2}], "m": {"n": 3}})
    [('kl', 1.5), ('layers[fc].norm', 2), ('m.n', 3)]
    """
    rows: list[tuple[str, Any]] = []
    if not isinstance(terms, Mapping):
        return rows
    for k, v in terms.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            rows += flatten_terms(v, key + ".")
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v):
            for i, item in enumerate(v):
                label = item["name"] if "name" in item else item.get("layer", i)
                rows += flatten_terms(
                    {kk: vv for kk, vv in item.items() if kk not in ("name", "layer")},
                    f"{key}[{label}].",
                )
        elif isinstance(v, (list, tuple)):
            rows.append((key, ", ".join(_fmt(x) for x in v[:12]) + (" …" if len(v) > 12 else "")))
        else:
            rows.append((key, v))
    return rows


def bound_rows(report: Report) -> list[dict[str, Any]]:
    """Each bound with its value, its verdict (:func:`bound_verdict`), the rigorous flag,
    why it has no value and its flattened terms."""
    return [
        {
            "id": mid,
            "value": num(m.get("value")),
            "vacuous": is_vacuous(m),
            "verdict": bound_verdict(m),
            "informative_below": num(m.get("informative_below")),
            "rigorous": m.get("rigorous"),
            "status": m.get("status", "ok"),
            "note": _why(m),
            "terms": [
                [k, v if num(v) is None else num(v)] for k, v in flatten_terms(m.get("terms"))
            ],
        }
        for mid, m in sorted(measures_of(report).items())
        if mid.startswith("bound.")
    ]


def headline_scalars(report: Report | None) -> dict[str, float | None]:
    """The scalars shown in the runs table: accuracies, gap, headline measures, each bound."""
    out: dict[str, float | None] = {}
    for key in ("train_accuracy", "test_accuracy", "generalization_gap"):
        out[key] = metric(report, key)
    for mid, _label in HEADLINE_MEASURES:
        m = measure(report, mid)
        out[mid] = num(m.get("value")) if m else None
    for mid, m in bounds_of(report or {}):
        out[mid] = num(m.get("value"))
    return out


def _best(
    values: Sequence[float | None],
    direction: str | None,
    vacuous: Sequence[bool] | None = None,
) -> list[int]:
    """Indices of the best values by ``direction``; empty when the direction is unknown,
    fewer than two values exist, all are equal, or the best value is vacuous (``vacuous[i]``:
    the run's bound says nothing, :func:`~frontend.figures.bounds.is_vacuous`)."""
    present = [(i, v) for i, v in enumerate(values) if v is not None]
    if direction not in ("higher_is_better", "lower_is_better") or len(present) < 2:
        return []
    pick = max if direction == "higher_is_better" else min
    top = pick(v for _, v in present)
    best = [i for i, v in present if v == top]
    if vacuous is not None and any(vacuous[i] for i in best):
        return []
    return [] if len(best) == len(present) else best


def scalar_table(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a side-by-side scalar table: metrics, then every measure with a value.

    Each row: ``key``, ``label``, ``direction``, ``values`` (one per run, ``None`` where
    missing) and ``best`` (the indices of the best runs by the row's direction; empty when the
    direction is unknown, fewer than two runs have a value, or the best value is a vacuous
    bound). Bound rows also carry ``vacuous`` (one flag per run) and, when no run is marked
    best for that reason, ``note``: ``"all vacuous"`` (every value is) or ``"best is vacuous"``.
    """
    reports = [r.get("report") for r in runs]
    rows: list[dict[str, Any]] = []
    for key, label, direction in METRIC_ROWS:
        values = [metric(rep, key) for rep in reports]
        if any(v is not None for v in values):
            rows.append({"key": key, "label": label, "direction": direction, "values": values})
    directions: dict[str, str | None] = {}
    for rep in reports:
        for mid, m in measures_of(rep).items():
            if directions.get(mid) is None:
                directions[mid] = m.get("direction")
    for mid in sorted(directions):
        values = []
        for rep in reports:
            entry = measure(rep, mid)
            values.append(num(entry.get("value")) if entry else None)
        if any(v is not None for v in values):
            rows.append({"key": mid, "label": mid, "direction": directions[mid], "values": values})
    for row in rows:
        vacuous = _vacuous_flags(reports, row["key"])
        row["best"] = _best(row["values"], row["direction"], vacuous)
        if vacuous is not None:
            row["vacuous"] = vacuous
            present = [i for i, v in enumerate(row["values"]) if v is not None]
            if present and all(vacuous[i] for i in present):
                row["note"] = "all vacuous"
            elif any(vacuous[i] for i in _best(row["values"], row["direction"])):
                row["note"] = "best is vacuous"
    return rows


def _vacuous_flags(reports: Sequence[Any], key: str) -> list[bool] | None:
    """For a bound's row, whether each run's value is vacuous (the measure's ``vacuous`` flag,
    else value ≥ 1: a bound on an error in [0, 1]); ``None`` for rows that are not bounds."""
    if not key.startswith("bound."):
        return None
    flags = []
    for rep in reports:
        entry = measure(rep, key)
        flags.append(bool(entry) and num(entry.get("value")) is not None and is_vacuous(entry))
    return flags


def _architecture(report: Any) -> Any:
    """What identifies a run's architecture: its declared ``arch``, else the kinds of its
    affine layers (linear, conv2d...); ``None`` when the report has no model block. Widths and
    depths are hyperparameters of one architecture, as in Jiang et al. 2020, and do not count."""
    model = mapping(mapping(report).get("model"))
    if not model:
        return None
    if model.get("arch"):
        return ("arch", str(model["arch"]))
    layers = model.get("layers") or []
    return ("kinds", tuple(sorted({str(x.get("kind")) for x in layers if isinstance(x, Mapping)})))


def _dataset(report: Any) -> str | None:
    name = mapping(mapping(report).get("data")).get("name")
    return None if name is None else str(name)


def population_notes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a rank correlation across these runs cannot tell apart: runs of different
    architectures or datasets (read from the reports' ``model`` and ``data`` blocks). Jiang et
    al. (2020, §4) rank measures over runs that differ in one hyperparameter at a time."""
    reports = [r.get("report") for r in runs]
    notes = []
    archs = {a for a in (_architecture(rep) for rep in reports) if a is not None}
    if len(archs) > 1:
        notes.append(
            "the runs differ in architecture: τ mixes the effect of the architecture with the "
            "measure's"
        )
    datasets = {d for d in (_dataset(rep) for rep in reports) if d is not None}
    if len(datasets) > 1:
        notes.append(
            "the runs differ in dataset (" + ", ".join(sorted(datasets)) + "): gaps on different "
            "data are not comparable"
        )
    return notes


def gap_correlations(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Kendall τ-a of each measure with the generalization gap across the runs (Jiang et al.
    2020, eq. 3), for measures with a value in at least three runs that also have a gap.

    Each row: ``key``, ``direction``, ``tau``, ``interval`` (a 95 % percentile bootstrap
    interval over the runs, :func:`~frontend.stats.kendall_tau_interval`), ``n`` (runs used),
    ``label`` (``"τ = 0.33 [−0.67, 0.67], n = 3 runs"``) and ``notes``: "too few runs to rank
    measures" when n < 5, and :func:`population_notes`.
    """
    gaps = [metric(r.get("report"), "generalization_gap") for r in runs]
    metric_keys = {k for k, _, _ in METRIC_ROWS}
    shared = population_notes(runs)
    out = []
    for row in scalar_table(runs):
        if row["key"] in metric_keys:
            continue
        pairs = [
            (v, g)
            for v, g in zip(row["values"], gaps, strict=True)
            if v is not None and g is not None
        ]
        if len(pairs) < 3:
            continue
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        tau = kendall_tau_a(xs, ys)
        interval = kendall_tau_interval(xs, ys)
        notes = ([TOO_FEW_RUNS] if len(pairs) < MIN_RUNS_TO_RANK else []) + shared
        out.append(
            {
                "key": row["key"],
                "direction": row["direction"],
                "tau": tau,
                "interval": list(interval) if interval is not None else None,
                "n": len(pairs),
                "label": format_tau(tau, interval, len(pairs)),
                "notes": notes,
            }
        )
    return out
