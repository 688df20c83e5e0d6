"""Norm- and spectrum-based complexity measures (measures.md, "Bounds and complexity").

Layer norms come from :func:`genscope.norms.layer_norms` (BatchNorm folded, convolution operator
norms at the actual input shape). The log-space measures follow Jiang et al. 2020, "Fantastic
generalization measures and where to find them", eqs. 20-44 as implemented by Dziugaite et al.
2020 (measures-research §5.2): squared norms, margin γ = the 10th percentile of the training
output margins. The weight-spectrum metrics follow WeightWatcher (Martin & Mahoney 2021;
measures-research §13.2) on the raw (unfolded) weights, as WeightWatcher computes them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from genscope.errors import BadParameter, UnsupportedModel
from genscope.graph import _static_batch, affine_layers
from genscope.measures.context import MeasureContext
from genscope.measures.margins import output_margins
from genscope.measures.registry import LOWER_IS_BETTER, Param, measure
from genscope.measures.schema import Detail
from genscope.measures.stats import finite_or_reason, quantile_conventions
from genscope.network import Step, ViewInterpreter, network_view
from genscope.norms import LayerNorms, layer_norms

MARGIN_Q = Param("margin_quantile", float, 0.1, "quantile of training output margins = γ", 0.0, 1.0)

# --- shared helpers (also used by bounds.py) ---------------------------------------------------


def cached_layer_norms(ctx: MeasureContext) -> list[LayerNorms]:
    """:func:`genscope.norms.layer_norms` of the model, computed once per analysis."""
    key = "complexity:layer_norms"
    if key not in ctx.cache:
        norms = layer_norms(ctx.model, ctx.x_train[:1])
        if not norms:
            raise UnsupportedModel("the model has no affine (Linear or Conv) layers")
        ctx.cache[key] = norms
    return ctx.cache[key]


def margin_at_quantile(ctx: MeasureContext, q: float) -> tuple[float, torch.Tensor]:
    """γ = the q-quantile of the training output margins (linear interpolation), and all
    margins. Jiang et al. 2020 take the ⌊m/10⌋-th smallest (q = 0.1); measures.md uses q."""
    margins = output_margins(ctx.train_logits(), ctx.y_train).double().cpu()
    return float(torch.quantile(margins, q)), margins


def norms_table(norms: list[LayerNorms]) -> list[dict[str, Any]]:
    return [
        {
            "name": n.name,
            "kind": n.kind,
            "spectral": n.spectral,
            "frobenius": n.frobenius,
            "l1": n.l1,
            "l21": n.l21,
            "fan_in": n.fan_in,
            "fan_out": n.fan_out,
            "batchnorm_folded": n.batchnorm_folded,
        }
        for n in norms
    ]


def _margin_block(gamma: float, q: float, margins: torch.Tensor) -> dict[str, Any]:
    """γ and how it was taken: the quantile, its interpolation rule, and γ by the rule of Jiang
    et al. 2020 (the ⌊qm⌋-th smallest margin) beside it."""
    conventions = quantile_conventions(margins, q)
    return {
        "gamma": gamma,
        "quantile": q,
        "quantile_rule": conventions["rule"],
        "jiang": conventions["jiang"],
        "jiang_rule": conventions["jiang_rule"],
        "of": "training output margins f_y − max_{j≠y} f_j",
    }


# --- parameter count ---------------------------------------------------------------------------


PARAMS_RESULT = (
    Detail("weights", "integer", "parameters of the affine layers' weights (Jiang's ω)"),
    Detail("affine_layers", "integer", "number of affine layers"),
)


@measure(
    "complexity.params",
    result=PARAMS_RESULT,
    group="bounds",
    direction=LOWER_IS_BETTER,
    source="Jiang et al. 2020, eq. 20 (ω, number of parameters)",
)
def num_params(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Number of parameters; ``weights`` counts the affine layers' weights only (Jiang's ω)."""
    total = sum(p.numel() for p in ctx.params().values())
    layers = affine_layers(ctx.model, ctx.x_train[:1])
    weights = sum(math.prod(layer.shape) for layer in layers)
    return {"value": float(total), "weights": weights, "affine_layers": len(layers)}


