"""Margin measures (measures.md, "Margins").

* ``margin.output``: γ(x, y) = f(x)_y − max_{j≠y} f(x)_j on the logits, per training example
  (Bartlett, Foster & Telgarsky 2017, §2: the margin operator M(v, y) = v_y − max_{i≠y} v_i).
* ``margin.all_layer``: the all-layer margin m_F of Wei & Ma (ICLR 2020, §2, eq. (2.1) and the
  perturbed network above it) with the layer-function convention of measures.md, by the batched
  minimum-norm solver of :mod:`genscope.all_layer`.
* ``margin.normalized``: γ · n / (R_A · ‖X‖_F), R_A the spectral complexity of Bartlett et al.
  (2017, eq. 1.2), the normalisation of their Figure 1.
* ``margin.hidden``: first-order margins at every layer-function output, normalised by the total
  variation (Jiang, Krishnan, Mobahi & Bengio, ICLR 2019, eqs. (3)-(4)), and their quartile
  signature.
* ``margin.homogeneous``: q_min / ‖θ‖^L of an L-homogeneous network (Lyu & Li, ICLR 2020, §3)
  and the sorted vector of normalised margins (Nacson et al., ICML 2019).
* ``margin.robust``: the smallest L2 / L∞ input perturbation that flips each example, and the
  all-layer margin with the input as layer 0 (Wei & Ma 2020, §5).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from genscope.all_layer import minimum_norm_flips, output_margins, solve_all_layer
from genscope.errors import BadParameter, UnsupportedModel
from genscope.graph import LayerGraph, affine_layers, homogeneity, layer_graph
from genscope.measures.context import MeasureContext, Sample
from genscope.measures.registry import HIGHER_IS_BETTER, Param, measure
from genscope.measures.schema import LABELS, PER_CLASS, QUANTILE_FIELDS, QUANTILES, SAMPLE, Detail
from genscope.measures.stats import QUANTILE_RULE, per_class, quantile_conventions, quantiles
from genscope.norms import layer_norms, spectral_complexity


def _sample_block(sample: Sample) -> dict[str, Any]:
    return {**sample.describe(), "split": "train"}


# --- margin.output ------------------------------------------------------------------------------


MARGIN_VALUES = Detail(
    "values",
    "array",
    "output margin f(x)_y − max_{j≠y} f(x)_j of each example (logit units; ≤ 0: misclassified)",
    per="example",
    labels="labels",
)
P10_FIELDS = (
    Detail("quantile", "number", "the quantile q (0.1)"),
    Detail("value", "number", "the q-quantile by linear interpolation (GenScope's rule)"),
    Detail("rule", "string", "the interpolation rule of value"),
    Detail("jiang", "number", "the ⌊qm⌋-th smallest value (Jiang et al. 2020)"),
    Detail("jiang_rule", "string", "the rule of jiang"),
)
OUTPUT_RESULT = (
    MARGIN_VALUES,
    LABELS,
    QUANTILES,
    Detail("quantile_rule", "string", "how the quantiles are interpolated"),
    Detail("p10", "object", "the 10th percentile by both conventions", fields=P10_FIELDS),
    Detail("mean", "number", "mean output margin (logit units)"),
    Detail("fraction_negative", "number", "fraction of examples with margin ≤ 0 (train error)"),
    PER_CLASS,
    SAMPLE,
)


@measure(
    "margin.output",
    group="margins",
    direction=HIGHER_IS_BETTER,
    source="Bartlett, Foster & Telgarsky 2017, §2 (margin operator)",
    result=OUTPUT_RESULT,
)
def margin_output(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Output margin f(x)_y − max_{j≠y} f(x)_j on the logits, per training example.

    Bartlett, Foster & Telgarsky (2017), §2: M(v, y) = v_y − max_{i≠y} v_i. Reports the
    per-example values, their quantiles (``quantile_rule``: linear interpolation) and a
    per-class breakdown; ``p10`` also by the rule of Jiang et al. (2020), the ⌊m/10⌋-th smallest
    margin, which the margin-normalised measures of that paper use.
    """
    logits = ctx.train_logits()
    margins = output_margins(logits, ctx.y_train)
    q = quantiles(margins)
    return {
        "value": q["p50"],
        "values": margins.double().cpu(),
        "labels": ctx.y_train.cpu(),
        "quantiles": q,
        "quantile_rule": QUANTILE_RULE,
        "p10": quantile_conventions(margins, 0.1),
        "mean": float(margins.double().mean()),
        "fraction_negative": float((margins <= 0).double().mean()),
        "per_class": per_class(margins, ctx.y_train, ctx.num_classes),
        "sample": {"size": int(margins.numel()), "whole_set": True, "split": "train"},
    }


# --- parameters ---------------------------------------------------------------------------

