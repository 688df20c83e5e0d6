"""Loss-landscape slices and checkpoint interpolation (measures.md, "Sharpness and smoothness").

``landscape.slice_1d`` / ``landscape.slice_2d``: training loss and accuracy on the plane
w + α d₁ (+ β d₂), d filter-normalized random directions (Li, Xu, Taylor, Studer & Goldstein,
"Visualizing the loss landscape of neural nets", NeurIPS 2018, §4) or the top Hessian
eigenvectors. ``landscape.interpolate``: the loss on the segment between two checkpoints of the
same architecture and its barrier height (Goodfellow et al. 2015; Frankle et al. 2020, §2).
"""

from __future__ import annotations

from typing import Any

import torch

from genscope.errors import BadParameter, UnsupportedModel
from genscope.measures.context import MeasureContext
from genscope.measures.registry import LOWER_IS_BETTER, Param, measure
from genscope.measures.schema import SAMPLE, Detail
from genscope.measures.sharpness import build_objective, sample_block
from genscope.measures.stats import finite_or_reason
from genscope.perturb import FlatParams, ParamDict

DIRECTION = Param(
    "direction",
    str,
    "random",
    "filter-normalized random directions, or the top Hessian eigenvectors",
    choices=("random", "hessian"),
)
EXTENT = Param(
    "extent", float, 1.0, "the grid spans [-extent, extent] along each direction", 0.0, 1e3
)
BIAS_BN = Param(
    "bias_bn", bool, False, "also move biases and BatchNorm parameters (Li et al.: copy of w)"
)
SAMPLES = Param("samples", int, 1024, "training examples used", 1, 10_000_000)


def filter_normalized_direction(
    params: ParamDict, generator: torch.Generator, bias_bn: bool = False
) -> ParamDict:
    """A Gaussian direction rescaled filter by filter to the norms of the weights.

    Li et al. 2018, §4: d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖θ_{i,j}‖ for every filter j (output
    index) of every layer i. One-dimensional parameters (biases, BatchNorm) get d = 0, or a copy
    of themselves with ``bias_bn`` (their reference code's two options).
    """
    out = {}
    for name, p in params.items():
        if p.dim() <= 1:
            out[name] = p.detach().clone() if bias_bn else torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.device, p.dtype)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-300)
        p_norm = p.detach().flatten(1).norm(dim=1)
        out[name] = d * (p_norm / d_norm).reshape((-1,) + (1,) * (p.dim() - 1))
    return out