# --- spectral and Frobenius norms ----------------------------------------------------------------


NORMS_TABLE = Detail(
    "layers",
    "array",
    "norms of each affine layer, BatchNorm folded (genscope.norms)",
    per="layer",
    fields=(
        Detail("name", "string", "the layer"),
        Detail("kind", "string", "its kind (linear, conv...)"),
        Detail("spectral", "number", "‖W‖₂ (conv: of the convolution operator)"),
        Detail("frobenius", "number", "‖W‖_F"),
        Detail("l1", "number", "Σ|W_ij|"),
        Detail("l21", "number", "‖Wᵀ‖_{2,1}"),
        Detail("fan_in", "integer", "input dimension"),
        Detail("fan_out", "integer", "output dimension"),
        Detail("batchnorm_folded", "boolean", "whether a BatchNorm was folded into it"),
    ),
)
MARGIN_BLOCK = Detail(
    "margin",
    "object",
    "γ, the output-margin quantile the ratios divide by, and how it was taken",
    fields=(
        Detail("gamma", "number", "γ: the margin_quantile-quantile of the output margins"),
        Detail("quantile", "number", "the quantile q"),
        Detail("quantile_rule", "string", "its interpolation rule"),
        Detail("jiang", "number", "γ by Jiang et al.'s rule, the ⌊qm⌋-th smallest margin"),
        Detail("jiang_rule", "string", "that rule"),
        Detail("of", "string", "which margins"),
    ),
)
MARGIN_REASON = Detail("margin_reason", "string", "why the margin variants are missing (γ ≤ 0)")
SPECTRAL_RESULT = (
    NORMS_TABLE,
    MARGIN_BLOCK,
    Detail("product", "number", "Π_i ‖W_i‖₂ (null if it overflows)"),
    Detail("sum", "number", "Σ_i ‖W_i‖₂"),
    Detail("log_sum_of_spec", "number", "ln d + (1/d) ln Π ‖W_i‖₂² (Jiang et al. eq. 35)"),
    Detail("fro_over_spec", "number", "Σ_i ‖W_i‖_F² / ‖W_i‖₂² (eq. 33)"),
    Detail("spec_orig", "number", "ln Π ‖W_i‖₂² + ln Σ ‖W_i‖_F²/‖W_i‖₂² (eq. 30)"),
    Detail("log_prod_of_spec_over_margin", "number", "ln Π ‖W_i‖₂² / γ² (eq. 31)"),
    Detail("log_sum_of_spec_over_margin", "number", "ln d + (1/d) ln(Π ‖W_i‖₂² / γ²) (eq. 34)"),
    Detail("spec_orig_over_margin", "number", "spec_orig − ln γ² (eq. 30 over the margin)"),
    MARGIN_REASON,
)


