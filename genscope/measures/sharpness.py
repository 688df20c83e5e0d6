"""Sharpness and input-smoothness measures (measures.md, "Sharpness and smoothness").

All of them use mean cross-entropy in eval mode on a training sample of ``samples`` examples
(default 1024, shared by the sharpness measures: the same seed gives the same sample) split into
batches of ``batch_size`` (128). Worst- and average-case sharpness are computed per batch and
averaged (the m-sharpness of Foret et al. 2021 and Andriushchenko et al. 2023); the spread over
batches is reported as ``stderr``. The search routines live in :mod:`genscope.perturb`.

The measures defined by a radius (``sharpness.sam``, ``sharpness.adaptive_worst``,
``sharpness.adaptive_average``: ρ; ``sharpness.keskar``: ε) also report ``rho_curve``, the
sharpness at the multiples of the radius listed in ``sweep`` (default 0.25, 0.5, 1, 2): each
radius costs one more run of the measure, counted in the curve's ``num_grad`` / ``num_forward``.
The point at the measure's own radius is its headline value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from genscope.errors import BadParameter, GenScopeError
from genscope.measures.context import MeasureContext, Sample
from genscope.measures.registry import LOWER_IS_BETTER, Param, measure
from genscope.measures.schema import LABELS, QUANTILES, RHO_CURVE, SAMPLE, Detail
from genscope.measures.stats import finite_or_reason, quantiles
from genscope.network import NetworkView, Step
from genscope.perturb import (
    AverageCase,
    FlatParams,
    LossFn,
    Objective,
    SigmaSearch,
    WorstCase,
    average_case,
    cross_entropy,
    mean_and_stderr,
    normalized_cross_entropy,
    sigma_search,
    worst_case,
)

SAMPLE_PURPOSE = "sharpness"


def _samples_param(default: int = 1024) -> Param:
    return Param(
        "samples",
        int,
        default,
        "training examples used (the whole set if it is smaller)",
        1,
        10_000_000,
    )


BATCH = Param("batch_size", int, 128, "examples per batch (m of m-sharpness)", 1, 100_000)
STEPS = Param("steps", int, 20, "gradient evaluations of the ascent", 1, 1000)
#: Most radii a sweep may list: each costs as much as the measure itself.
MAX_SWEEP = 16
SWEEP = Param(
    "sweep",
    str,
    "0.25,0.5,1,2",
    "multiples of the radius at which the sharpness is also reported (rho_curve), "
    "comma-separated; each costs one more run of the measure; empty: no sweep",
)


# --- radius sweeps -------------------------------------------------------------------------------


def parse_sweep(raw: str, measure_id: str) -> list[float]:
    """The multiples of the radius a sweep evaluates: ascending, without repeats, with 1 (the
    measure's own radius) always among them; empty when ``raw`` is blank (no sweep).

    >>> parse_sweep("2, 0.5,1,0.5", "sharpness.sam")
    [0.5, 1.0, 2.0]
    >>> parse_sweep("", "sharpness.sam")
    []
    """
    where = f"{measure_id}.sweep"
    try:
        multiples = {float(v) for v in raw.split(",") if v.strip()}
    except ValueError:
        raise BadParameter(
            f"{where} must be comma-separated numbers, got {raw!r}", {"param": where}
        ) from None
    if not multiples:
        return []
    if any(not math.isfinite(m) or m < 0 for m in multiples):
        raise BadParameter(
            f"{where} must be non-negative finite multiples, got {raw!r}", {"param": where}
        )
    multiples.add(1.0)
    if len(multiples) > MAX_SWEEP:
        raise BadParameter(
            f"{where} may list at most {MAX_SWEEP} multiples (the radius included), got "
            f"{len(multiples)}",
            {"param": where},
        )
    return sorted(multiples)


def radius_sweep(
    radius: float,
    multiples: list[float],
    own: tuple[float, float | None],
    at: Callable[[float, int], tuple[float, float | None]],
    name: str = "rho",
) -> dict[str, Any]:
    """The sharpness at ``multiples`` of ``radius``: ``own`` (value, stderr) at the radius
    itself (the measure's headline, so the curve passes through it exactly), ``at(r, k)`` at
    the others (k = 1, 2, ... counts them, for progress). A radius of 0 gives the one point."""
    if radius == 0:
        multiples = [1.0]
    rhos, values, errors = [], [], []
    computed = 0
    for m in multiples:
        if m == 1.0:
            value, stderr = own
        else:
            computed += 1
            value, stderr = at(m * radius, computed)
        rhos.append(m * radius)
        values.append(value)
        errors.append(stderr)
    return {
        "rho": rhos,
        "value": values,
        "stderr": errors,
        "multiples": list(multiples),
        "radius": name,
        "evaluated": computed,
    }


# --- shared plumbing ---------------------------------------------------------------------------


def build_objective(
    ctx: MeasureContext, samples: int | None, batch_size: int, loss_fn: LossFn = cross_entropy
) -> tuple[Objective, torch.Tensor, Sample]:
    """The sharpness objective on the shared training sample: (objective, flat θ, sample)."""
    params = ctx.params()
    flat = FlatParams(params)
    theta = flat.flatten(params).clone()
    sample = ctx.train_sample(samples, SAMPLE_PURPOSE)
    batches = [
        (sample.x[i : i + batch_size], sample.y[i : i + batch_size])
        for i in range(0, sample.n, batch_size)
    ]
    return Objective(ctx.functional, flat, batches, loss_fn), theta, sample


def sample_block(sample: Sample, batch_size: int | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"size": sample.n, "whole_set": sample.whole, "split": "train"}
    if batch_size is not None:
        block["batch_size"] = batch_size
        block["batches"] = math.ceil(sample.n / batch_size)
    return block


def _worst_case_batches(
    objective: Objective,
    theta: torch.Tensor,
    scale: torch.Tensor | None,
    rho: float,
    norm: str,
    steps: int,
    progress: Callable[[int, int], None] | None = None,
    accuracy_drop: bool = True,
) -> list[tuple[WorstCase, float | None]]:
    """The worst case of every batch at radius ``rho``, each with its accuracy drop (None when
    ``accuracy_drop`` is off: two forward passes per batch saved)."""
    c = torch.ones_like(theta) if scale is None else scale
    out: list[tuple[WorstCase, float | None]] = []
    nb = len(objective.batches)
    for b in range(nb):
        res = worst_case(objective, theta, scale, rho, norm, steps, batch=b)
        drop = None
        if accuracy_drop:
            drop = objective.accuracy(theta, b) - objective.accuracy(theta + c * res.z, b)
        out.append((res, drop))
        if progress is not None:
            progress(b + 1, nb)
    return out


def _worst_case_measure(
    ctx: MeasureContext,
    measure_id: str,
    params: dict[str, Any],
    norm: str,
    adaptive: bool,
    loss_fn: LossFn,
    loss_name: str,
) -> dict[str, Any]:
    objective, theta, sample = build_objective(
        ctx, params["samples"], params["batch_size"], loss_fn
    )
    scale = theta.abs() if adaptive else None
    multiples = parse_sweep(params["sweep"], measure_id)
    stages = 1 + sum(1 for m in multiples if m != 1.0)

    def report(done: int, nb: int, stage: int = 0) -> None:
        ctx.progress((stage + done / nb) / stages, f"batch {done}/{nb}")

    found = _worst_case_batches(
        objective, theta, scale, params["rho"], norm, params["steps"], report
    )
    nb = len(found)
    increases = [res.increase for res, _ in found]
    mean, se = mean_and_stderr(increases)
    out: dict[str, Any] = {
        "stderr": se,
        "stderr_over": "batches",
        "per_batch": increases,
        "clean_loss": sum(res.clean for res, _ in found) / nb,
        "worst_loss": sum(res.worst for res, _ in found) / nb,
        "accuracy_drop": sum(drop or 0.0 for _, drop in found) / nb,
        "norm": norm,
        "scale": "|w| (elementwise adaptive)" if adaptive else "1 (standard)",
        "loss": loss_name,
        "steps": params["steps"],
        "num_grad": objective.num_grad,
        "optimizer": "projected gradient ascent, Auto-PGD step schedule, zero init, best iterate",
        "sample": sample_block(sample, params["batch_size"]),
    }

    def at(rho: float, stage: int) -> tuple[float, float]:
        rows = _worst_case_batches(
            objective,
            theta,
            scale,
            rho,
            norm,
            params["steps"],
            lambda done, n: report(done, n, stage),
            accuracy_drop=False,
        )
        return mean_and_stderr([res.increase for res, _ in rows])

    if multiples:
        before = objective.num_grad
        out["rho_curve"] = radius_sweep(params["rho"], multiples, (mean, se), at)
        out["rho_curve"]["num_grad"] = objective.num_grad - before
    return finite_or_reason(out, mean, "the loss increase")


# --- worst case ---------------------------------------------------------------------------------


PER_BATCH = Detail(
    "per_batch", "array", "the loss increase of each batch of m examples", per="batch"
)
WORST_CASE_RESULT = (
    Detail("stderr", "number", "standard error of the mean over batches (null for one batch)"),
    Detail("stderr_over", "string", "what the standard error is over"),
    PER_BATCH,
    Detail("clean_loss", "number", "L(w), mean over batches (mean cross-entropy, nats)"),
    Detail("worst_loss", "number", "L(w + δ*) at the best perturbation found, mean over batches"),
    Detail("accuracy_drop", "number", "accuracy lost at δ*, mean over batches"),
    Detail("norm", "string", "the ℓp norm of the ball (l2 or linf)"),
    Detail("scale", "string", "the ball's scaling c: 1, or |w| (elementwise adaptive)"),
    Detail("loss", "string", "the loss maximised"),
    Detail("steps", "integer", "gradient evaluations of the ascent per batch"),
    Detail("num_grad", "integer", "gradient evaluations at the measure's own radius"),
    Detail("optimizer", "string", "the ascent"),
    SAMPLE,
    RHO_CURVE,
)


@measure(
    "sharpness.sam",
    result=WORST_CASE_RESULT,
    group="sharpness",
    params=[
        Param("rho", float, 0.05, "radius ρ of the ℓ2 ball", 0.0, 1e3),
        STEPS,
        _samples_param(),
        BATCH,
        SWEEP,
    ],
    direction=LOWER_IS_BETTER,
    source="Foret et al. 2021 (SAM), eq. 1: max_{‖ε‖₂≤ρ} L_S(w+ε) − L_S(w)",
    cost="moderate",
    requires=["functional"],
)
def sam_sharpness(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Worst-case loss increase in an ℓ2 ball of radius ρ around the weights (SAM sharpness).

    Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-aware minimization for efficiently improving
    generalization", ICLR 2021, eq. 1 (p = 2), per batch of m examples (their m-sharpness),
    maximised by projected gradient ascent with ``steps`` gradient evaluations (the first step is
    SAM's first-order ε̂ = ρ∇L/‖∇L‖). Not invariant to reparametrisation (Dinh et al. 2017).
    """
    return _worst_case_measure(
        ctx, "sharpness.sam", params, "l2", False, cross_entropy, "cross-entropy"
    )


@measure(
    "sharpness.adaptive_worst",
    result=WORST_CASE_RESULT,
    group="sharpness",
    params=[
        Param("rho", float, 0.001, "radius ρ of the adaptive ball ‖δ/|w|‖ ≤ ρ", 0.0, 100.0),
        Param("norm", str, "linf", "ℓp norm of the ball", choices=("linf", "l2")),
        Param("logit_normalize", bool, True, "cross-entropy on normalized logits"),
        STEPS,
        _samples_param(),
        BATCH,
        SWEEP,
    ],
    direction=LOWER_IS_BETTER,
    source="Andriushchenko et al. 2023, eq. 1 (S^max_ρ with c = |w|); Kwon et al. 2021 (ASAM)",
    cost="moderate",
    requires=["functional"],
)
def adaptive_worst(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Elementwise-adaptive worst-case sharpness max_{‖δ ⊙ |w|⁻¹‖_p ≤ ρ} L(w+δ) − L(w).

    Andriushchenko, Croce, Müller, Hein & Flammarion, "A modern look at the relationship between
    sharpness and generalization", ICML 2023, eq. 1 with c = |w| (their best-behaved setting:
    ℓ∞, ρ = 0.001, logit-normalized loss, m = 128, 20 steps); Kwon et al. 2021, eq. 5. Invariant
    to layer-wise (indeed any elementwise) rescaling that leaves the network function unchanged.
    """
    loss_fn, name = (
        (normalized_cross_entropy, "logit-normalized cross-entropy")
        if params["logit_normalize"]
        else (cross_entropy, "cross-entropy")
    )
    return _worst_case_measure(
        ctx, "sharpness.adaptive_worst", params, params["norm"], True, loss_fn, name
    )


# --- average case -------------------------------------------------------------------------------


AVERAGE_CASE_RESULT = (
    Detail("stderr", "number", "Monte-Carlo standard error of the mean loss increase"),
    Detail("stderr_over", "string", "what the standard error is over"),
    Detail("batch_std", "number", "standard deviation of the per-batch means"),
    PER_BATCH,
    Detail("clean_loss", "number", "L(w), mean over batches (mean cross-entropy, nats)"),
    Detail("draws", "integer", "noise draws per batch"),
    Detail("num_forward", "integer", "forward passes at the measure's own radius"),
    Detail("scale", "string", "the noise scaling c = |w|"),
    Detail("loss", "string", "the loss"),
    SAMPLE,
    RHO_CURVE,
)


@measure(
    "sharpness.adaptive_average",
    result=AVERAGE_CASE_RESULT,
    group="sharpness",
    params=[
        Param("rho", float, 0.1, "std multiplier ρ: δ ~ N(0, ρ² diag(w²))", 0.0, 100.0),
        Param("draws", int, 20, "noise draws per batch", 2, 10_000),
        _samples_param(),
        BATCH,
        SWEEP,
    ],
    direction=LOWER_IS_BETTER,
    source="Andriushchenko et al. 2023, eq. 2 (S^avg_ρ with c = |w|)",
    cost="moderate",
    requires=["functional"],
)
def adaptive_average(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Elementwise-adaptive average-case sharpness E_{δ~N(0,ρ² diag(w²))} L(w+δ) − L(w).

    Andriushchenko et al., ICML 2023, eq. 2 with c = |w|: per batch of m examples, ``draws``
    Gaussian draws; ``stderr`` is the Monte-Carlo standard error given the sample.
    """
    multiples = parse_sweep(params["sweep"], "sharpness.adaptive_average")
    objective, theta, sample = build_objective(ctx, params["samples"], params["batch_size"])

    def at(rho: float, _stage: int = 0) -> AverageCase:
        # a freshly seeded generator at every radius: the same draws, scaled (common random
        # numbers), so the curve's points differ by the radius only
        gen = ctx.generator("sharpness.adaptive_average")
        return average_case(objective, theta, theta.abs(), rho, params["draws"], gen)

    res = at(params["rho"])
    per_batch = res.increases.mean(dim=1)
    out: dict[str, Any] = {
        "stderr": res.stderr,
        "stderr_over": "noise draws",
        "batch_std": float(per_batch.std()) if per_batch.numel() > 1 else None,
        "per_batch": per_batch.tolist(),
        "clean_loss": sum(res.clean) / len(res.clean),
        "draws": params["draws"],
        "num_forward": objective.num_forward,
        "scale": "|w| (elementwise adaptive)",
        "loss": "cross-entropy",
        "sample": sample_block(sample, params["batch_size"]),
    }
    if multiples:
        before = objective.num_forward

        def point(rho: float, stage: int) -> tuple[float, float]:
            ctx.progress(stage / len(multiples), f"ρ = {rho:.4g}")
            other = at(rho)
            return other.mean, other.stderr

        out["rho_curve"] = radius_sweep(params["rho"], multiples, (res.mean, res.stderr), point)
        out["rho_curve"]["num_forward"] = objective.num_forward - before
    return finite_or_reason(out, res.mean, "the mean loss increase")


# --- PAC-Bayes flatness (σ search) --------------------------------------------------------------

SEARCH_PARAMS = [
    Param("draws", int, 10, "noise draws per σ at least", 1, 10_000),
    Param(
        "max_draws",
        int,
        256,
        "noise draws per σ at most; drawing stops once the stderr is at most tolerance / 2",
        1,
        100_000,
    ),
    Param("depth", int, 15, "bisection steps on [0, upper]", 1, 60),
    Param("target", float, 0.1, "accuracy drop the σ is searched for", 1e-4, 1.0),
    Param("tolerance", float, 0.01, "stop when the drop is this close to the target", 0.0, 1.0),
    Param("upper", float, 2.0, "upper end of the σ interval", 1e-8, 1e3),
    _samples_param(),
]


def sequential_mean(
    draw: Callable[[], float], min_draws: int, max_draws: int, stderr_limit: float
) -> tuple[float, float, int]:
    """Mean and standard error of ``draw()``, drawing until the stderr is at most
    ``stderr_limit`` (after ``min_draws`` at least) or ``max_draws`` draws are made.
    Returns (mean, stderr, draws)."""
    values = [draw() for _ in range(max(1, min_draws))]
    mean, se = mean_and_stderr(values)
    while len(values) < max_draws and not se <= stderr_limit:
        values.append(draw())
        mean, se = mean_and_stderr(values)
    return mean, se, len(values)


def search_sigma(
    draw_at: Callable[[float], float], clean: float, params: dict[str, Any]
) -> SigmaSearch:
    """The bisection on σ of Jiang et al. 2020 (appendix; Dziugaite et al. 2020 code) with the
    number of draws at each σ chosen from the tolerance: draws are added until the standard
    error of the accuracy (hence of the drop) is at most tolerance / 2, between ``draws`` and
    ``max_draws``. ``converged`` only when the drop is within ``tolerance`` of ``target`` and the
    stderr at the returned σ is at most tolerance / 2: otherwise the estimate cannot tell."""
    limit = params["tolerance"] / 2
    low, high = params["draws"], max(params["draws"], params["max_draws"])
    counts: list[int] = []

    def accuracy_under_noise(sigma: float) -> tuple[float, float]:
        mean, se, n = sequential_mean(lambda: draw_at(sigma), low, high, limit)
        counts.append(n)
        return mean, se

    search = sigma_search(
        accuracy_under_noise,
        clean,
        target=params["target"],
        tolerance=params["tolerance"],
        upper=params["upper"],
        depth=params["depth"],
    )
    for evaluation, n in zip(search.evaluations, counts, strict=True):
        evaluation["draws"] = n
    told = search.accuracy_stderr <= limit  # False for NaN (a single draw)
    return dataclasses.replace(search, converged=search.converged and told)


def pacbayes_sigma(
    ctx: MeasureContext, params: dict[str, Any], magnitude: bool, epsilon: float = 1e-3
) -> tuple[SigmaSearch, Sample, int]:
    """The σ (or σ') search of Jiang et al. 2020 on the shared sample, cached per parameters
    (:func:`search_sigma`: draws per σ chosen from the tolerance).

    Noise u ~ N(0, σ² I) on every parameter (std σ: the reference code's ``torch.normal(0, σ²)``
    is a bug, measures-research §5.3), or u_i ~ N(0, σ'² w_i² + ε²) when ``magnitude``.
    Returns the search, the sample, and the number of forward passes.
    """
    keys = ("samples", "draws", "max_draws", "depth", "target", "tolerance", "upper")
    key = ("pacbayes_sigma", magnitude, epsilon, *(params[k] for k in keys))
    if key in ctx.cache:
        return ctx.cache[key]
    objective, theta, sample = build_objective(ctx, params["samples"], 512)
    gen = ctx.generator("sharpness.pacbayes_mag" if magnitude else "sharpness.pacbayes")
    clean = objective.accuracy(theta)
    depth = params["depth"]
    calls = [0]
    std: dict[float, torch.Tensor] = {}  # the current σ's noise std only

    def draw_at(sigma: float) -> float:
        if sigma not in std:
            std.clear()
            calls[0] += 1
            ctx.progress(calls[0] / depth, f"σ = {sigma:.4g}")
            if magnitude:
                std[sigma] = torch.sqrt(sigma**2 * theta.double() ** 2 + epsilon**2).cpu()
            else:
                std[sigma] = torch.full(theta.shape, sigma, dtype=torch.float64)
        noise = torch.randn(theta.shape, generator=gen, dtype=torch.float64) * std[sigma]
        return objective.accuracy(theta + noise.to(theta.device, theta.dtype))

    search = search_sigma(draw_at, clean, params)
    result = (search, sample, objective.num_forward)
    ctx.cache[key] = result
    return result


def _flatness_result(
    search: SigmaSearch, sample: Sample, num_forward: int, params: dict[str, Any], name: str
) -> dict[str, Any]:
    out: dict[str, Any] = {
        name: search.sigma,
        "converged": search.converged,
        "bracket": [search.lower, search.upper],
        "accuracy_under_noise": search.accuracy,
        "accuracy_stderr": search.accuracy_stderr,
        "clean_accuracy": search.clean_accuracy,
        "evaluations": search.evaluations,
        "steps": len(search.evaluations),
        "draws": search.evaluations[-1]["draws"] if search.evaluations else 0,
        "draws_range": [params["draws"], max(params["draws"], params["max_draws"])],
        "stderr_limit": params["tolerance"] / 2,
        "convergence": "|drop − target| ≤ tolerance and stderr ≤ tolerance / 2 at the σ",
        "num_forward": num_forward,
        "sample": sample_block(sample),
    }
    if not search.converged:
        out["note"] = (
            f"no σ within {params['depth']} steps had a drop within {params['tolerance']} of "
            f"{params['target']} with a stderr at most {params['tolerance'] / 2} (stderr at the "
            f"reported σ: {search.accuracy_stderr:.3g}); the last midpoint is reported"
        )
    value = 1.0 / search.sigma**2 if search.sigma > 0 else math.inf
    return finite_or_reason(out, value, f"1/{name}²")


FLATNESS_COMMON = (
    Detail("converged", "boolean", "whether the drop is within tolerance of target, told apart"),
    Detail("bracket", "array", "the σ interval [lower, upper] left by the bisection", per="item"),
    Detail("accuracy_under_noise", "number", "mean accuracy under noise at the σ"),
    Detail("accuracy_stderr", "number", "its standard error"),
    Detail("clean_accuracy", "number", "accuracy without noise"),
    Detail(
        "evaluations",
        "array",
        "every σ the bisection tried, in order",
        per="point",
        fields=(
            Detail("sigma", "number", "the σ tried"),
            Detail("accuracy", "number", "mean accuracy under noise there"),
            Detail("stderr", "number", "its standard error"),
            Detail("draws", "integer", "noise draws made there"),
        ),
    ),
    Detail("steps", "integer", "bisection steps taken"),
    Detail("draws", "integer", "noise draws at the reported σ"),
    Detail("draws_range", "array", "[fewest, most] draws per σ", per="item"),
    Detail("stderr_limit", "number", "the standard error sought per σ (tolerance / 2)"),
    Detail("convergence", "string", "the convergence rule"),
    Detail("num_forward", "integer", "forward passes used"),
    SAMPLE,
    Detail("note", "string", "why the search did not converge"),
)
FLATNESS_RESULT = (
    Detail("sigma", "number", "σ: the noise std N(0, σ²I) that costs target accuracy"),
    *FLATNESS_COMMON,
)


@measure(
    "sharpness.pacbayes_flatness",
    result=FLATNESS_RESULT,
    group="sharpness",
    params=SEARCH_PARAMS,
    direction=LOWER_IS_BETTER,
    source="Jiang et al. 2020, eq. 53 (1/σ²) and the σ search of their appendix",
    cost="expensive",
    requires=["functional"],
)
def pacbayes_flatness(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """1/σ² for the largest σ whose Gaussian weight noise N(0, σ²I) costs ``target`` accuracy.

    Jiang, Neyshabur, Mobahi, Krishnan & Bengio, "Fantastic generalization measures and where to
    find them", ICLR 2020, eq. 53 (pac-bayes-flatness); bisection on σ ∈ [0, 2], depth 15,
    target drop 0.1 ± 0.01 (their appendix; Dziugaite et al. 2020 code). Their 10 draws per σ
    give a stderr (~0.02) above the tolerance, so the draws here are sequential: 10 at least,
    more until the stderr is at most tolerance / 2 (256 at most); ``converged`` needs both.
    """
    search, sample, nf = pacbayes_sigma(ctx, params, magnitude=False)
    return _flatness_result(search, sample, nf, params, "sigma")


MAG_FLATNESS_RESULT = (
    Detail(
        "sigma_prime", "number", "σ': noise u_i ~ N(0, σ'² w_i² + ε²) that costs target accuracy"
    ),
    *FLATNESS_COMMON,
    Detail("epsilon", "number", "the noise floor ε"),
)


@measure(
    "sharpness.pacbayes_mag_flatness",
    result=MAG_FLATNESS_RESULT,
    group="sharpness",
    params=[*SEARCH_PARAMS, Param("epsilon", float, 1e-3, "noise floor ε", 0.0, 10.0)],
    direction=LOWER_IS_BETTER,
    source="Jiang et al. 2020, eq. 61 (1/σ'², magnitude-aware noise N(0, σ'²w² + ε²))",
    cost="expensive",
    requires=["functional"],
)
def pacbayes_mag_flatness(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """1/σ'² for the largest σ' whose noise u_i ~ N(0, σ'² w_i² + ε²) costs ``target`` accuracy.

    Jiang et al., ICLR 2020, eq. 61 (pac-bayes-mag-flatness), ε = 1e-3; same search as
    ``sharpness.pacbayes_flatness``.
    """
    search, sample, nf = pacbayes_sigma(ctx, params, magnitude=True, epsilon=params["epsilon"])
    out = _flatness_result(search, sample, nf, params, "sigma_prime")
    out["epsilon"] = params["epsilon"]
    return out


# --- Keskar -------------------------------------------------------------------------------------


KESKAR_RESULT = (
    Detail("clean_loss", "number", "L(w) on the whole sample (mean cross-entropy, nats)"),
    Detail("worst_loss", "number", "L(w + z*) at the best point found in the box"),
    Detail("steps", "integer", "gradient evaluations of the ascent"),
    Detail("num_grad", "integer", "gradient evaluations at the measure's own ε"),
    Detail("optimizer", "string", "the ascent"),
    Detail("uncertainty", "string", "why there is no standard error"),
    SAMPLE,
    RHO_CURVE,
)


@measure(
    "sharpness.keskar",
    result=KESKAR_RESULT,
    group="sharpness",
    params=[
        Param("epsilon", float, 1e-3, "box size ε: |z_i| ≤ ε(|w_i| + 1)", 0.0, 10.0),
        STEPS,
        _samples_param(),
        BATCH,
        SWEEP,
    ],
    direction=LOWER_IS_BETTER,
    source="Keskar et al. 2017, Metric 2.1 (full space, A = I)",
    cost="moderate",
    requires=["functional"],
)
def keskar(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """ε-sharpness 100 · (max_{|z_i| ≤ ε(|w_i|+1)} L(w+z) − L(w)) / (1 + L(w)).

    Keskar, Mudigere, Nocedal, Smelyanskiy & Tang, "On large-batch training for deep learning:
    generalization gap and sharp minima", ICLR 2017, Metric 2.1 in the full space (A = I), on
    the loss of the whole sample (not per batch). The paper maximises with L-BFGS-B; here
    projected sign-gradient ascent in the box (Auto-PGD schedule, ``steps`` gradient
    evaluations of the sample loss), which gives a lower bound on the maximum as any ascent does.
    """
    multiples = parse_sweep(params["sweep"], "sharpness.keskar")
    objective, theta, sample = build_objective(ctx, params["samples"], params["batch_size"])
    box = theta.abs() + 1.0

    def at(epsilon: float) -> WorstCase:
        return worst_case(objective, theta, box, epsilon, "linf", params["steps"])

    def sharpness(res: WorstCase) -> float:
        return 100.0 * res.increase / (1.0 + res.clean)

    res = at(params["epsilon"])
    value = sharpness(res)
    out: dict[str, Any] = {
        "clean_loss": res.clean,
        "worst_loss": res.worst,
        "steps": params["steps"],
        "num_grad": objective.num_grad,
        "optimizer": "projected sign-gradient ascent in the box, Auto-PGD step schedule",
        "uncertainty": "deterministic (zero init); an ascent gives a lower bound on the maximum",
        "sample": sample_block(sample, params["batch_size"]),
    }
    if multiples:
        before = objective.num_grad

        def point(epsilon: float, stage: int) -> tuple[float, None]:
            ctx.progress(stage / len(multiples), f"ε = {epsilon:.4g}")
            return sharpness(at(epsilon)), None

        curve = radius_sweep(params["epsilon"], multiples, (value, None), point, "epsilon")
        out["rho_curve"] = {**curve, "num_grad": objective.num_grad - before}
    return finite_or_reason(out, value, "the ε-sharpness")


# --- input smoothness ---------------------------------------------------------------------------


def _first_linear(ctx: MeasureContext, x: torch.Tensor) -> tuple[NetworkView, Step] | None:
    """The network's view and its first affine map, if that map is a Linear layer fed the
    flattened input (through shape operations only)."""
    from genscope.network import network_view

    try:
        view = network_view(ctx.model, x[:1])
    except GenScopeError:
        return None
    if not view.affine or view.affine[0].kind != "linear":
        return None
    first = view.affine[0]
    if first.weight is None or first.weight.shape[1] != x[0].numel():
        return None
    node = first.node.args[0]
    while isinstance(node, torch.fx.Node) and view.step(node).role == "shape":
        node = node.args[0] if node.args else None
    if not isinstance(node, torch.fx.Node) or view.step(node).role != "input":
        return None
    return view, first


def _forward_capture(
    view: NetworkView, first: Step, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """Logits and the first affine map's output z, by running the view's graph and reading
    z at its node (a graph node, not a module hook: exported programs call no submodule).
    Programs with a fixed batch size run in zero-padded chunks (exact in eval mode): z comes
    as one tensor per chunk with the number of real rows in it."""
    from genscope.graph import _first, _pad, _static_batch
    from genscope.network import ViewInterpreter

    static = _static_batch(view.module)
    b = x.shape[0] if static is None else static
    logits, zs, sizes = [], [], []
    for start in range(0, x.shape[0], b):
        size = min(b, x.shape[0] - start)
        run = ViewInterpreter(view, record={first.node})
        out = _first(run.run(_pad(x[start : start + size], b)))
        logits.append(out[:size])
        zs.append(run.values[first.node])
        sizes.append(size)
    return torch.cat(logits), zs, sizes


GRADIENT_SUMMARY = (
    Detail("mean", "number", "mean over the sample"),
    QUANTILES,
)
SMOOTHNESS_RESULT = (
    Detail(
        "grad_f",
        "object",
        "‖∇_x f_y(x)‖ over the sample: mean and quantiles",
        fields=GRADIENT_SUMMARY,
    ),
    Detail(
        "grad_loss",
        "object",
        "‖∇_x loss(x, y)‖ over the sample: mean and quantiles",
        fields=GRADIENT_SUMMARY,
    ),
    Detail("mean_square_grad_f", "number", "mean of ‖∇_x f_y(x)‖²"),
    Detail(
        "values",
        "array",
        "‖∇_x f_y(x)‖ of each example (logit units per input unit)",
        per="example",
        labels="labels",
    ),
    LABELS,
    SAMPLE,
    Detail(
        "first_layer",
        "object",
        "the first-layer relation ‖∇_x f_y‖ ≤ ‖W₁‖₂ ‖∇_{W₁} f_y‖_F / ‖x‖ (null if not Linear)",
        fields=(
            Detail("layer", "string", "the first Linear layer"),
            Detail("spectral_norm", "number", "‖W₁‖₂"),
            Detail("grad_weight_fro_mean", "number", "mean ‖∇_{W₁} f_y‖_F"),
            Detail("bound_mean", "number", "mean of the right-hand side"),
            Detail("fraction_within_bound", "number", "fraction of examples where it holds"),
            Detail("relation", "string", "the relation"),
        ),
    ),
    Detail("first_layer_reason", "string", "why first_layer is null"),
)


@measure(
    "smoothness.input",
    result=SMOOTHNESS_RESULT,
    group="sharpness",
    params=[_samples_param(), BATCH],
    direction=LOWER_IS_BETTER,
    source="Ma & Ying 2021 (Sobolev seminorms ‖∇_x f‖; first-layer identity, §3)",
    cost="cheap",
)
def input_smoothness(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Mean input-gradient norm ‖∇_x f_y(x)‖ over the sample, with ‖∇_x loss‖ and quantiles.

    Ma & Ying, "On linear stability of SGD and input-smoothness of neural networks", NeurIPS
    2021: flat minima regularise the input gradients. Where the first layer is a Linear map
    z = Wx + b of the flattened input, ∇_W f = (∇_z f) xᵀ, hence the per-example relation
    ‖∇_x f_y‖ ≤ ‖W‖₂ · ‖∇_W f_y‖_F / ‖x‖ (measures-research §12.1), reported under
    ``first_layer``.
    """
    sample = ctx.train_sample(params["samples"], SAMPLE_PURPOSE)
    bs = params["batch_size"]
    first = _first_linear(ctx, sample.x)
    fx, fl, fz, xn = [], [], [], []
    for i in range(0, sample.n, bs):
        x = sample.x[i : i + bs].detach().clone().requires_grad_(True)
        y = sample.y[i : i + bs]
        with torch.enable_grad():
            sizes: list[int] = []
            if first is not None:
                logits, zs, sizes = _forward_capture(first[0], first[1], x)
                inputs = [x, *zs]
            else:
                logits, inputs = ctx.model(x), [x]
            fy = logits.gather(1, y[:, None]).sum()
            losses = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            grads = torch.autograd.grad(fy, inputs, retain_graph=True)
            (gl,) = torch.autograd.grad(losses, [x])
        fx.append(grads[0].flatten(1).norm(dim=1))
        fl.append(gl.flatten(1).norm(dim=1))
        if first is not None:
            gz = torch.cat([g[:n] for g, n in zip(grads[1:], sizes, strict=True)])
            fz.append(gz.flatten(1).norm(dim=1))
        xn.append(x.detach().flatten(1).norm(dim=1))
        ctx.progress(min(1.0, (i + bs) / sample.n), "input gradients")
    grad_f = torch.cat(fx).double()
    grad_loss = torch.cat(fl).double()
    out: dict[str, Any] = {
        "grad_f": {"mean": float(grad_f.mean()), "quantiles": quantiles(grad_f)},
        "grad_loss": {"mean": float(grad_loss.mean()), "quantiles": quantiles(grad_loss)},
        "mean_square_grad_f": float((grad_f**2).mean()),
        "values": grad_f,
        "labels": sample.y.cpu(),
        "sample": sample_block(sample),
    }
    if first is not None:
        name, weight = first[1].name, first[1].weight
        w_spec = float(torch.linalg.matrix_norm(weight.detach().double(), ord=2))  # type: ignore[union-attr]
        grad_z = torch.cat(fz).double()
        x_norm = torch.cat(xn).double()
        grad_w = grad_z * x_norm  # ‖∇_W f_y‖_F = ‖∇_z f_y‖ ‖x‖
        bound = w_spec * grad_z  # = ‖W‖₂ ‖∇_W f_y‖_F / ‖x‖
        holds = grad_f <= bound * (1 + 1e-6) + 1e-12
        out["first_layer"] = {
            "layer": name,
            "spectral_norm": w_spec,
            "grad_weight_fro_mean": float(grad_w.mean()),
            "bound_mean": float(bound.mean()),
            "fraction_within_bound": float(holds.double().mean()),
            "relation": "‖∇_x f_y(x)‖ ≤ ‖W₁‖₂ ‖∇_{W₁} f_y(x)‖_F / ‖x‖ (per example)",
        }
    else:
        out["first_layer"] = None
        out["first_layer_reason"] = "the first affine map is not a Linear layer on the input"
    return finite_or_reason(out, out["grad_f"]["mean"], "the mean input-gradient norm")