ALL_LAYER_PARAMS = (
    Param("max_iter", int, 100, "solver iterations per example at most", min=1, max=10_000),
    Param("tol", float, 1e-3, "stop when the best norm changes less than this (relative)", 0, 1),
    Param("patience", int, 5, "iterations without relative change before stopping", 1, 1000),
    Param("classes", int, 3, "wrong classes linearised per step (DeepFool's choice)", 1, 1000),
    Param(
        "overshoot", float, 0.01, "linearised target margin −κ, fraction of the clean margin", 0, 1
    ),
    Param(
        "batch_size",
        int,
        0,
        "examples optimised together; 0 = from the perturbation size",
        0,
        100_000,
    ),
)


def _resolve(spec: tuple[Param, ...], given: dict[str, Any], measure_id: str) -> dict[str, Any]:
    """Defaults with ``given`` applied, typed and range-checked (BadParameter otherwise)."""
    by_name = {p.name: p for p in spec}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise BadParameter(
            f"{measure_id} has no parameter {unknown[0]!r} (its parameters: {', '.join(by_name)})",
            {"param": f"{measure_id}.{unknown[0]}"},
        )
    out = {p.name: p.default for p in spec}
    for name, raw in given.items():
        out[name] = by_name[name].coerce(raw, measure_id)
    return out


def model_graph(ctx: MeasureContext) -> LayerGraph:
    """The model's :class:`~genscope.graph.LayerGraph`, built once per analysis."""
    if "layer_graph" not in ctx.cache:
        if not ctx.loaded.functional:
            raise UnsupportedModel(
                "margins that perturb hidden layers need the model's graph, which TorchScript "
                "modules do not expose; export the model with torch.export.save or upload its "
                "state dict with an architecture"
            )
        ctx.cache["layer_graph"] = layer_graph(ctx.model, ctx.x_train[:1])
    return ctx.cache["layer_graph"]


# --- margin.all_layer ---------------------------------------------------------------------


def all_layer_margins(ctx: MeasureContext, **params: Any) -> dict[str, Any]:
    """All-layer margins m_F (Wei & Ma 2020, eq. (2.1)) of every example of
    ``ctx.margin_sample()``, computed once per analysis and parameter set (``ctx.cache``).

    Args:
        ctx: the analysis context.
        **params: solver parameters (``max_iter``, ``tol``, ``patience``, ``classes``,
            ``overshoot``, ``batch_size``); see :func:`solve_all_layer`.

    Returns:
        ``values`` (float64 per example, 0 for misclassified, NaN where unconfirmed),
        ``correct``, ``confirmed`` (bool tensors), ``points`` (names), ``shares`` ((n, points)
        share of ‖δ‖² per point), ``iterations``, ``unconfirmed`` (count), ``sample``
        (the :class:`~genscope.measures.context.Sample`), ``params``.

    Raises:
        BadParameter: an unknown or out-of-range parameter.
        UnsupportedModel: TorchScript, or a model whose graph cannot be captured.
    """
    p = _resolve(ALL_LAYER_PARAMS, params, "margin.all_layer")
    key = "all_layer:" + ",".join(f"{k}={p[k]}" for k in sorted(p))
    if key in ctx.cache:
        return ctx.cache[key]
    graph = model_graph(ctx)
    sample = ctx.margin_sample()
    result = solve_all_layer(graph, sample.x, sample.y, progress=ctx.progress, **p)
    out = {
        "values": result.values,
        "correct": result.correct,
        "confirmed": result.confirmed,
        "points": result.points,
        "shares": result.shares,
        "iterations": result.iterations,
        "unconfirmed": result.unconfirmed,
        "sample": sample,
        "params": p,
    }
    ctx.cache[key] = out
    return out


def _point_details(graph: LayerGraph) -> list[dict[str, Any]]:
    return [
        {
            "name": layer.name,
            "kind": layer.kind,
            "after": list(layer.ops),
            "shape": list(layer.output_shape),
        }
        for layer in graph.layers
    ]


def _loads(points: list[str], shares: torch.Tensor, ok: torch.Tensor) -> list[dict[str, Any]]:
    mean = shares[ok].mean(0) if bool(ok.any()) else torch.full((len(points),), math.nan)
    return [{"point": name, "mean_share": float(v)} for name, v in zip(points, mean, strict=True)]


