"""Summaries shared by measures: quantiles and per-class breakdowns of per-example values."""

from __future__ import annotations

import math
from typing import Any

import torch

QUANTILES = {"p10": 0.10, "p25": 0.25, "p50": 0.50, "p75": 0.75, "p90": 0.90}

QUANTILE_RULE = (
    "linear interpolation between order statistics at position q·(m − 1) of the m sorted values "
    "(numpy's default; Hyndman & Fan 1996, type 7)"
)
JIANG_RULE = (
    "the ⌊q·m⌋-th smallest of the m values, at least the smallest (Jiang et al. 2020, "
    "Fantastic generalization measures: the ⌊m/10⌋-th smallest margin for q = 0.1)"
)


def quantiles(values: torch.Tensor) -> dict[str, float | None]:
    """p10, p25, p50, p75, p90 of the finite values, by :data:`QUANTILE_RULE`."""
    v = values.detach().double().flatten()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return dict.fromkeys(QUANTILES)
    q = torch.quantile(v.cpu(), torch.tensor(list(QUANTILES.values()), dtype=torch.float64))
    return {k: float(x) for k, x in zip(QUANTILES, q.tolist(), strict=True)}


def order_statistic(values: torch.Tensor, q: float) -> float | None:
    """The q-quantile of the finite values by :data:`JIANG_RULE`: the ⌊q·m⌋-th smallest
    (1-based), the smallest when q·m < 1."""
    v = values.detach().double().flatten().cpu()
    v = torch.sort(v[torch.isfinite(v)]).values
    if v.numel() == 0:
        return None
    k = min(max(math.floor(q * v.numel()), 1), v.numel())
    return float(v[k - 1])


def quantile_conventions(values: torch.Tensor, q: float) -> dict[str, Any]:
    """The q-quantile of the values by both rules, each with its rule stated: ``value`` by
    :data:`QUANTILE_RULE` (the one GenScope uses), ``jiang`` by :data:`JIANG_RULE`."""
    v = values.detach().double().flatten().cpu()
    v = v[torch.isfinite(v)]
    linear = float(torch.quantile(v, q)) if v.numel() else None
    return {
        "quantile": q,
        "value": linear,
        "rule": QUANTILE_RULE,
        "jiang": order_statistic(v, q),
        "jiang_rule": JIANG_RULE,
    }


def median(values: torch.Tensor) -> float | None:
    return quantiles(values)["p50"]


def per_class(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[dict[str, Any]]:
    """For each class: count, mean and quantiles of the values of its examples."""
    out = []
    v = values.detach().double().cpu()
    y = labels.detach().cpu()
    for c in range(num_classes):
        sel = v[y == c]
        entry: dict[str, Any] = {"class": c, "count": int(sel.numel())}
        entry["mean"] = float(sel.mean()) if sel.numel() else None
        entry.update(quantiles(sel))
        out.append(entry)
    return out


def finite_or_reason(out: dict[str, Any], value: float | None, what: str) -> dict[str, Any]:
    """Put ``value`` in ``out``; a non-finite value becomes None with a reason (measures.md:
    non-finite values are null on the wire, with a ``reason``)."""
    if value is None or not math.isfinite(value):
        out["value"] = None
        out.setdefault("reason", f"{what} is not finite ({value})")
    else:
        out["value"] = value
    return out
