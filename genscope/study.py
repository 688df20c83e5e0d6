"""Studies over several runs: which measure predicts the generalization gap?

Given the reports of several analysed checkpoints (and optional hyper-parameter labels per run),
:func:`study` ranks every scalar measure by how well it orders the runs by their generalization
gap (``metrics.generalization_gap`` = test error − train error), with the evaluation metrics of
Jiang, Neyshabur, Mobahi, Krishnan & Bengio, "Fantastic Generalization Measures and Where to
Find Them" (ICLR 2020, §4) and of the PGDL competition (NeurIPS 2020):

* :func:`kendall_tau_a`: Kendall's τ-a (ties count 0), eq. (3) — not scipy's tie-corrected τ-b;
* :func:`granulated_kendall`: ψ_i per hyper-parameter and their mean Ψ, eqs. (4)-(5);
* :func:`conditional_mutual_information`: the CMI score of §4 / the PGDL scorer;
* :func:`bootstrap_tau_ci`: a percentile bootstrap interval for τ over runs.

This module imports numpy only (never torch): the service's API process imports it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SCHEMA = "genscope.study/1"
LOWER_IS_BETTER = "lower_is_better"
HIGHER_IS_BETTER = "higher_is_better"
_ROWS = 1024  # rows of the pairwise sign matrix handled at once

Values = Sequence[float] | np.ndarray  # one number per run


def _vector(values: Values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite numbers")
    return arr


def _pair(x: Values, y: Values) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vector(x, "x"), _vector(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same length, got {a.size} and {b.size}")
    return a, b


def kendall_tau_a(x: Values, y: Values) -> float:
    """Kendall's τ-a: the mean of sign(x_i − x_j)·sign(y_i − y_j) over ordered pairs i ≠ j.

    Jiang et al. 2020, eq. (3): τ = (1/(n(n−1))) Σ_i Σ_{j≠i} sign(μ_i − μ_j) sign(g_i − g_j);
    a tie in either variable counts 0 and stays in the denominator (scipy's default is the
    tie-corrected τ-b). NaN for fewer than two points.

    Raises:
        ValueError: lengths differ or a value is not finite.

    >>> kendall_tau_a([1, 2, 3], [1, 3, 2])
    0.3333333333333333
    >>> kendall_tau_a([1, 1, 2], [1, 2, 3])  # the tied pair counts 0
    0.6666666666666666
    """
    a, b = _pair(x, y)
    n = a.size
    if n < 2:
        return math.nan
    total = 0.0
    for start in range(0, n, _ROWS):
        sa = np.sign(a[start : start + _ROWS, None] - a[None, :])
        sb = np.sign(b[start : start + _ROWS, None] - b[None, :])
        total += float((sa * sb).sum())
    return total / (n * (n - 1))


def bootstrap_tau_ci(
    values: Values,
    gaps: Values,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval for Kendall's τ-a, resampling runs with replacement.

    Each resample draws n runs with replacement (numpy ``default_rng(seed)``) and computes τ-a on
    them (a run drawn twice forms a tied pair, which counts 0); the interval is the
    ((1 − level)/2, (1 + level)/2) quantiles of the n_boot values. (NaN, NaN) for n < 2. The
    draws are indices, so the same seed with the runs in another order gives a slightly
    different interval (a different set of resamples), not a biased one.

    Raises:
        ValueError: bad lengths, non-finite values, n_boot < 1 or level outside (0, 1).
    """
    a, b = _pair(values, gaps)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = a.size
    if n < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    sa = np.sign(a[:, None] - a[None, :])
    sb = np.sign(b[:, None] - b[None, :])
    prod = sa * sb
    taus = np.empty(n_boot)
    batch = max(1, (1 << 22) // (n * n))
    for start in range(0, n_boot, batch):
        rows = idx[start : start + batch]
        sub = prod[rows[:, :, None], rows[:, None, :]]
        taus[start : start + batch] = sub.sum(axis=(1, 2)) / (n * (n - 1))
    lo, hi = np.quantile(taus, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return (float(lo), float(hi))


def _label_key(value: Any) -> Any:
    """A hashable, comparable stand-in for a label value (lists and dicts as sorted JSON)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def varying_hyperparameters(hparams: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names present in every run's labels that take at least two distinct values, sorted."""
    if not hparams:
        return []
    common = set(hparams[0])
    for h in hparams[1:]:
        common &= set(h)
    return sorted(k for k in common if len({_label_key(h[k]) for h in hparams}) >= 2)


def granulated_kendall(
    values: Values,
    gaps: Values,
    hparams: list[dict[str, Any]],
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Granulated Kendall coefficient (Jiang et al. 2020, eqs. (4)-(5)).

    For each hyper-parameter i, the runs are grouped by the values of all the other
    hyper-parameters; ψ_i is the mean over those groups of τ-a within the group (eq. (4): only
    θ_i varies inside a group), and Ψ = (1/n) Σ_i ψ_i (eq. (5)). Groups with fewer than two runs
    or a single value of θ_i carry no information about θ_i and are left out (counted in
    ``skipped_groups``); in a complete factorial design none are. Runs that share all labels
    (e.g. unlabelled seeds) fall into the same group.

    Args:
        values, gaps: the measure and the gap per run.
        hparams: one dict of hyper-parameter values per run.
        names: the hyper-parameters to use; default those of :func:`varying_hyperparameters`.

    Returns:
        ``{"psi": {name: ψ_i}, "Psi": Ψ, "groups": {name: groups used},
        "skipped_groups": {name: count}, "hyperparameters": [...]}``; NaN where undefined.
    """
    a, b = _pair(values, gaps)
    if len(hparams) != a.size:
        raise ValueError(f"{len(hparams)} label sets for {a.size} runs")
    names = list(names) if names is not None else varying_hyperparameters(hparams)
    psi: dict[str, float] = {}
    used: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for name in names:
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for r, h in enumerate(hparams):
            key = tuple(_label_key(h[k]) for k in names if k != name)
            groups[key].append(r)
        taus = []
        skipped[name] = 0
        for members in groups.values():
            distinct = {_label_key(hparams[r][name]) for r in members}
            if len(members) < 2 or len(distinct) < 2:
                skipped[name] += 1
                continue
            taus.append(kendall_tau_a(a[members], b[members]))
        used[name] = len(taus)
        psi[name] = float(np.mean(taus)) if taus else math.nan
    finite = [v for v in psi.values() if math.isfinite(v)]
    return {
        "psi": psi,
        "Psi": float(np.mean(finite)) if finite else math.nan,
        "groups": used,
        "skipped_groups": skipped,
        "hyperparameters": names,
    }


def _mi_and_entropy(vg: np.ndarray, vm: np.ndarray) -> tuple[float, float]:
    """I(V_μ; V_g) and H(V_g) in bits of two binary vectors (0 log 0 = 0)."""
    total = vg.size
    table = np.zeros((2, 2))
    np.add.at(table, (vg.astype(int), vm.astype(int)), 1.0)
    p = table / total
    pg, pm = p.sum(axis=1), p.sum(axis=0)
    mi = 0.0
    for i in range(2):
        for j in range(2):
            if p[i, j] > 0:
                mi += p[i, j] * math.log2(p[i, j] / (pg[i] * pm[j]))
    h = -sum(q * math.log2(q) for q in pg if q > 0)
    return mi, h


def _conditional_score(
    vg: np.ndarray, vm: np.ndarray, strata: np.ndarray, weighting: str
) -> tuple[float, int]:
    """Σ_s w_s I_s / Σ_s w_s H_s over the non-empty strata s."""
    num = den = 0.0
    ids, counts = np.unique(strata, return_counts=True)
    for sid, count in zip(ids, counts, strict=True):
        sel = strata == sid
        mi, h = _mi_and_entropy(vg[sel], vm[sel])
        w = count / strata.size if weighting == "pairs" else 1.0 / ids.size
        num += w * mi
        den += w * h
    return (num / den if den > 0 else math.nan), int(ids.size)


def conditional_mutual_information(
    values: Values,
    gaps: Values,
    hparams: list[dict[str, Any]],
    names: Sequence[str] | None = None,
    max_conditioning: int = 2,
    weighting: str = "pairs",
) -> dict[str, Any]:
    """Conditional mutual information score (Jiang et al. 2020, §4; PGDL 2020 scorer).

    Over all ordered pairs of runs (r, r'), **including r = r'** as the PGDL scorer does,
    V_g = 1[g_r > g_r'] and V_μ = 1[μ_r > μ_r'] (strict: ties give 0). For a conditioning set S
    of hyper-parameters, pairs are stratified by the values of S for *both* runs; in each stratum
    I(V_μ; V_g) and H(V_g) are computed in bits, and

        score_S = Σ_s w_s I_s / Σ_s w_s H_s,

    with w_s the fraction of pairs in stratum s (``weighting="pairs"``, the p(U_S) weighting of
    Jiang et al.) or uniform over non-empty strata (``"uniform"``, the PGDL code); the two agree
    on a complete balanced factorial design. The score is the minimum over every S with
    |S| ≤ ``max_conditioning`` (∅ included), as in Jiang et al.; ``pgdl_score`` is the PGDL
    scorer's: the minimum over |S| = 2 exactly, uniform weights. Exact entropies are used where
    the PGDL code adds 1e-12 inside the logarithm. A score is NaN when V_g is constant inside
    every stratum (nothing to predict).

    Returns:
        ``{"score", "conditioning_set", "pgdl_score", "by_set": [{"set", "score", "strata"}],
        "hyperparameters"}``.
    """
    a, b = _pair(values, gaps)
    if len(hparams) != a.size:
        raise ValueError(f"{len(hparams)} label sets for {a.size} runs")
    if weighting not in ("pairs", "uniform"):
        raise ValueError(f"weighting must be 'pairs' or 'uniform', got {weighting!r}")
    names = list(names) if names is not None else varying_hyperparameters(hparams)
    n = a.size
    vg = (b[:, None] > b[None, :]).reshape(-1)
    vm = (a[:, None] > a[None, :]).reshape(-1)
    codes: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    for name in names:
        levels = {
            k: i for i, k in enumerate(sorted({_label_key(h[name]) for h in hparams}, key=str))
        }
        codes[name] = np.array([levels[_label_key(h[name])] for h in hparams])
        sizes[name] = len(levels)
    by_set = []
    for size in range(0, min(max_conditioning, len(names)) + 1):
        for subset in itertools.combinations(names, size):
            strata = np.zeros(n * n, dtype=np.int64)
            for name in subset:
                c, k = codes[name], sizes[name]
                pair_code = (c[:, None] * k + c[None, :]).reshape(-1)
                strata = strata * (k * k) + pair_code
            score, count = _conditional_score(vg, vm, strata, weighting)
            entry: dict[str, Any] = {"set": list(subset), "score": score, "strata": count}
            if size == 2:
                entry["pgdl_score"] = _conditional_score(vg, vm, strata, "uniform")[0]
            by_set.append(entry)
    finite = [e for e in by_set if math.isfinite(e["score"])]
    best = min(finite, key=lambda e: e["score"]) if finite else None
    pgdl = [e["pgdl_score"] for e in by_set if math.isfinite(e.get("pgdl_score", math.nan))]
    return {
        "score": best["score"] if best else math.nan,
        "conditioning_set": best["set"] if best else None,
        "pgdl_score": min(pgdl) if pgdl else math.nan,
        "by_set": by_set,
        "hyperparameters": names,
        "weighting": weighting,
    }


# --- the study over reports ---------------------------------------------------------------------


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, numpy scalars plain numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _sign(direction: str | None) -> int | None:
    """+1 when a larger measure should mean a larger gap, −1 for the reverse, None if unknown."""
    if direction == LOWER_IS_BETTER:
        return 1
    if direction == HIGHER_IS_BETTER:
        return -1
    return None


def _direction(entries: list[Mapping[str, Any]]) -> tuple[str | None, bool]:
    found = [e.get("direction") for e in entries if e.get("direction")]
    if not found:
        return None, False
    counts = Counter(found)
    return counts.most_common(1)[0][0], len(counts) > 1


def _run_name(report: Mapping[str, Any], index: int) -> str:
    model = report.get("model") or {}
    for key in ("name", "path"):
        if isinstance(model.get(key), str) and model[key]:
            return str(model[key])
    return f"run {index}"


def study(
    reports: list[dict],
    labels: list[dict] | None = None,
    *,
    names: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_runs: int = 3,
) -> dict:
    """Rank every scalar measure of several reports by how well it predicts the gap.

    For each measure with a finite value in at least ``min_runs`` reports that also have a finite
    ``metrics.generalization_gap`` (test error − train error):

    * ``tau``: Kendall τ-a of (measure, gap) over those runs; ``tau_adjusted`` = τ for a
      ``lower_is_better`` measure and −τ for a ``higher_is_better`` one, so that a positive value
      means the measure orders the runs by gap as its direction claims; None when the measure
      declares no direction;
    * ``ci`` / ``ci_adjusted``: percentile bootstrap intervals (:func:`bootstrap_tau_ci`);
    * with ``labels``: the granulated coefficient (ψ_i, Ψ, raw and sign-adjusted) over the
      hyper-parameters that vary across those runs, and, when there are at least two, the CMI
      score (:func:`conditional_mutual_information`, which needs no sign).

    Ranking: by ``score`` = ``tau_adjusted`` for directed measures, |τ| for measures without a
    direction (``score_kind`` says which), descending.

    Args:
        reports: report dicts (``genscope.report/1``, as ``Report.to_dict`` writes them).
        labels: one dict of hyper-parameter values per report (same order), or None.
        names: a display name per report; default the model's path or ``run i``.
        n_boot, seed, level: the bootstrap.
        min_runs: the fewest runs a measure needs to be ranked.

    Returns:
        A JSON-serialisable dict (``schema`` ``genscope.study/1``); NaN is written as None.

    Raises:
        ValueError: labels of the wrong length, or a report without ``metrics``/``measures``.
    """
    if labels is not None and len(labels) != len(reports):
        raise ValueError(f"{len(labels)} label sets for {len(reports)} reports")
    if names is not None and len(names) != len(reports):
        raise ValueError(f"{len(names)} names for {len(reports)} reports")
    gaps: list[float | None] = []
    for i, rep in enumerate(reports):
        if not isinstance(rep, Mapping) or not isinstance(rep.get("metrics"), Mapping):
            raise ValueError(f"report {i} has no 'metrics' object")
        if not isinstance(rep.get("measures"), Mapping):
            raise ValueError(f"report {i} has no 'measures' object")
        gap = rep["metrics"].get("generalization_gap")
        gaps.append(float(gap) if _finite_number(gap) else None)
    runs = [
        {
            "index": i,
            "name": names[i] if names is not None else _run_name(rep, i),
            "gap": gaps[i],
            "labels": (labels[i] if labels is not None else None),
        }
        for i, rep in enumerate(reports)
    ]
    all_ids = sorted({mid for rep in reports for mid in rep["measures"]})
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for mid in all_ids:
        present = [
            (i, rep["measures"][mid]) for i, rep in enumerate(reports) if mid in rep["measures"]
        ]
        usable = [
            (i, res)
            for i, res in present
            if isinstance(res, Mapping)
            and res.get("status", "ok") == "ok"
            and _finite_number(res.get("value"))
            and gaps[i] is not None
        ]
        if len(usable) < min_runs:
            skipped.append(
                {
                    "id": mid,
                    "runs": len(usable),
                    "reason": f"a finite value and gap in {len(usable)} reports "
                    f"(at least {min_runs} needed)",
                }
            )
            continue
        entries.append(_measure_entry(mid, usable, gaps, labels, n_boot, seed, level))
    entries.sort(key=lambda e: (-e["score"] if math.isfinite(e["score"]) else math.inf, e["id"]))
    for rank, e in enumerate(entries, start=1):
        e["rank"] = rank
    used_gaps = [g for g in gaps if g is not None]
    return _clean(
        {
            "schema": SCHEMA,
            "n_reports": len(reports),
            "n_runs_with_gap": len(used_gaps),
            "runs": runs,
            "hyperparameters": varying_hyperparameters(
                [labels[i] or {} for i in range(len(reports)) if gaps[i] is not None]
            )
            if labels is not None
            else [],
            "measures": entries,
            "ranking": [e["id"] for e in entries],
            "skipped": skipped,
            "settings": {
                "gap": "metrics.generalization_gap = test error - train error",
                "tau": "Kendall tau-a, ties count 0 (Jiang et al. 2020, eq. 3)",
                "tau_adjusted": "tau for lower_is_better, -tau for higher_is_better; "
                "positive = the measure predicts the gap as its direction claims",
                "score": "tau_adjusted, or |tau| for measures without a direction",
                "granulated": "Jiang et al. 2020 eqs. 4-5 over the labelled hyper-parameters",
                "cmi": "min over conditioning sets |S| <= 2 (Jiang et al. 2020, sec. 4), pairs "
                "weighted by p(U_S), all ordered pairs incl. self-pairs as in the PGDL scorer; "
                "pgdl_score: the PGDL scorer's min over |S| = 2 with uniform strata",
                "n_boot": n_boot,
                "seed": seed,
                "level": level,
                "min_runs": min_runs,
            },
        }
    )


def _measure_entry(
    mid: str,
    usable: list[tuple[int, Mapping[str, Any]]],
    gaps: list[float | None],
    labels: list[dict] | None,
    n_boot: int,
    seed: int,
    level: float,
) -> dict[str, Any]:
    idx = [i for i, _ in usable]
    x = np.array([float(res["value"]) for _, res in usable])
    g = np.array([float(gaps[i]) for i in idx])  # type: ignore[arg-type]
    direction, conflict = _direction([res for _, res in usable])
    sign = _sign(direction)
    tau = kendall_tau_a(x, g)
    ci = bootstrap_tau_ci(x, g, n_boot=n_boot, seed=seed, level=level)
    entry: dict[str, Any] = {
        "id": mid,
        "direction": direction,
        "runs": len(idx),
        "run_indices": idx,
        "tau": tau,
        "ci": list(ci),
        "tau_adjusted": None if sign is None else sign * tau,
        "ci_adjusted": None if sign is None else sorted(sign * c for c in ci),
        "score": sign * tau if sign is not None else abs(tau),
        "score_kind": "tau_adjusted" if sign is not None else "abs_tau (no declared direction)",
        "constant": bool(np.all(x == x[0])),
    }
    if conflict:
        entry["direction_conflict"] = True
    if labels is not None:
        hp = [dict(labels[i] or {}) for i in idx]
        hp_names = varying_hyperparameters(hp)
        if hp_names:
            gran = granulated_kendall(x, g, hp, hp_names)
            entry["granulated"] = {
                **gran,
                "psi_adjusted": None
                if sign is None
                else {k: sign * v for k, v in gran["psi"].items()},
                "Psi_adjusted": None if sign is None else sign * gran["Psi"],
            }
        if len(hp_names) >= 2:
            cmi = conditional_mutual_information(x, g, hp, hp_names)
            entry["cmi"] = {
                "score": cmi["score"],
                "conditioning_set": cmi["conditioning_set"],
                "pgdl_score": cmi["pgdl_score"],
                "by_set": cmi["by_set"],
            }
    return entry