LOADS = Detail(
    "loads",
    "array",
    "per perturbation point: mean share ‖δ_i‖² / ‖δ‖² at the optimum (where the net is fragile)",
    per="layer",
    fields=(
        Detail("point", "string", "the perturbation point (layer-function output or input)"),
        Detail("mean_share", "number", "mean share of ‖δ‖² over the confirmed examples"),
    ),
)
ALL_LAYER_RESULT = (
    Detail(
        "values",
        "array",
        "all-layer margin m_F(x, y) of each example (Wei & Ma 2020, eq. (2.1); norm of the "
        "relative perturbation δ): 0 if misclassified, null where no flip was confirmed",
        per="example",
        labels="labels",
    ),
    LABELS,
    QUANTILES,
    Detail("mean", "number", "mean of the finite m_F"),
    Detail("mean_inverse_square", "number", "mean of 1/m_F² over the confirmed correct examples"),
    Detail("fraction_misclassified", "number", "fraction of the sample misclassified (m_F = 0)"),
    Detail("unconfirmed", "integer", "correct examples whose flip could not be confirmed"),
    Detail(
        "points",
        "array",
        "the perturbation points, in forward order",
        per="layer",
        fields=(
            Detail("name", "string", "the layer function's name"),
            Detail("kind", "string", "its affine kind (linear, conv...)"),
            Detail("after", "array", "the operations it includes", per="item"),
            Detail("shape", "array", "its output shape per example", per="item"),
        ),
    ),
    LOADS,
    PER_CLASS,
    Detail(
        "solver",
        "object",
        "what the minimum-norm solver did",
        fields=(
            Detail("iterations_mean", "number", "mean solver iterations per correct example"),
            Detail("iterations_max", "integer", "most iterations of one example"),
            Detail("method", "string", "the solver's method in words"),
        ),
    ),
    SAMPLE,
)