def _directions(
    ctx: MeasureContext, flat: FlatParams, count: int, params: dict[str, Any], purpose: str
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """``count`` flat directions and a description of them."""
    weights = ctx.params()
    if params["direction"] == "random":
        gen = ctx.generator(purpose)
        dirs = [
            flat.flatten(filter_normalized_direction(weights, gen, params["bias_bn"]))
            for _ in range(count)
        ]
        return dirs, {"kind": "filter-normalized random (Li et al. 2018)"}
    try:
        from genscope.measures.curvature import hessian_top_eigenpairs
    except ImportError:
        raise UnsupportedModel(
            "Hessian eigen-directions need the curvature engine, which is not installed"
        ) from None
    values, vectors = hessian_top_eigenpairs(ctx, count)
    # Unit eigenvectors rescaled to the norm a filter-normalized direction has (the norm of
    # the multi-dimensional weights), so that the axes of both kinds of slice are comparable.
    scale = float(torch.sqrt(sum((p.double() ** 2).sum() for p in weights.values() if p.dim() > 1)))
    vecs = vectors.to(ctx.device, ctx.dtype)
    dirs = [vecs[:, i] / vecs[:, i].norm() * scale for i in range(count)]
    return dirs, {
        "kind": "top Hessian eigenvectors",
        "computed_on": "the Hessian sample (--hessian-samples)",
        "eigenvalues": [float(v) for v in values[:count]],
        "scaled_to_norm": scale,
    }


DIRECTIONS = Detail(
    "directions",
    "object",
    "the directions: kind; for Hessian eigen-directions also the eigenvalues, the sample and "
    "the norm they were scaled to; for a plane the cosine between the two",
    fields=(
        Detail("kind", "string", "filter-normalized random, or top Hessian eigenvectors"),
        Detail("computed_on", "string", "the sample the eigenvectors were computed on"),
        Detail("eigenvalues", "array", "their eigenvalues", per="eigenvalue"),
        Detail("scaled_to_norm", "number", "the norm each direction was scaled to"),
        Detail("cosine", "number", "cosine between the two directions of a plane"),
    ),
)
SLICE_1D_RESULT = (
    Detail(
        "alphas", "array", "step α along the direction, uniform on [-extent, extent]", per="point"
    ),
    Detail("loss", "array", "mean cross-entropy L(θ + α d) at each α", per="point"),
    Detail("accuracy", "array", "training accuracy at each α", per="point"),
    Detail("clean_loss", "number", "L(θ)"),
    DIRECTIONS,
    Detail("points", "integer", "grid points"),
    Detail("num_forward", "integer", "forward passes used"),
    SAMPLE,
)


@measure(
    "landscape.slice_1d",
    result=SLICE_1D_RESULT,
    group="sharpness",
    params=[
        DIRECTION,
        Param("points", int, 41, "grid points", 3, 1001),
        EXTENT,
        BIAS_BN,
        SAMPLES,
    ],
    direction=LOWER_IS_BETTER,
    source="Li et al. 2018, §4 (filter normalization), eq. for f(α) = L(θ + αδ)",
    cost="moderate",
    requires=["functional"],
)
def slice_1d(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Training loss and accuracy along one direction; value = the largest loss rise on it.

    Li, Xu, Taylor, Studer & Goldstein, "Visualizing the loss landscape of neural nets",
    NeurIPS 2018, §3-4: f(α) = L(θ + α d) with d filter-normalized, α on a uniform grid over
    [-extent, extent]; or d the top Hessian eigenvector (``direction="hessian"``).
    """
    objective, theta, sample = build_objective(ctx, params["samples"], 256)
    (d,), described = _directions(ctx, objective.flat, 1, params, "landscape.slice_1d")
    alphas = torch.linspace(-params["extent"], params["extent"], params["points"]).tolist()
    losses, accs = [], []
    for i, a in enumerate(alphas):
        loss, acc = objective.loss_and_accuracy(theta + a * d)
        losses.append(loss)
        accs.append(acc)
        ctx.progress((i + 1) / len(alphas), "slice")
    clean = objective.loss(theta)
    out: dict[str, Any] = {
        "alphas": alphas,
        "loss": losses,
        "accuracy": accs,
        "clean_loss": clean,
        "directions": described,
        "points": params["points"],
        "num_forward": objective.num_forward,
        "sample": sample_block(sample),
    }
    return finite_or_reason(out, max(losses) - clean, "the largest loss rise")


SLICE_2D_RESULT = (
    Detail("alphas", "array", "steps α along the first direction", per="point"),
    Detail("betas", "array", "steps β along the second direction", per="point"),
    Detail("loss", "array", "loss[i][j] = L(θ + α_i δ + β_j η) (mean cross-entropy)", per="point"),
    Detail("accuracy", "array", "accuracy[i][j] at (α_i, β_j)", per="point"),
    Detail("clean_loss", "number", "L(θ)"),
    DIRECTIONS,
    Detail("points", "integer", "grid points per axis"),
    Detail("num_forward", "integer", "forward passes used"),
    SAMPLE,
)


@measure(
    "landscape.slice_2d",
    result=SLICE_2D_RESULT,
    group="sharpness",
    params=[
        DIRECTION,
        Param("points", int, 21, "grid points per axis", 3, 201),
        EXTENT,
        BIAS_BN,
        SAMPLES,
    ],
    direction=LOWER_IS_BETTER,
    source="Li et al. 2018, §4: f(α, β) = L(θ + αδ + βη), filter-normalized δ, η",
    cost="expensive",
    requires=["functional"],
)
def slice_2d(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Training loss and accuracy on a plane of two directions; value = the largest loss rise.

    Li et al., NeurIPS 2018, §4: f(α, β) = L(θ + α δ + β η) on a points × points grid, δ and η
    filter-normalized random directions (or the top two Hessian eigenvectors). ``loss[i][j]``
    is at (alphas[i], betas[j]).
    """
    objective, theta, sample = build_objective(ctx, params["samples"], 256)
    (d1, d2), described = _directions(ctx, objective.flat, 2, params, "landscape.slice_2d")
    grid = torch.linspace(-params["extent"], params["extent"], params["points"]).tolist()
    losses, accs = [], []
    total = len(grid) ** 2
    for i, a in enumerate(grid):
        row_l, row_a = [], []
        for j, b in enumerate(grid):
            loss, acc = objective.loss_and_accuracy(theta + a * d1 + b * d2)
            row_l.append(loss)
            row_a.append(acc)
            ctx.progress((i * len(grid) + j + 1) / total, "plane")
        losses.append(row_l)
        accs.append(row_a)
    clean = objective.loss(theta)
    cosine = float((d1 @ d2) / (d1.norm() * d2.norm()).clamp_min(1e-300))
    out: dict[str, Any] = {
        "alphas": grid,
        "betas": grid,
        "loss": losses,
        "accuracy": accs,
        "clean_loss": clean,
        "directions": {**described, "cosine": cosine},
        "points": params["points"],
        "num_forward": objective.num_forward,
        "sample": sample_block(sample),
    }
    rise = max(max(r) for r in losses) - clean
    return finite_or_reason(out, rise, "the largest loss rise")


# --- interpolation -----------------------------------------------------------------------------


def _load_other(ctx: MeasureContext, path: str) -> tuple[ParamDict, dict[str, torch.Tensor]]:
    """Parameters and buffers of the other checkpoint, checked against this model's."""
    from genscope.io.checkpoints import load_checkpoint

    other = load_checkpoint(path, arch=ctx.loaded.arch, arch_config=ctx.loaded.arch_config)
    module = other.module.to(device=ctx.device, dtype=ctx.dtype)
    theirs = {k: v.detach() for k, v in module.named_parameters()}
    ours = ctx.params()
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    if missing or extra:
        raise BadParameter(
            "landscape.interpolate: the other checkpoint has a different architecture "
            f"(parameters missing there: {missing[:5]}; only there: {extra[:5]})",
            {"param": "landscape.interpolate.other"},
        )
    shapes = [
        f"{k}: {tuple(ours[k].shape)} vs {tuple(theirs[k].shape)}"
        for k in ours
        if ours[k].shape != theirs[k].shape
    ]
    if shapes:
        raise BadParameter(
            "landscape.interpolate: the other checkpoint's parameter shapes differ "
            f"({'; '.join(shapes[:5])})",
            {"param": "landscape.interpolate.other"},
        )
    buffers = {k: v.detach() for k, v in module.named_buffers()}
    return {k: theirs[k] for k in ours}, buffers


INTERPOLATE_RESULT = (
    Detail("t", "array", "interpolation coefficient t ∈ [0, 1] (0: this checkpoint)", per="point"),
    Detail("loss", "array", "mean cross-entropy at θ(t) = (1 − t) θ + t θ_other", per="point"),
    Detail("accuracy", "array", "accuracy at θ(t)", per="point"),
    Detail("barrier_t", "number", "the t of the largest excess over the chord"),
    Detail("accuracy_barrier", "number", "largest drop of accuracy below its chord"),
    Detail("distance", "number", "‖θ − θ_other‖₂"),
    Detail("other", "string", "the other checkpoint"),
    Detail("buffers", "string", "how buffers (BatchNorm statistics) are treated"),
    Detail("needs", "string", "the parameter that must be given when there is no value"),
    SAMPLE,
)


@measure(
    "landscape.interpolate",
    result=INTERPOLATE_RESULT,
    group="sharpness",
    params=[
        Param(
            "other",
            str,
            None,
            "path of the second checkpoint (same architecture)",
            optional=True,
            checkpoint=True,
        ),
        Param("points", int, 21, "points on the segment, ends included", 2, 1001),
        Param("split", str, "train", "data the loss is evaluated on", choices=("train", "test")),
        SAMPLES,
    ],
    direction=LOWER_IS_BETTER,
    source="Goodfellow, Vinyals & Saxe 2015; Frankle et al. 2020, §2 (instability = barrier)",
    cost="moderate",
    requires=["functional"],
)
def interpolate(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Loss on the straight line between this checkpoint and ``other``; value = barrier height.

    θ(t) = (1 − t) θ_this + t θ_other, t ∈ [0, 1] (Goodfellow, Vinyals & Saxe, "Qualitatively
    characterizing neural network optimization problems", ICLR 2015). Barrier height =
    max_t L(θ(t)) − ((1 − t) L(θ(0)) + t L(θ(1))) (Frankle, Dziugaite, Roy & Carbin, "Linear mode
    connectivity and the lottery ticket hypothesis", ICML 2020, §2). Floating-point buffers
    (BatchNorm running statistics) are interpolated too; they are not re-estimated, which
    inflates barriers of BatchNorm networks (Jordan et al. 2023, REPAIR).
    """
    if params["other"] is None:
        return {
            "value": None,
            "reason": "landscape.interpolate needs other=PATH, a checkpoint of the same "
            "architecture",
            "needs": "other",
        }
    theirs, their_buffers = _load_other(ctx, params["other"])
    ours = ctx.params()
    our_buffers = ctx.buffers()
    if params["split"] == "train":
        sample = ctx.train_sample(params["samples"], "sharpness")
        x, y, block = sample.x, sample.y, sample_block(sample)
    else:
        if ctx.x_test is None or ctx.y_test is None:
            raise BadParameter("landscape.interpolate: split=test but the dataset has no test set")
        x, y = ctx.x_test, ctx.y_test
        block = {"size": int(x.shape[0]), "whole_set": True, "split": "test"}
    ts = torch.linspace(0.0, 1.0, params["points"]).tolist()
    losses, accs = [], []
    for i, t in enumerate(ts):
        p = {k: (1 - t) * ours[k] + t * theirs[k] for k in ours}
        b = {
            k: ((1 - t) * v + t * their_buffers[k].to(v.device, v.dtype))
            if v.is_floating_point() and k in their_buffers
            else v
            for k, v in our_buffers.items()
        }
        total, correct = 0.0, 0.0
        with torch.no_grad():
            for j in range(0, x.shape[0], 256):
                out = torch.func.functional_call(ctx.model, (p, b), (x[j : j + 256],))
                total += float(
                    torch.nn.functional.cross_entropy(out, y[j : j + 256], reduction="sum")
                )
                correct += float((out.argmax(dim=1) == y[j : j + 256]).sum())
        losses.append(total / x.shape[0])
        accs.append(correct / x.shape[0])
        ctx.progress((i + 1) / len(ts), "interpolation")
    chord = [(1 - t) * losses[0] + t * losses[-1] for t in ts]
    excess = [lo - c for lo, c in zip(losses, chord, strict=True)]
    k = max(range(len(ts)), key=lambda i: excess[i])
    distance = float(torch.sqrt(sum(((ours[n] - theirs[n]).double() ** 2).sum() for n in ours)))
    out: dict[str, Any] = {
        "t": ts,
        "loss": losses,
        "accuracy": accs,
        "barrier_t": ts[k],
        "accuracy_barrier": max(
            (1 - t) * accs[0] + t * accs[-1] - a for t, a in zip(ts, accs, strict=True)
        ),
        "distance": distance,
        "other": params["other"],
        "buffers": "floating-point buffers interpolated, not re-estimated",
        "sample": block,
    }
    return finite_or_reason(out, max(excess), "the barrier height")