@measure(
    "complexity.spectral",
    result=SPECTRAL_RESULT,
    group="bounds",
    params=[MARGIN_Q],
    direction=LOWER_IS_BETTER,
    source="Jiang et al. 2020, eqs. 30-35 (log product / sum of squared spectral norms)",
)
def spectral_norms(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """log Π_i ‖W_i‖₂² (Jiang et al. 2020, eq. 32), with the sum, margin and ratio variants.

    Details: eq. 31 (log Π‖W_i‖₂²/γ²), eq. 33 (Σ ‖W_i‖_F²/‖W_i‖₂²), eq. 30 (spec-orig),
    eq. 34/35 (log of d times the geometric mean, with and without γ), and the plain product and
    sum Π ‖W_i‖₂, Σ ‖W_i‖₂. Operator norms with BatchNorm folded (genscope.norms).
    """
    norms = cached_layer_norms(ctx)
    d = len(norms)
    gamma, margins = margin_at_quantile(ctx, params["margin_quantile"])
    out: dict[str, Any] = {
        "layers": norms_table(norms),
        "margin": _margin_block(gamma, params["margin_quantile"], margins),
    }
    if any(n.spectral <= 0 for n in norms):
        out["reason"] = "a layer has spectral norm 0"
        return finite_or_reason(out, None, "log product")
    log_prod = sum(2 * math.log(n.spectral) for n in norms)
    fro_over_spec = sum(n.frobenius**2 / n.spectral**2 for n in norms)
    out.update(
        product=math.exp(log_prod / 2) if log_prod / 2 < 700 else None,
        sum=sum(n.spectral for n in norms),
        log_sum_of_spec=math.log(d) + log_prod / d,
        fro_over_spec=fro_over_spec,
        spec_orig=log_prod + math.log(fro_over_spec),
    )
    if gamma > 0:
        out["log_prod_of_spec_over_margin"] = log_prod - 2 * math.log(gamma)
        out["log_sum_of_spec_over_margin"] = math.log(d) + (log_prod - 2 * math.log(gamma)) / d
        out["spec_orig_over_margin"] = log_prod - 2 * math.log(gamma) + math.log(fro_over_spec)
    else:
        out["margin_reason"] = f"γ = {gamma:.4g} ≤ 0: the margin variants are undefined"
    return finite_or_reason(out, log_prod, "log product of spectral norms")


FROBENIUS_NORMS_RESULT = (
    NORMS_TABLE,
    MARGIN_BLOCK,
    Detail("product", "number", "Π_i ‖W_i‖_F (null if it overflows)"),
    Detail("sum", "number", "Σ_i ‖W_i‖_F"),
    Detail("param_norm", "number", "Σ_i ‖W_i‖_F² (Jiang et al. eq. 42)"),
    Detail("log_sum_of_fro", "number", "ln d + (1/d) ln Π ‖W_i‖_F² (eq. 39)"),
    Detail("log_prod_of_fro_over_margin", "number", "ln Π ‖W_i‖_F² / γ² (eq. 36)"),
    Detail("log_sum_of_fro_over_margin", "number", "ln d + (1/d) ln(Π ‖W_i‖_F² / γ²) (eq. 38)"),
    MARGIN_REASON,
)


@measure(
    "complexity.frobenius",
    result=FROBENIUS_NORMS_RESULT,
    group="bounds",
    params=[MARGIN_Q],
    direction=LOWER_IS_BETTER,
    source="Jiang et al. 2020, eqs. 36-39, 42 (Frobenius norms)",
)
def frobenius_norms(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """log Π_i ‖W_i‖_F² (Jiang et al. 2020, eq. 37), with the sum, margin and Σ‖W_i‖_F² forms.

    Details: eq. 36 (over γ²), eq. 38/39 (log of d times the geometric mean), eq. 42
    (param-norm Σ ‖W_i‖_F²), and Π ‖W_i‖_F, Σ ‖W_i‖_F. BatchNorm folded.
    """
    norms = cached_layer_norms(ctx)
    d = len(norms)
    gamma, margins = margin_at_quantile(ctx, params["margin_quantile"])
    out: dict[str, Any] = {
        "layers": norms_table(norms),
        "margin": _margin_block(gamma, params["margin_quantile"], margins),
    }
    if any(n.frobenius <= 0 for n in norms):
        out["reason"] = "a layer has Frobenius norm 0"
        return finite_or_reason(out, None, "log product")
    log_prod = sum(2 * math.log(n.frobenius) for n in norms)
    out.update(
        product=math.exp(log_prod / 2) if log_prod / 2 < 700 else None,
        sum=sum(n.frobenius for n in norms),
        param_norm=sum(n.frobenius**2 for n in norms),
        log_sum_of_fro=math.log(d) + log_prod / d,
    )
    if gamma > 0:
        out["log_prod_of_fro_over_margin"] = log_prod - 2 * math.log(gamma)
        out["log_sum_of_fro_over_margin"] = math.log(d) + (log_prod - 2 * math.log(gamma)) / d
    else:
        out["margin_reason"] = f"γ = {gamma:.4g} ≤ 0: the margin variants are undefined"
    return finite_or_reason(out, log_prod, "log product of Frobenius norms")


# --- path norm ---------------------------------------------------------------------------------


PATH_NORM_CONVENTION = (
    "BatchNorm folded into the affine map before it, then squared: weight (aW)², bias "
    "(ab + β − aμ)² with a = γ/sqrt(σ² + ε) (measures.md, Conventions); a BatchNorm not after "
    "an affine map is a per-channel layer a², (β − aμ)²"
)


def path_norm_squared(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, list[str]]:
    """Σ over input-output paths of Π_e w_e² = 1ᵀ f_{w²}(𝟙) (Jiang et al. 2020, eq. 44).

    Every affine weight and bias is squared and an all-ones input of the data shape is fed
    through the network's graph (Neyshabur et al. 2015; bneyshabur/generalization-bounds
    ``lp_path_norm``), read from :func:`genscope.network.network_view` whatever the model's
    form. BatchNorm follows :data:`PATH_NORM_CONVENTION`. Exact for ReLU networks of Linear/Conv
    layers without pooling; biases are paths from constant units. Returns the value and notes on
    where the identity is not exact.

    Raises:
        UnsupportedModel: an operation the view cannot interpret, or no affine layer.
    """
    view = network_view(model, torch.ones((2, *input_shape), dtype=_dtype(model)))
    if view.unknown:
        raise UnsupportedModel(
            f"the path norm cannot interpret these operations: {', '.join(view.unknown[:5])}"
        )
    if not view.affine:
        raise UnsupportedModel("the model has no affine (Linear or Conv) layers")
    notes: list[str] = []
    folded = {s.folds_into: s.batchnorm for s in view.by_role("batchnorm") if s.folds_into}
    for s in view.steps:
        if s.role == "pool" and "max" in s.kind:
            notes.append(f"{s.name}: max-pooling keeps one path, so the value undercounts")
        elif s.role == "pool":
            notes.append(f"{s.name}: average pooling weights enter unsquared (1/k, not 1/k²)")
        elif s.role == "activation" and s.kind != "relu":
            notes.append(f"{s.name}: {s.kind} is not the identity on positive inputs")

    def channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.reshape((1, -1) + (1,) * (like.dim() - 2))

    def on_step(step: Step, args: tuple[Any, ...]) -> Any:
        if step.role == "affine":
            w, b = step.weight.detach(), step.bias  # type: ignore[union-attr]
            b = None if b is None else b.detach()
            bn = folded.get(step.name)
            if bn is not None:
                a = bn.scale.detach()
                w = w * a.reshape((-1,) + (1,) * (w.dim() - 1))
                b = bn.shift.detach() + (0 if b is None else a * b)
            out = view.affine_call(step, args[0], w**2)
            return out if b is None else out + channel(b**2, out)
        if step.role == "batchnorm":
            x = args[0]
            if step.folds_into is None:
                bn = step.batchnorm
                x = channel(bn.scale.detach() ** 2, x) * x + channel(bn.shift.detach() ** 2, x)  # type: ignore[union-attr]
            if isinstance(step.node.meta.get("val"), (tuple, list)):
                return (x, x.new_empty(0), x.new_empty(0))
            return x
        return NotImplemented

    ones = torch.ones((1, *input_shape), dtype=_dtype(model))
    static = _static_batch(view.module)
    if static is not None:
        ones = ones.expand(static, *input_shape)
    with torch.no_grad():
        out = ViewInterpreter(view, on_step).run(ones)
    while isinstance(out, (tuple, list)):
        out = out[0]
    return float(out[:1].double().sum()), notes


def _dtype(model: nn.Module) -> torch.dtype:
    p0 = next(iter(model.parameters()), None)
    return p0.dtype if p0 is not None else torch.float64


PATH_NORM_RESULT = (
    Detail("sqrt", "number", "φ₂ = sqrt(Σ_paths Π_e w_e²) (Neyshabur et al. 2015)"),
    MARGIN_BLOCK,
    Detail("over_margin", "number", "path norm / γ² (Jiang et al. eq. 43); null if γ ≤ 0"),
    Detail("exact", "boolean", "whether the path norm is exact for this network"),
    Detail("batchnorm_convention", "string", "how BatchNorm enters the paths"),
)


@measure(
    "complexity.path_norm",
    result=PATH_NORM_RESULT,
    group="bounds",
    params=[MARGIN_Q],
    direction=LOWER_IS_BETTER,
    source="Jiang et al. 2020, eqs. 43-44; Neyshabur, Tomioka & Srebro 2015 (ℓ2 path norm)",
    requires=["functional"],
)
def path_norm(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Squared ℓ2 path norm Σ_paths Π_e w_e² (Jiang et al. 2020, eq. 44), with μ/γ² (eq. 43).

    Neyshabur, Tomioka & Srebro, "Norm-based capacity control in neural networks", COLT 2015,
    φ₂; Jiang et al. 2020 report it without the square root. ``sqrt`` holds φ₂ itself.
    """
    gamma, margins = margin_at_quantile(ctx, params["margin_quantile"])
    try:
        value, notes = path_norm_squared(ctx.model, tuple(ctx.data.input_shape))
    except UnsupportedModel as exc:
        return {"value": None, "reason": exc.message, "exact": False}
    out: dict[str, Any] = {
        "sqrt": math.sqrt(value) if value >= 0 else None,
        "margin": _margin_block(gamma, params["margin_quantile"], margins),
        "over_margin": value / gamma**2 if gamma > 0 else None,
        "notes": notes,
        "exact": not notes,
        "batchnorm_convention": PATH_NORM_CONVENTION,
    }
    return finite_or_reason(out, value, "the path norm")


# --- distance from initialization --------------------------------------------------------------


def _weight_names(ctx: MeasureContext) -> list[str]:
    params = ctx.params()
    names = []
    for layer in affine_layers(ctx.model, ctx.x_train[:1]):
        key = f"{layer.name}.weight"
        if key in params:
            names.append(key)
        elif layer.name in params:
            names.append(layer.name)
    return names


def load_init(ctx: MeasureContext, path: str, measure_id: str) -> dict[str, torch.Tensor]:
    """The parameters of an initial checkpoint, checked against the model's names and shapes."""
    from genscope.io.checkpoints import load_checkpoint

    init = load_checkpoint(path, arch=ctx.loaded.arch, arch_config=ctx.loaded.arch_config)
    theirs = {k: v.detach().to(ctx.device, ctx.dtype) for k, v in init.module.named_parameters()}
    ours = ctx.params()
    bad = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape] + [
        k for k in theirs if k not in ours
    ]
    if bad:
        raise BadParameter(
            f"{measure_id}: the init checkpoint does not match the model's parameters "
            f"(names or shapes differ: {bad[:5]})",
            {"param": f"{measure_id}.init"},
        )
    return theirs


INIT = Param(
    "init", str, None, "path of the checkpoint at initialization", optional=True, checkpoint=True
)


DISTANCE_RESULT = (
    Detail(
        "layers",
        "array",
        "per affine weight: ‖W − W⁰‖_F² and the squared spectral norm of the reshaped difference",
        per="layer",
        fields=(
            Detail("name", "string", "the weight"),
            Detail("frobenius_sq", "number", "‖W − W⁰‖_F²"),
            Detail("spectral_sq_reshaped", "number", "‖W − W⁰‖₂² of the (out, in·k·k) matrix"),
        ),
    ),
    Detail("dist_spec_init", "number", "Σ_i ‖W_i − W_i⁰‖₂² (Jiang et al. eq. 41)"),
    Detail("l2_all_params", "number", "‖w − w⁰‖₂ over all parameters"),
    Detail("relative", "number", "‖w − w⁰‖₂ / ‖w⁰‖₂"),
    Detail("init", "string", "the checkpoint at initialisation"),
    Detail("needs", "string", "the parameter that must be given when there is no value"),
)


@measure(
    "complexity.distance_from_init",
    result=DISTANCE_RESULT,
    group="bounds",
    params=[INIT],
    direction=LOWER_IS_BETTER,
    source="Jiang et al. 2020, eqs. 40-41; Nagarajan & Kolter 2019",
)
def distance_from_init(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Σ_i ‖W_i − W_i⁰‖_F² over the affine weights (Jiang et al. 2020, eq. 40, frobenius distance).

    Details: ‖w − w⁰‖₂ over all parameters, eq. 41 (Σ_i ‖W_i − W_i⁰‖₂², spectral norms of the
    reshaped (out, in·k·k) differences, as the reference code computes them), per layer.
    """
    if params["init"] is None:
        return {
            "value": None,
            "reason": "complexity.distance_from_init needs init=PATH, the checkpoint at "
            "initialization",
            "needs": "init",
        }
    init = load_init(ctx, params["init"], "complexity.distance_from_init")
    ours = ctx.params()
    layers = []
    for name in _weight_names(ctx):
        diff = (ours[name] - init[name]).double()
        rows = diff.reshape(diff.shape[0], -1)
        layers.append(
            {
                "name": name,
                "frobenius_sq": float((diff**2).sum()),
                "spectral_sq_reshaped": float(torch.linalg.matrix_norm(rows, ord=2)) ** 2,
            }
        )
    total = math.sqrt(sum(float(((ours[k] - init[k]).double() ** 2).sum()) for k in ours))
    out: dict[str, Any] = {
        "layers": layers,
        "dist_spec_init": sum(item["spectral_sq_reshaped"] for item in layers),
        "l2_all_params": total,
        "relative": total
        / max(math.sqrt(sum(float((v.double() ** 2).sum()) for v in init.values())), 1e-300),
        "init": params["init"],
    }
    return finite_or_reason(out, sum(item["frobenius_sq"] for item in layers), "the distance")


# --- weight spectra (WeightWatcher) -------------------------------------------------------------

EVALS_THRESH = 1e-5
MIN_EVALS = 10


def layer_eigenvalues(weight: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of WᵀW as WeightWatcher takes them: σ_i(W)², no 1/N; a conv kernel
    (out, in, k_h, k_w) gives one matrix per spatial tap, their eigenvalues pooled and halved
    (``conv2d_norm``, measures-research §13.2)."""
    w = weight.detach().double().cpu()
    if w.dim() == 2:
        return torch.linalg.svdvals(w) ** 2
    if w.dim() >= 3:
        taps = w.reshape(w.shape[0], w.shape[1], -1).permute(2, 0, 1)
        return (torch.linalg.svdvals(taps) ** 2).flatten() * 0.5
    raise ValueError(f"weight of shape {tuple(w.shape)} is not a matrix or a kernel")


def power_law_fit(evals: torch.Tensor) -> dict[str, float]:
    """Continuous power-law MLE with the KS-chosen xmin (Clauset, Shalizi & Newman 2009), as
    WeightWatcher's ``WWFit``: for each candidate xmin = λ_(i) (all but the largest),
    α_i = 1 + n_i / Σ_{λ≥λ_(i)} ln(λ/λ_(i)), D_i = max |1 − (λ/λ_(i))^{1−α_i} − k/n_i|
    (D_i = 1 when α_i ≤ 1); the xmin of the smallest D wins; σ = (α − 1)/sqrt(n_tail).

    >>> lam = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    >>> round(power_law_fit(lam)["alpha"], 4) > 1
    True
    """
    data = torch.sort(evals.double()).values
    n = data.numel()
    logs = torch.log(data)
    best: dict[str, float] | None = None
    for i in range(n - 1):
        k = n - i
        denom = float(logs[i:].sum() - k * logs[i])
        alpha = 1.0 + k / denom if denom > 0 else float("inf")
        if alpha > 1 and math.isfinite(alpha):
            theo = 1 - (data[i:] / data[i]) ** (1 - alpha)
            emp = torch.arange(k, dtype=torch.float64) / k
            dist = float((theo - emp).abs().max())
        else:
            dist = 1.0
        if best is None or dist < best["D"]:
            best = {
                "alpha": alpha,
                "D": dist,
                "xmin": float(data[i]),
                "n_tail": float(k),
                "sigma": (alpha - 1) / math.sqrt(k),
            }
    assert best is not None
    return best


def _spectral_layers(ctx: MeasureContext) -> list[tuple[str, torch.Tensor]]:
    params = ctx.params()
    out = []
    for name in _weight_names(ctx):
        w = params[name]
        if w.dim() == 2 or w.dim() == 4:
            out.append((name, w))
    return out


WEIGHT_SPECTRUM_RESULT = (
    Detail(
        "layers",
        "array",
        "per layer: eigenvalue count, log10 norms, stable rank and the power-law fit (α, its "
        "KS distance D, x_min, tail size, σ, α̂, log α-norm) or the reason there is none",
        per="layer",
    ),
    Detail("alpha_weighted", "number", "mean α̂ = α log10 λ_max"),
    Detail("log_norm", "number", "mean log10 Σλ"),
    Detail("log_spectral_norm", "number", "mean log10 λ_max"),
    Detail("stable_rank", "number", "mean Σλ / λ_max"),
    Detail("log_alpha_norm", "number", "mean log10 Σ λ^α"),
    Detail("fitted_layers", "integer", "layers with a power-law fit"),
    Detail("interpretation", "string", "how to read α"),
)


@measure(
    "complexity.weight_spectrum",
    result=WEIGHT_SPECTRUM_RESULT,
    group="bounds",
    params=[
        Param(
            "min_evals", int, MIN_EVALS, "layers with fewer eigenvalues are not fitted", 2, 10**6
        ),
    ],
    direction=LOWER_IS_BETTER,
    source="Martin & Mahoney 2021 (JMLR 22:165; Nat. Commun. 12:4122): WeightWatcher α, α̂",
)
def weight_spectrum(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Mean power-law exponent α of the layer ESDs (WeightWatcher), with α̂, stable rank, norms.

    Martin & Mahoney, "Implicit self-regularization in deep neural networks", JMLR 2021, and
    "Predicting trends in the quality of state-of-the-art neural networks without access to
    training or testing data", Nat. Commun. 2021: per layer the eigenvalues λ of WᵀW (no 1/N;
    values ≤ 1e-5 dropped), α by the power-law fit of :func:`power_law_fit`,
    α̂ = α log10 λ_max, log_norm = log10 Σλ, log_spectral_norm = log10 λ_max,
    log_alpha_norm = log10 Σ λ^α, stable_rank = Σλ / λ_max; model values are layer averages.
    Data-free; raw weights (WeightWatcher does not fold BatchNorm).
    """
    layers = []
    for name, w in _spectral_layers(ctx):
        evals = layer_eigenvalues(w)
        evals = evals[evals > EVALS_THRESH]
        entry: dict[str, Any] = {"name": name, "num_evals": int(evals.numel())}
        if evals.numel() == 0:
            entry["reason"] = "no eigenvalue above 1e-5"
            layers.append(entry)
            continue
        lam_max = float(evals.max())
        entry.update(
            log_norm=math.log10(float(evals.sum())),
            log_spectral_norm=math.log10(lam_max),
            stable_rank=float(evals.sum()) / lam_max,
        )
        if evals.numel() < params["min_evals"]:
            entry["alpha"] = None
            entry["reason"] = f"fewer than {params['min_evals']} eigenvalues: no power-law fit"
        else:
            fit = power_law_fit(evals)
            entry.update(fit)
            entry["alpha_weighted"] = fit["alpha"] * math.log10(lam_max)
            entry["log_alpha_norm"] = math.log10(float((evals ** fit["alpha"]).sum()))
        layers.append(entry)

    def mean_of(key: str) -> float | None:
        vals = [e[key] for e in layers if e.get(key) is not None and math.isfinite(e[key])]
        return sum(vals) / len(vals) if vals else None

    out: dict[str, Any] = {
        "layers": layers,
        "alpha_weighted": mean_of("alpha_weighted"),
        "log_norm": mean_of("log_norm"),
        "log_spectral_norm": mean_of("log_spectral_norm"),
        "stable_rank": mean_of("stable_rank"),
        "log_alpha_norm": mean_of("log_alpha_norm"),
        "fitted_layers": sum(1 for e in layers if e.get("alpha") is not None),
        "interpretation": "α in 2-6 is typical of well-trained layers; α > 8 fits are suspect",
    }
    if not layers:
        out["reason"] = "no Linear or Conv2d weight matrices"
    alpha = mean_of("alpha")
    if alpha is None and "reason" not in out:
        out["reason"] = "no layer had enough eigenvalues for a power-law fit"
    return finite_or_reason(out, alpha, "the mean α")