@measure(
    "margin.all_layer",
    group="margins",
    params=ALL_LAYER_PARAMS,
    result=ALL_LAYER_RESULT,
    direction=HIGHER_IS_BETTER,
    source="Wei & Ma 2020 (ICLR), §2, eq. (2.1); convention of measures.md",
    cost="moderate",
    requires=["functional"],
)
def margin_all_layer(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """All-layer margin m_F(x, y) = min ‖δ‖ s.t. argmax F(x, δ) ≠ y, per example.

    Wei & Ma (2020), eq. (2.1), with the perturbed network h_i = f_i(h_{i−1}) + δ_i ‖h_{i−1}‖ on
    the layer functions of measures.md; 0 for misclassified examples. Reports per-example values,
    quantiles, the perturbation points, the mean share of ‖δ‖² each point takes at the optimum
    (where the net is fragile), and the count of values whose flip could not be confirmed.
    """
    out = all_layer_margins(ctx, **params)
    values, correct, confirmed = out["values"], out["correct"], out["confirmed"]
    sample: Sample = out["sample"]
    ok = correct & confirmed
    inv = (1.0 / values[ok] ** 2).mean() if bool(ok.any()) else torch.tensor(math.nan)
    q = quantiles(values)
    iters = out["iterations"][correct].double()
    return {
        "value": q["p50"],
        "values": values,
        "labels": sample.y.cpu(),
        "quantiles": q,
        "mean": float(values[torch.isfinite(values)].mean()) if values.numel() else None,
        "mean_inverse_square": float(inv),
        "fraction_misclassified": float((~correct).double().mean()),
        "unconfirmed": out["unconfirmed"],
        "points": _point_details(model_graph(ctx)),
        "loads": _loads(out["points"], out["shares"], ok),
        "per_class": per_class(values, sample.y, ctx.num_classes),
        "solver": {
            "iterations_mean": float(iters.mean()) if iters.numel() else 0.0,
            "iterations_max": int(iters.max()) if iters.numel() else 0,
            "method": "DeepFool steps to the linearised boundary, then projections of the "
            "origin onto it; the best flipping iterate shrunk to the boundary by bisection "
            "and re-checked",
        },
        "sample": _sample_block(sample),
    }


# --- margin.normalized ---------------------------------------------------------------------


def model_norms(ctx: MeasureContext) -> list[Any]:
    """Layer norms of the model (:func:`genscope.norms.layer_norms`), computed once."""
    if "layer_norms" not in ctx.cache:
        model_graph(ctx)  # TorchScript gets the graph's clear error
        ctx.cache["layer_norms"] = layer_norms(ctx.model, ctx.x_train[:1])
    return ctx.cache["layer_norms"]


NORMALIZED_RESULT = (
    Detail(
        "values",
        "array",
        "normalised margin γ · n / (R_A ‖X‖_F) of each example (Bartlett et al. 2017, Fig. 1)",
        per="example",
        labels="labels",
    ),
    LABELS,
    QUANTILES,
    PER_CLASS,
    Detail("spectral_complexity", "number", "R_A of Bartlett et al. 2017, eq. (1.2)"),
    Detail("log_spectral_complexity", "number", "ln R_A"),
    Detail("data_norm", "number", "‖X‖_F of the training inputs"),
    Detail(
        "layers",
        "array",
        "operator norms of each affine layer (BatchNorm folded): spectral, Frobenius, l1, l21",
        per="layer",
    ),
    Detail("conventions", "object", "the conventions of R_A (biases, BatchNorm, conv norms)"),
    SAMPLE,
)


@measure(
    "margin.normalized",
    group="margins",
    direction=HIGHER_IS_BETTER,
    result=NORMALIZED_RESULT,
    source="Bartlett, Foster & Telgarsky 2017, eq. (1.2) and Figure 1",
    cost="cheap",
    requires=["functional"],
)
def margin_normalized(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Output margin divided by the spectral complexity and the data scale: γ · n / (R_A ‖X‖_F).

    Bartlett, Foster & Telgarsky (2017): R_A of eq. (1.2) with reference matrices 0 and ρ_i = 1,
    BatchNorm folded, biases left out, conv spectral norms of the convolution operator; the
    margins normalised by R_A ‖X‖_F / n as in their Figure 1 (measures.md, "Margins").
    """
    norms = model_norms(ctx)
    log_ra = spectral_complexity(norms, log=True)
    x = ctx.x_train.double()
    data_norm = float(x.reshape(x.shape[0], -1).norm())
    n = int(x.shape[0])
    gamma = output_margins(ctx.train_logits(), ctx.y_train).double().cpu()
    scale = math.exp(log_ra) * data_norm / n if math.isfinite(log_ra) else math.inf
    values = gamma / scale if scale > 0 else torch.full_like(gamma, math.nan)
    q = quantiles(values)
    return {
        "value": q["p50"],
        "values": values,
        "labels": ctx.y_train.cpu(),
        "quantiles": q,
        "per_class": per_class(values, ctx.y_train, ctx.num_classes),
        "spectral_complexity": math.exp(log_ra) if math.isfinite(log_ra) else None,
        "log_spectral_complexity": log_ra if math.isfinite(log_ra) else None,
        "data_norm": data_norm,
        "layers": [layer.to_dict() for layer in norms],
        "conventions": {
            "biases": "left out",
            "batchnorm": "folded into the preceding affine map",
            "conv_spectral_norm": "convolution operator at the actual input shape",
            "l21": "of the operator (unrolled for convolutions)",
            "reference_matrices": "0",
        },
        "sample": {"size": n, "whole_set": True, "split": "train"},
    }


# --- margin.hidden -------------------------------------------------------------------------

HIDDEN_EPS = 1e-6


def hidden_margins(
    graph: LayerGraph, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> dict[str, Any]:
    """First-order margins d = (f_i − f_j) / sqrt(ε + ‖∇_h (f_i − f_j)‖²) at the input and at
    every layer-function output h (Jiang, Krishnan, Mobahi & Bengio 2019, eq. (3), ε = 1e-6),
    i the true class and j the top wrong class (the predicted class when misclassified, so the
    margin is negative), and the total variation ν(h) = sqrt(Σ_k Var_j h_{j,k}) (their eq. (4),
    population variance over the examples, without the extra 1/n of the released code).

    Returns:
        ``margins`` ((n, points) raw margins), ``variation`` (per point), ``points`` (names).
    """
    points = ["input", *graph.points]
    rows: list[torch.Tensor] = []
    sums: list[torch.Tensor | float] = [0.0] * len(points)
    squares: list[torch.Tensor | float] = [0.0] * len(points)
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        b = xb.shape[0]
        with torch.enable_grad():
            xin = xb.detach().clone().requires_grad_(True)
            zeros = [
                xb.new_zeros((b, *layer.output_shape), requires_grad=True) for layer in graph.layers
            ]
            record: dict[int, torch.Tensor] = {}
            logits = graph(xin, zeros, scaled=False, record=record)
            diff = output_margins(logits, yb)
            grads = torch.autograd.grad(diff.sum(), [xin, *zeros])
        sq = torch.stack([g.reshape(b, -1).double().pow(2).sum(1) for g in grads], dim=1)
        rows.append((diff.detach().double()[:, None] / torch.sqrt(HIDDEN_EPS + sq)).cpu())
        values = [xb, *[record[i] for i in range(len(graph.layers))]]
        for k, h in enumerate(values):
            flat = h.detach().reshape(b, -1).double()
            sums[k] = sums[k] + flat.sum(0)
            squares[k] = squares[k] + flat.pow(2).sum(0)
    n = float(x.shape[0])
    variation = torch.tensor(
        [
            float(((sq / n) - (s / n) ** 2).clamp_min(0).sum().sqrt())  # type: ignore[union-attr]
            for s, sq in zip(sums, squares, strict=True)
        ],
        dtype=torch.float64,
    )
    return {"margins": torch.cat(rows), "variation": variation, "points": points}


def signature(values: torch.Tensor) -> dict[str, float | None]:
    """Q1, Q2, Q3 and the fences Q3 + 1.5 IQR, Q1 − 1.5 IQR (Jiang et al. 2019, §3.2)."""
    q = quantiles(values)
    q1, q2, q3 = q["p25"], q["p50"], q["p75"]
    if q1 is None or q3 is None:
        return {"q1": None, "q2": None, "q3": None, "upper_fence": None, "lower_fence": None}
    iqr = q3 - q1
    return {
        "q1": q1,
        "q2": q2,
        "q3": q3,
        "upper_fence": q3 + 1.5 * iqr,
        "lower_fence": q1 - 1.5 * iqr,
    }


SIGNATURE_FIELDS = (
    Detail("q1", "number", "first quartile of the normalised margins"),
    Detail("q2", "number", "median"),
    Detail("q3", "number", "third quartile"),
    Detail("upper_fence", "number", "Q3 + 1.5 IQR"),
    Detail("lower_fence", "number", "Q1 − 1.5 IQR"),
)
HIDDEN_RESULT = (
    Detail("headline_point", "string", "the point whose median is the value"),
    Detail(
        "layers",
        "array",
        "per point (input first): total variation, signature, raw quantiles",
        per="layer",
        fields=(
            Detail("point", "string", "the point's name"),
            Detail("total_variation", "number", "ν(h) = sqrt(Σ_k Var h_k) (Jiang et al. 2019)"),
            Detail(
                "signature",
                "object",
                "quartile signature of the normalised margins",
                fields=SIGNATURE_FIELDS,
            ),
            Detail(
                "raw_quantiles",
                "object",
                "quantiles of the margins before normalisation",
                fields=QUANTILE_FIELDS,
            ),
        ),
    ),
    Detail(
        "values",
        "array",
        "normalised first-order margin d̂ of each example (rows) at each point (columns, as "
        "points), Jiang et al. 2019, eqs. (3)-(4)",
        per="example",
        labels="labels",
    ),
    LABELS,
    Detail("points", "array", "names of the points, input first", per="layer"),
    SAMPLE,
)


@measure(
    "margin.hidden",
    group="margins",
    direction=HIGHER_IS_BETTER,
    result=HIDDEN_RESULT,
    source="Jiang, Krishnan, Mobahi & Bengio 2019 (ICLR), eqs. (3)-(4), §3.2",
    cost="moderate",
    requires=["functional"],
)
def margin_hidden(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """First-order hidden-layer margins, normalised by the total variation, per layer.

    Jiang et al. (2019): d̂ = (f_i − f_j) / (sqrt(ε + ‖∇_h(f_i − f_j)‖²) · ν(h)) at the input and
    at every layer-function output, with the quartile signature (Q1, Q2, Q3, upper and lower
    fences) per layer. Headline value: the median at the last hidden layer-function output.
    Misclassified examples keep their negative margins (the released code's choice).
    """
    graph = model_graph(ctx)
    out = hidden_margins(graph, ctx.x_train, ctx.y_train, ctx.options.batch_size)
    margins, variation = out["margins"], out["variation"]
    normalized = margins / variation.clamp_min(1e-300)[None, :]
    layers = []
    for k, name in enumerate(out["points"]):
        layers.append(
            {
                "point": name,
                "total_variation": float(variation[k]),
                "signature": signature(normalized[:, k]),
                "raw_quantiles": quantiles(margins[:, k]),
            }
        )
    head = len(out["points"]) - 2 if len(out["points"]) > 2 else len(out["points"]) - 1
    return {
        "value": layers[head]["signature"]["q2"],
        "headline_point": out["points"][head],
        "layers": layers,
        "values": normalized,
        "labels": ctx.y_train.cpu(),
        "points": out["points"],
        "sample": {"size": int(margins.shape[0]), "whole_set": True, "split": "train"},
    }


# --- margin.homogeneous --------------------------------------------------------------------


def homogeneous_margins(
    margins: torch.Tensor, params: dict[str, torch.Tensor], degree: int, layer_weights: list[str]
) -> dict[str, Any]:
    """Normalised margins of an L-homogeneous network (Lyu & Li 2020, §3; their code's
    ``q_bar_min`` and ``q_bar2_min``).

    q_n / ‖θ‖^L for every example (sorted ascending: the lexicographic view of Nacson et al.
    2019; ``order`` holds the examples' indices in that order), the normalised margin
    q_min / ‖θ‖^L, and q_min / Π_l ‖θ_l‖ with θ_l the weights of affine layer l. The first is
    invariant to θ → cθ; the second also to layer-wise rescaling (W_l · c, W_{l+1} / c), which
    leaves the function unchanged but changes ‖θ‖.
    """
    q = margins.double().cpu()
    log_rho = 0.5 * math.log(sum(float(v.double().pow(2).sum()) for v in params.values()))
    log_prod = sum(math.log(float(params[w].double().norm())) for w in layer_weights)
    ordered = torch.sort(q)
    sorted_values = ordered.values * math.exp(-degree * log_rho)
    q_min = float(q.min()) if q.numel() else math.nan
    return {
        "value": q_min * math.exp(-degree * log_rho),
        "layerwise": q_min * math.exp(-log_prod),
        "sorted": sorted_values,
        "order": ordered.indices,
        "parameter_norm": math.exp(log_rho),
        "degree": degree,
    }


HOMOGENEOUS_RESULT = (
    Detail("homogeneous", "boolean", "whether the network is detected as positively homogeneous"),
    Detail("degree", "integer", "its degree L (number of affine layers)"),
    Detail("parameter_norm", "number", "‖θ‖₂ over all parameters"),
    Detail(
        "normalized_layerwise",
        "number",
        "q_min / Π_l ‖W_l‖ (invariant to layer-wise rescaling); null if not every layer counted",
    ),
    Detail(
        "sorted_values",
        "array",
        "q_n / ‖θ‖^L of every example, ascending (Nacson et al. 2019); labels in the same order",
        per="example",
        labels="labels",
    ),
    Detail(
        "labels",
        "array",
        "class label of each example, in the (sorted) order of sorted_values; the split is "
        "sample.split",
        per="example",
    ),
    QUANTILES,
    Detail("fraction_negative", "number", "fraction of examples with margin ≤ 0"),
    SAMPLE,
)


@measure(
    "margin.homogeneous",
    group="margins",
    direction=HIGHER_IS_BETTER,
    result=HOMOGENEOUS_RESULT,
    source="Lyu & Li 2020 (ICLR), §3 (normalized margin); Nacson et al. 2019 (ICML)",
    cost="cheap",
)
def margin_homogeneous(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Normalised margin q_min / ‖θ‖^L of a positively homogeneous network.

    Lyu & Li (2020), §3: for an L-homogeneous Φ (bias-free ReLU nets, L = number of affine
    layers), γ̄ = min_n q_n / ‖θ‖₂^L with q_n the output margin; the sorted vector q_n / ‖θ‖^L is
    the lexicographic view of Nacson et al. (2019). Networks not detected as homogeneous get no
    value and the reason.
    """
    h = homogeneity(ctx.model)
    if not h.homogeneous or h.degree is None:
        return {"value": None, "homogeneous": False, "reason": f"not homogeneous: {h.reason}"}
    margins = output_margins(ctx.train_logits(), ctx.y_train)
    named = ctx.params()
    weights = [f"{layer.name}.weight" for layer in affine_layers(ctx.model)]
    weights = [w for w in weights if w in named]
    out = homogeneous_margins(margins, named, h.degree, weights)
    return {
        "value": out["value"],
        "homogeneous": True,
        "degree": h.degree,
        "reason": h.reason,
        "parameter_norm": out["parameter_norm"],
        "normalized_layerwise": out["layerwise"] if len(weights) == h.degree else None,
        "sorted_values": out["sorted"],
        "labels": ctx.y_train.cpu()[out["order"]],
        "quantiles": quantiles(out["sorted"]),
        "fraction_negative": float((margins <= 0).double().mean()),
        "sample": {"size": int(margins.numel()), "whole_set": True, "split": "train"},
    }


# --- margin.robust -------------------------------------------------------------------------

MAX_EPS = 64  # each radius costs a PGD attack over the sample

ROBUST_PARAMS = (
    Param("eps", str, "0.01,0.03,0.1,0.3", "radii at which robust accuracy is reported"),
    Param("linf_steps", int, 20, "PGD steps per radius for the L∞ radius", 1, 10_000),
    Param("linf_depth", int, 10, "bisection steps on the L∞ radius", 1, 60),
    Param(
        "attack_classes",
        int,
        0,
        "competing classes attacked per example, highest logits first; 0 = every class",
        0,
        100_000,
    ),
    Param("all_layer", bool, True, "also compute the robust all-layer margin (input = layer 0)"),
    *ALL_LAYER_PARAMS,
)


def _parse_eps(raw: str) -> list[float]:
    try:
        eps = [float(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise BadParameter(
            f"margin.robust.eps must be comma-separated numbers, got {raw!r}"
        ) from None
    if not eps or any(not math.isfinite(e) or e < 0 for e in eps):
        raise BadParameter(f"margin.robust.eps must be non-negative finite numbers, got {raw!r}")
    if len(eps) > MAX_EPS:
        raise BadParameter(
            f"margin.robust.eps may list at most {MAX_EPS} radii, got {len(eps)}",
            {"param": "margin.robust.eps"},
        )
    return eps


def input_l2_margins(graph: LayerGraph, x: torch.Tensor, y: torch.Tensor, **solver: Any) -> Any:
    """Smallest L2 input perturbation ‖η‖ that flips each example: the solver of
    :func:`solve_all_layer` with one unscaled perturbation point, the input."""

    def forward(xb: torch.Tensor, deltas: list[torch.Tensor]) -> torch.Tensor:
        return graph(xb + deltas[0], None)

    return minimum_norm_flips(forward, x, y, [tuple(x.shape[1:])], ["input"], **solver)


def competing_classes(logits: torch.Tensor, y: torch.Tensor, classes: int = 0) -> torch.Tensor:
    """The wrong classes of each example, highest logit first: all of them (``classes`` = 0) or
    the first ``classes``. Shape (n, k)."""
    k = logits.shape[1] - 1 if classes <= 0 else min(classes, logits.shape[1] - 1)
    wrong = logits.detach().scatter(1, y[:, None], float("-inf"))
    return wrong.topk(k, dim=1).indices


def input_linf_margins(
    graph: LayerGraph,
    x: torch.Tensor,
    y: torch.Tensor,
    upper: torch.Tensor,
    steps: int = 20,
    depth: int = 10,
    classes: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smallest L∞ radius ε that flips each example: bisection on ε in [0, upper], with a
    targeted PGD attack (sign steps, Madry et al. 2018) on f_y − f_j for every competing class j
    at each radius (``classes`` = 0: all of them), so the radius is the minimum over classes.

    ``upper`` must be feasible (the L∞ norm of a flipping perturbation). Returns (radius,
    confirmed, resolution): each confirmed radius has a flipping perturbation within it, and the
    bisection interval left is ``resolution`` = upper / 2^depth wide. For an affine model the
    sign step is the exact minimiser of f_y − f_j over the box, so the radius is
    min_j (f_y − f_j) / ‖w_y − w_j‖₁ to the resolution; for other models it is the attack's
    estimate, an upper bound on the true radius.
    """
    lo = torch.zeros_like(upper)
    hi = upper.clone()
    ok = torch.isfinite(upper) & (upper > 0)
    x, y = x[ok], y[ok]
    lo_k, hi_k = lo[ok].to(x.device, x.dtype), hi[ok].to(x.device, x.dtype)
    with torch.no_grad():
        targets = competing_classes(graph(x, None), y, classes)
    for _ in range(depth):
        mid = (lo_k + hi_k) / 2
        flips = _linf_attack(graph, x, y, mid, steps, targets)
        hi_k = torch.where(flips, mid, hi_k)
        lo_k = torch.where(flips, lo_k, mid)
    hi[ok] = hi_k.double().cpu()
    width = torch.zeros_like(upper)
    width[ok] = (hi_k - lo_k).double().cpu()
    return hi, ok, width


def _linf_attack(
    graph: LayerGraph,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: torch.Tensor,
    steps: int,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Whether some competing class in ``targets`` (n, k) is reached within L∞ radius ``eps``:
    targeted sign-gradient PGD on f_y − f_j, one class after the other, on the examples not
    flipped yet."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for c in range(targets.shape[1]):
        idx = (~found).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xs, ys, ts = x[idx], y[idx], targets[idx, c : c + 1]
        e = eps[idx].reshape(shape)
        eta = torch.zeros_like(xs)
        hit = torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)
        for s in range(steps):
            with torch.enable_grad():
                eta = eta.detach().requires_grad_(True)
                logits = graph(xs + eta, None)
                g = logits.gather(1, ys[:, None]) - logits.gather(1, ts)
                (grad,) = torch.autograd.grad(g.sum(), eta)
            with torch.no_grad():
                hit |= output_margins(logits.detach(), ys) <= 0
                size = 2.5 / steps if s < steps // 2 else 0.5 / steps
                eta = torch.maximum(torch.minimum(eta - size * e * grad.sign(), e), -e)
        with torch.no_grad():
            hit |= output_margins(graph(xs + eta, None), ys) <= 0
        found[idx] = hit
    return found


ROBUST_RESULT = (
    Detail(
        "classes",
        "object",
        "which competing classes were attacked and what the radius is",
        fields=(
            Detail("attacked", "integer", "competing classes attacked per example"),
            Detail("of", "integer", "competing classes there are"),
            Detail("rule", "string", "which ones"),
            Detail("radius", "string", "what the radius is (exact or an upper bound)"),
        ),
    ),
    Detail(
        "l2",
        "object",
        "smallest L2 input perturbation ‖η‖₂ that flips each example",
        fields=(
            Detail(
                "values",
                "array",
                "the L2 radius of each example (input units; 0 if misclassified)",
                per="example",
                labels="labels",
            ),
            QUANTILES,
            Detail("unconfirmed", "integer", "correct examples without a confirmed flip"),
        ),
    ),
    Detail(
        "linf",
        "object",
        "smallest L∞ radius that flips each example (bisection with PGD)",
        fields=(
            Detail(
                "values",
                "array",
                "the L∞ radius of each example (input units; 0 if misclassified)",
                per="example",
                labels="labels",
            ),
            QUANTILES,
            Detail("unconfirmed", "integer", "correct examples without a confirmed flip"),
            Detail("resolution", "number", "width of the bisection interval left"),
        ),
    ),
    LABELS,
    Detail(
        "robust_accuracy",
        "array",
        "fraction of examples whose radius exceeds each eps",
        per="point",
        fields=(
            Detail("eps", "number", "the radius"),
            Detail("l2", "number", "robust accuracy at L2 radius eps"),
            Detail("linf", "number", "robust accuracy at L∞ radius eps"),
        ),
    ),
    SAMPLE,
    Detail(
        "all_layer",
        "object",
        "robust all-layer margin, the input as layer 0 (Wei & Ma 2020, §5)",
        fields=(
            Detail(
                "values",
                "array",
                "robust all-layer margin of each example (0 if misclassified)",
                per="example",
                labels="labels",
            ),
            QUANTILES,
            Detail("unconfirmed", "integer", "correct examples without a confirmed flip"),
            LOADS,
        ),
    ),
)


@measure(
    "margin.robust",
    group="margins",
    params=ROBUST_PARAMS,
    result=ROBUST_RESULT,
    direction=HIGHER_IS_BETTER,
    source="Wei & Ma 2020 (ICLR), §5 (robust all-layer margin); Madry et al. 2018 (PGD)",
    cost="expensive",
    requires=["functional"],
)
def margin_robust(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Smallest L2 and L∞ input perturbations that flip each example, and the robust all-layer
    margin with the input as layer 0.

    Both radii are minima over the competing classes: every wrong class is attacked
    (``attack_classes`` = 0), or the ``attack_classes`` with the highest logits, in which case the
    radius is the minimum over those classes only. L2: the minimum-norm solver of
    ``margin.all_layer`` on the input alone (unscaled), linearising every attacked class at each
    step. L∞: bisection on the radius with a targeted PGD attack per class at each radius (Madry
    et al. 2018), started from the L∞ norm of the L2 solution. For an affine model both are exact
    (min_j (f_y − f_j) / ‖w_y − w_j‖_q with q = 2 for L2 and q = 1 for L∞) to the solver's and
    the bisection's resolution; for other models they are the attacks' estimates, upper bounds on
    the true radii. Robust all-layer margin: Wei & Ma (2020), §5, with x ← x + δ_0 ‖x‖ as layer 0.
    0 for misclassified examples; the headline value is the median L2 radius.
    """
    eps = _parse_eps(params["eps"])
    solver = {p.name: params[p.name] for p in ALL_LAYER_PARAMS}
    graph = model_graph(ctx)
    sample = ctx.margin_sample()
    with torch.no_grad():
        num_classes = int(graph(sample.x[:1], None).shape[1])
    attacked = num_classes - 1
    if params["attack_classes"] > 0:
        attacked = min(attacked, params["attack_classes"])
    input_solver = {**solver, "classes": max(solver["classes"], attacked)}
    l2 = input_l2_margins(graph, sample.x, sample.y, keep_perturbations=True, **input_solver)
    ok = l2.correct & l2.confirmed
    upper = torch.full_like(l2.values, math.inf)
    if l2.perturbations is not None and bool(ok.any()):
        upper[ok] = l2.perturbations[ok].abs().amax(1)
    linf, linf_ok, width = input_linf_margins(
        graph,
        sample.x,
        sample.y,
        upper,
        params["linf_steps"],
        params["linf_depth"],
        attacked,
    )
    linf = torch.where(l2.correct, linf, torch.zeros_like(linf))
    linf[l2.correct & ~linf_ok] = math.nan
    resolution = float(width[linf_ok].max()) if bool(linf_ok.any()) else None
    competing = {
        "attacked": attacked,
        "of": num_classes - 1,
        "rule": "every competing class"
        if attacked == num_classes - 1
        else f"the {attacked} competing classes with the highest logits",
        "radius": "minimum over the attacked classes; exact for affine models, otherwise the "
        "attack's estimate (an upper bound on the true radius)",
    }
    out: dict[str, Any] = {
        "value": quantiles(l2.values)["p50"],
        "classes": competing,
        "l2": {
            "values": l2.values,
            "quantiles": quantiles(l2.values),
            "unconfirmed": l2.unconfirmed,
        },
        "linf": {
            "values": linf,
            "quantiles": quantiles(linf),
            "unconfirmed": int((l2.correct & ~linf_ok).sum()),
            "resolution": resolution,
        },
        "labels": sample.y.cpu(),
        "robust_accuracy": [
            {
                "eps": e,
                "l2": float((l2.values > e).double().mean()),
                "linf": float((linf > e).double().mean()),
            }
            for e in eps
        ],
        "sample": _sample_block(sample),
    }
    if params["all_layer"]:
        res = solve_all_layer(graph, sample.x, sample.y, input_layer=True, **solver)
        out["all_layer"] = {
            "values": res.values,
            "quantiles": quantiles(res.values),
            "unconfirmed": res.unconfirmed,
            "loads": _loads(res.points, res.shares, res.correct & res.confirmed),
        }
    return out
