"""Margin measures (measures.md, "Margins").

``margin.output``: the output margin γ(x, y) = f(x)_y − max_{j≠y} f(x)_j on the logits, per
training example (Bartlett, Foster & Telgarsky 2017, §2: the margin operator
M(v, y) = v_y − max_{i≠y} v_i).
"""

from __future__ import annotations

from typing import Any

import torch

from genscope.measures.context import MeasureContext
from genscope.measures.registry import HIGHER_IS_BETTER, measure
from genscope.measures.stats import per_class, quantiles


def output_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """f_y − max_{j≠y} f_j for each row; negative exactly when the example is misclassified
    (ties count as misclassified: margin 0)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


@measure(
    "margin.output",
    group="margins",
    direction=HIGHER_IS_BETTER,
    source="Bartlett, Foster & Telgarsky 2017, §2 (margin operator)",
)
def margin_output(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Output margin f(x)_y − max_{j≠y} f(x)_j on the logits, per training example."""
    logits = ctx.train_logits()
    margins = output_margins(logits, ctx.y_train)
    q = quantiles(margins)
    return {
        "value": q["p50"],
        "values": margins.double().cpu(),
        "quantiles": q,
        "mean": float(margins.double().mean()),
        "fraction_negative": float((margins <= 0).double().mean()),
        "per_class": per_class(margins, ctx.y_train, ctx.num_classes),
        "sample": {"size": int(margins.numel()), "whole_set": True, "split": "train"},
    }
