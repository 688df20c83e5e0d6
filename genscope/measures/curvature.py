"""Curvature measures (measures.md, "Curvature"): Hessian and GGN spectra, trace, density.

Every measure works on the mean cross-entropy over the Hessian sample (``--hessian-samples``),
model in eval mode, through :mod:`genscope.linalg`:

* ``hessian.top_eigenvalues`` / ``ggn.top_eigenvalues``: thick-restart Lanczos with full
  reorthogonalization (Golub & Van Loan 2013, Alg. 10.1.1; Wu & Simon 2000), stopping when every
  residual ‖Hv − λv‖ ≤ tol·|λ_1|.
* ``hessian.min_eigenvalue``: the same for the most negative eigenvalue (saddle diagnostics).
* ``hessian.trace``: Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Alg. 1) or Hutchinson.
* ``hessian.frobenius``: Hutchinson on H² (‖Hz‖² per probe).
* ``hessian.density`` / ``ggn.density``: stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017;
  Ghorbani, Krishnan & Xiao 2019) with outliers separated from the bulk (Sagun et al. 2017;
  Papyan 2020).
* ``hessian.layer_spectra``: top eigenvalue and trace of each layer's diagonal block.
* ``stability.sgd``: λ_max against 2/η, the linear stability of gradient descent (Cohen et al.
  2021, "edge of stability"; Wu, Ma & E 2018), with the trace condition tr(H) ≤ 2/η of
  Wu & Su 2023 beside it.

The operators and the top eigenpairs are cached in ``ctx.cache`` so that measures share them;
other modules call :func:`hessian_operator` and :func:`hessian_top_eigenpairs`.
"""

from __future__ import annotations

from typing import Any

import torch

from genscope.errors import BadParameter
from genscope.linalg.lanczos import EigenResult, eigsh
from genscope.linalg.operators import (
    CurvatureOperator,
    GGNOperator,
    HessianOperator,
    Operator,
    layer_groups,
)
from genscope.linalg.slq import spectral_density
from genscope.linalg.trace import Estimate, frobenius, hutchinson, hutchpp
from genscope.measures.context import MeasureContext
from genscope.measures.registry import HIGHER_IS_BETTER, LOWER_IS_BETTER, Param, measure
from genscope.measures.schema import Detail

_HESSIAN_KEY = "curvature.hessian_operator"
_GGN_KEY = "curvature.ggn_operator"

K_PARAM = Param("k", int, 5, "number of eigenvalues", min=1, max=200)
TOL_PARAM = Param(
    "tol",
    float,
    None,
    "relative residual tolerance: stop when every ||Hv - lambda v|| <= tol |lambda_1| "
    "(default 1e-3 in float32 runs, 1e-6 in float64)",
    min=1e-14,
    max=0.5,
    optional=True,
)
MAX_HVP_PARAM = Param("max_hvp", int, 2000, "Hessian-vector product budget", min=10, max=100_000)
LANCZOS_SOURCE = "Golub & Van Loan 2013, Alg. 10.1.1 (Lanczos); Wu & Simon 2000 (thick restart)"
SLQ_PARAMS = [
    Param("steps", int, 80, "Lanczos steps per probe", min=2, max=1000),
    Param("probes", int, 4, "number of random probes", min=1, max=100),
    Param("grid_points", int, 1000, "points of the density grid", min=10, max=100_000),
    Param(
        "sigma2",
        float,
        None,
        "Gaussian kernel variance (default 1e-5 max(1, lambda_max - lambda_min))",
        min=1e-12,
        max=1e12,
        optional=True,
    ),
    Param(
        "reorthogonalization",
        str,
        "full",
        "full (measures.md) or partial (Simon 1984: the same quadrature to working precision, "
        "fewer passes over the basis in float64)",
        choices=("full", "partial"),
    ),
]


# --- shared intermediates --------------------------------------------------------------------
def default_tol(ctx: MeasureContext) -> float:
    """measures.md: 1e-3 relative in float32 runs, 1e-6 in float64."""
    return 1e-6 if ctx.dtype == torch.float64 else 1e-3


def _build(
    ctx: MeasureContext, cls: type[CurvatureOperator], names: list[str] | None = None
) -> Any:
    sample = ctx.hessian_sample()
    return cls(
        ctx.functional,
        ctx.params(),
        sample.x,
        sample.y,
        names=names,
        chunk_size=ctx.options.batch_size,
    )


def hessian_operator(ctx: MeasureContext) -> HessianOperator:
    """The Hessian of the mean cross-entropy over the Hessian sample, all parameters, in the
    order of ``ctx.params()`` (built once per analysis, then cached)."""
    if _HESSIAN_KEY not in ctx.cache:
        ctx.cache[_HESSIAN_KEY] = _build(ctx, HessianOperator)
    return ctx.cache[_HESSIAN_KEY]


def ggn_operator(ctx: MeasureContext) -> GGNOperator:
    """The generalized Gauss-Newton matrix over the Hessian sample (cached)."""
    if _GGN_KEY not in ctx.cache:
        ctx.cache[_GGN_KEY] = _build(ctx, GGNOperator)
    return ctx.cache[_GGN_KEY]


class _Progress(Operator):
    """Reports progress to ``ctx.progress`` as products are made (``expected`` of them)."""

    def __init__(self, op: Operator, ctx: MeasureContext, expected: int, label: str) -> None:
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op, self.ctx, self.expected, self.label = op, ctx, max(1, expected), label

    def _matmat(self, block: torch.Tensor) -> torch.Tensor:
        out = self.op.matvec(block)
        done = self.num_matvecs
        self.ctx.progress(min(0.99, done / self.expected), f"{self.label}: {done} products")
        return out


def _check_k(k: int, op: Operator, measure_id: str) -> None:
    if k > op.shape[0]:
        raise BadParameter(
            f"{measure_id}.k = {k} is larger than the number of parameters ({op.shape[0]})",
            {"param": f"{measure_id}.k"},
        )


def _eigs(
    ctx: MeasureContext,
    op: Operator,
    kind: str,
    k: int,
    which: str,
    tol: float | None,
    max_hvp: int,
) -> EigenResult:
    """Eigenpairs of a cached operator, cached by (kind, which, tol); a run for k' ≥ k serves k."""
    tol = default_tol(ctx) if tol is None else tol
    store: dict[tuple[str, str, float], EigenResult] = ctx.cache.setdefault("curvature.eig", {})
    key = (kind, which, tol)
    hit = store.get(key)
    if hit is not None and hit.values.numel() >= k and hit.converged:
        return hit
    tracked = _Progress(op, ctx, expected=max(30, 6 * k), label=f"Lanczos ({which})")
    result = eigsh(
        tracked,
        k=k,
        which=which,
        tol=tol,
        max_matvecs=max_hvp,
        generator=ctx.generator(f"lanczos:{kind}:{which}"),
    )
    store[key] = result
    return result


def hessian_top_eigenpairs(ctx: MeasureContext, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest Hessian eigenvalues (descending, float64 CPU) and their unit
    eigenvectors as the columns of a ``(P, k)`` matrix, flat in the order of ``ctx.params()``.

    Computed once at the run's default tolerance and cached (shared with
    ``hessian.top_eigenvalues``).
    """
    op = hessian_operator(ctx)
    _check_k(k, op, "hessian.top_eigenvalues")
    result = _eigs(ctx, op, "hessian", k, "largest", None, MAX_HVP_PARAM.default)
    return result.values[:k].clone(), result.vectors[:, :k]


def _eig_details(result: EigenResult, k: int, op: CurvatureOperator, ctx: MeasureContext) -> dict:
    values = result.values[:k]
    residuals = result.residuals[:k]
    scale = max(result.scale, 1e-300)
    return {
        "value": float(values[0]),
        "values": values.tolist(),
        "residuals": residuals.tolist(),
        "relative_residuals": (residuals / scale).tolist(),
        "num_hvp": result.num_matvecs,
        "converged": result.converged,
        "tol": result.tol,
        "lanczos_steps": result.steps,
        "restarts": result.restarts,
        "sample": ctx.hessian_sample().describe(),
        "path": op.path,
        "operator": op.describe(),
    }


def _top(ctx: MeasureContext, params: dict[str, Any], kind: str, measure_id: str) -> dict:
    op = hessian_operator(ctx) if kind == "hessian" else ggn_operator(ctx)
    k = int(params["k"])
    _check_k(k, op, measure_id)
    result = _eigs(ctx, op, kind, k, "largest", params.get("tol"), int(params["max_hvp"]))
    return _eig_details(result, k, op, ctx)


# --- measures --------------------------------------------------------------------------------
OPERATOR = Detail(
    "operator",
    "object",
    "the curvature operator: parameters, examples, chunking, dtype and product path",
)
CURVATURE_SAMPLE = Detail(
    "sample",
    "object",
    "the Hessian sample (--hessian-samples) of the training set",
    fields=(
        Detail("size", "integer", "number of examples"),
        Detail("whole_set", "boolean", "whether they are the whole training set, in order"),
    ),
)
PATH = Detail("path", "string", "how the curvature-vector products are computed")
NUM_HVP = Detail("num_hvp", "integer", "curvature-vector products used")
EIG_RESULT = (
    Detail(
        "values",
        "array",
        "the eigenvalues found, in the order searched: largest first (smallest first for the "
        "minimum eigenvalue); loss units per squared parameter unit",
        per="eigenvalue",
    ),
    Detail("residuals", "array", "‖Av − λv‖ of each eigenpair", per="eigenvalue"),
    Detail(
        "relative_residuals",
        "array",
        "residuals divided by the operator's spectral scale",
        per="eigenvalue",
    ),
    NUM_HVP,
    Detail("converged", "boolean", "whether every eigenpair met the tolerance"),
    Detail("tol", "number", "relative residual tolerance"),
    Detail("lanczos_steps", "integer", "Lanczos steps taken"),
    Detail("restarts", "integer", "thick restarts taken"),
    CURVATURE_SAMPLE,
    PATH,
    OPERATOR,
)


@measure(
    "hessian.top_eigenvalues",
    result=EIG_RESULT,
    group="hessian",
    params=[K_PARAM, TOL_PARAM, MAX_HVP_PARAM],
    direction=LOWER_IS_BETTER,
    source=LANCZOS_SOURCE,
    cost="expensive",
    requires=["functional"],
)
def hessian_top_eigenvalues(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """The k largest eigenvalues of the loss Hessian (Lanczos, residual-certified)."""
    return _top(ctx, params, "hessian", "hessian.top_eigenvalues")


@measure(
    "ggn.top_eigenvalues",
    result=EIG_RESULT,
    group="hessian",
    params=[K_PARAM, TOL_PARAM, MAX_HVP_PARAM],
    direction=LOWER_IS_BETTER,
    source="Schraudolph 2002 (GGN); Martens 2020, §8; " + LANCZOS_SOURCE,
    cost="expensive",
    requires=["functional"],
)
def ggn_top_eigenvalues(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """The k largest eigenvalues of the generalized Gauss-Newton matrix JᵀH_LJ (Lanczos)."""
    return _top(ctx, params, "ggn", "ggn.top_eigenvalues")


MIN_EIG_RESULT = (
    *EIG_RESULT,
    Detail("negative", "boolean", "whether λ_min < 0 (not a minimum along some direction)"),
    Detail("ratio_to_spectral_norm", "number", "λ_min over the operator's spectral scale"),
)


@measure(
    "hessian.min_eigenvalue",
    result=MIN_EIG_RESULT,
    group="hessian",
    params=[TOL_PARAM, MAX_HVP_PARAM],
    source=LANCZOS_SOURCE + "; smallest algebraic Ritz value (saddle diagnostics)",
    cost="expensive",
    requires=["functional"],
)
def hessian_min_eigenvalue(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """The most negative (smallest algebraic) eigenvalue of the loss Hessian."""
    op = hessian_operator(ctx)
    result = _eigs(ctx, op, "hessian", 1, "smallest", params.get("tol"), int(params["max_hvp"]))
    out = _eig_details(result, 1, op, ctx)
    lam_min = out["value"]
    out["negative"] = lam_min < 0
    out["ratio_to_spectral_norm"] = lam_min / max(result.scale, 1e-300)
    return out


def _trace_estimate(ctx: MeasureContext, method: str, budget: int) -> Estimate:
    key = f"curvature.trace:{method}:{budget}"
    if key not in ctx.cache:
        op = _Progress(hessian_operator(ctx), ctx, budget, method)
        fn = hutchpp if method == "hutchpp" else hutchinson
        ctx.cache[key] = fn(op, budget, ctx.generator(f"trace:{method}"))
    return ctx.cache[key]


TRACE_RESULT = (
    Detail("stderr", "number", "standard error of the stochastic estimate"),
    NUM_HVP,
    Detail("method", "string", "the estimator (Hutch++ or Hutchinson)"),
    CURVATURE_SAMPLE,
    PATH,
    OPERATOR,
)


@measure(
    "hessian.trace",
    result=TRACE_RESULT,
    group="hessian",
    params=[
        Param("num_hvp", int, 99, "Hessian-vector products", min=3, max=100_000),
        Param("method", str, "hutchpp", "estimator", choices=("hutchpp", "hutchinson")),
    ],
    direction=LOWER_IS_BETTER,
    source="Meyer, Musco, Musco & Woodruff 2021, Alg. 1 (Hutch++); Hutchinson 1989",
    cost="expensive",
    requires=["functional"],
)
def hessian_trace(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Trace of the loss Hessian with its standard error (Hutch++ by default)."""
    op = hessian_operator(ctx)
    est = _trace_estimate(ctx, params["method"], int(params["num_hvp"]))
    return {
        "value": est.estimate,
        "stderr": est.stderr,
        "num_hvp": est.num_matvecs,
        "method": est.method,
        "sample": ctx.hessian_sample().describe(),
        "path": op.path,
        "operator": op.describe(),
    }


FROBENIUS_RESULT = (
    Detail("stderr", "number", "standard error of the estimate of ‖H‖_F²"),
    NUM_HVP,
    Detail("method", "string", "the estimator"),
    CURVATURE_SAMPLE,
    PATH,
)


@measure(
    "hessian.frobenius",
    result=FROBENIUS_RESULT,
    group="hessian",
    params=[Param("num_hvp", int, 30, "Hessian-vector products", min=2, max=100_000)],
    direction=LOWER_IS_BETTER,
    source="Hutchinson 1989 applied to H^2 (||Hz||^2, Rademacher z)",
    cost="expensive",
    requires=["functional"],
)
def hessian_frobenius(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Frobenius norm of the loss Hessian, Hutchinson on H² with a delta-method stderr."""
    base = hessian_operator(ctx)
    budget = int(params["num_hvp"])
    est = frobenius(_Progress(base, ctx, budget, "Frobenius"), budget, ctx.generator("frobenius"))
    return {
        "value": est.estimate,
        "stderr": est.stderr,
        "num_hvp": est.num_matvecs,
        "method": est.method,
        "sample": ctx.hessian_sample().describe(),
        "path": base.path,
    }


def _density(ctx: MeasureContext, params: dict[str, Any], kind: str) -> dict[str, Any]:
    base = hessian_operator(ctx) if kind == "hessian" else ggn_operator(ctx)
    steps, probes = int(params["steps"]), int(params["probes"])
    op = _Progress(base, ctx, steps * probes, "SLQ")
    d = spectral_density(
        op,
        num_steps=steps,
        num_probes=probes,
        grid_points=int(params["grid_points"]),
        sigma2=params.get("sigma2"),
        generator=ctx.generator(f"slq:{kind}"),
        reorthogonalization=str(params["reorthogonalization"]),
    )
    quad = d.quadrature
    return {
        "value": None,
        "grid": d.grid,
        "density": d.density,
        "log10_density": d.log10_density,
        "sigma2": d.sigma2,
        "sigma2_convention": "kernel variance 1e-5 max(1, range) (Ghorbani et al. 2019)"
        if params.get("sigma2") is None
        else "given",
        "num_hvp": quad.num_matvecs,
        "steps": quad.steps,
        "reorthogonalization": params["reorthogonalization"],
        "reorthogonalized_steps": quad.reorthogonalized_steps,
        "probes": len(quad.nodes),
        "nodes": [n.tolist() for n in quad.nodes],
        "weights": [w.tolist() for w in quad.weights],
        "lambda_min": d.lambda_min,
        "lambda_max": d.lambda_max,
        "outliers": d.outliers,
        "sample": ctx.hessian_sample().describe(),
        "path": base.path,
    }


DENSITY_RESULT = (
    Detail("grid", "array", "eigenvalue grid of the density", per="point"),
    Detail(
        "density", "array", "spectral density at each grid point (Gaussian-smoothed)", per="point"
    ),
    Detail(
        "log10_density",
        "array",
        "log10 of the density, floored at 1e-12 × its maximum",
        per="point",
    ),
    Detail("sigma2", "number", "variance of the smoothing kernel"),
    Detail("sigma2_convention", "string", "how sigma2 is chosen (Ghorbani et al. 2019)"),
    NUM_HVP,
    Detail("steps", "array", "Lanczos steps of each probe", per="draw"),
    Detail("reorthogonalization", "string", "the reorthogonalisation scheme"),
    Detail("reorthogonalized_steps", "array", "steps reorthogonalised, per probe", per="draw"),
    Detail("probes", "integer", "random probes"),
    Detail("nodes", "array", "Ritz values (quadrature nodes) of each probe", per="draw"),
    Detail("weights", "array", "quadrature weights of each probe", per="draw"),
    Detail("lambda_min", "number", "smallest Ritz value"),
    Detail("lambda_max", "number", "largest Ritz value"),
    Detail(
        "outliers",
        "object",
        "eigenvalues separated from the bulk: count, values, above/below, bulk edges, rule",
    ),
    CURVATURE_SAMPLE,
    PATH,
)


@measure(
    "hessian.density",
    result=DENSITY_RESULT,
    group="hessian",
    params=SLQ_PARAMS,
    source="Ghorbani, Krishnan & Xiao 2019; Ubaru, Chen & Saad 2017 (SLQ)",
    cost="expensive",
    requires=["functional"],
)
def hessian_density(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Spectral density of the loss Hessian by stochastic Lanczos quadrature, with outliers."""
    return _density(ctx, params, "hessian")


@measure(
    "ggn.density",
    result=DENSITY_RESULT,
    group="hessian",
    params=SLQ_PARAMS,
    source="Ghorbani et al. 2019 (SLQ); Papyan 2020 (GGN spectra)",
    cost="expensive",
    requires=["functional"],
)
def ggn_density(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Spectral density of the generalized Gauss-Newton matrix by SLQ, with outliers."""
    return _density(ctx, params, "ggn")


LAYER_SPECTRA_RESULT = (
    Detail(
        "layers",
        "array",
        "per layer block: top eigenvalue, residual, trace of its diagonal Hessian block",
        per="layer",
        fields=(
            Detail("layer", "string", "the layer's name"),
            Detail("params", "array", "its parameters", per="item"),
            Detail("num_params", "integer", "their number"),
            Detail("top_eigenvalue", "number", "largest eigenvalue of the block"),
            Detail("residual", "number", "its residual"),
            Detail("converged", "boolean", "whether it met the tolerance"),
            Detail("trace", "number", "trace of the block (stochastic estimate)"),
            Detail("trace_stderr", "number", "its standard error"),
            Detail("trace_method", "string", "the trace estimator"),
            NUM_HVP,
            PATH,
        ),
    ),
    NUM_HVP,
    Detail("tol", "number", "relative residual tolerance"),
    CURVATURE_SAMPLE,
)


@measure(
    "hessian.layer_spectra",
    result=LAYER_SPECTRA_RESULT,
    group="hessian",
    params=[
        TOL_PARAM,
        Param("trace_hvp", int, 99, "products for each layer's trace", min=3, max=100_000),
        MAX_HVP_PARAM,
    ],
    direction=LOWER_IS_BETTER,
    source=LANCZOS_SOURCE + "; Meyer et al. 2021 (Hutch++), per diagonal block",
    cost="expensive",
    requires=["functional"],
)
def hessian_layer_spectra(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Top eigenvalue and trace of each layer's diagonal Hessian block (params by module)."""
    tol = default_tol(ctx) if params.get("tol") is None else params["tol"]
    groups = layer_groups(list(ctx.params()))
    layers = []
    total_hvp = 0
    for i, (layer, names) in enumerate(groups.items()):
        ctx.progress(i / len(groups), f"layer {layer}")
        op = _build(ctx, HessianOperator, names)
        top = eigsh(
            op,
            k=1,
            tol=tol,
            max_matvecs=int(params["max_hvp"]),
            generator=ctx.generator(f"layer:{layer}:lanczos"),
        )
        tr = hutchpp(op, int(params["trace_hvp"]), ctx.generator(f"layer:{layer}:trace"))
        op.release()
        total_hvp += op.num_matvecs
        layers.append(
            {
                "layer": layer,
                "params": names,
                "num_params": op.shape[0],
                "top_eigenvalue": float(top.values[0]),
                "residual": float(top.residuals[0]),
                "converged": top.converged,
                "trace": tr.estimate,
                "trace_stderr": tr.stderr,
                "trace_method": tr.method,
                "num_hvp": op.num_matvecs,
                "path": op.path,
            }
        )
    return {
        "value": max(entry["top_eigenvalue"] for entry in layers),
        "layers": layers,
        "num_hvp": total_hvp,
        "tol": tol,
        "sample": ctx.hessian_sample().describe(),
    }


STABILITY_RESULT = (
    Detail("lambda_max", "number", "largest Hessian eigenvalue λ_max"),
    Detail("largest_stable_lr", "number", "2 / λ_max, the largest linearly stable step size"),
    Detail("lr", "number", "the step size tested (the lr parameter), if given"),
    Detail("threshold", "number", "2 / lr: the λ_max above which lr is unstable"),
    Detail("stable", "boolean", "whether λ_max ≤ 2 / lr"),
    Detail("sharpness_ratio", "number", "lr · λ_max / 2 (≤ 1: stable)"),
    CURVATURE_SAMPLE,
    Detail("note", "string", "what the loss is"),
    Detail("trace", "number", "tr(H), Hutch++ estimate"),
    Detail("trace_stderr", "number", "its standard error"),
    Detail("largest_lr_trace_condition", "number", "2 / tr(H) (Ma & Ying 2021 trace condition)"),
    Detail("stable_trace", "boolean", "whether tr(H) ≤ 2 / lr"),
)


@measure(
    "stability.sgd",
    result=STABILITY_RESULT,
    group="hessian",
    params=[
        Param(
            "lr",
            float,
            None,
            "learning rate eta of gradient descent to test (lambda_max <= 2/eta)",
            min=0.0,
            max=1e6,
            optional=True,
        ),
        Param("trace", bool, True, "also test the trace condition tr(H) <= 2/eta"),
        Param("trace_hvp", int, 99, "products for the trace (Hutch++)", min=3, max=100_000),
    ],
    direction=HIGHER_IS_BETTER,
    source="Cohen et al. 2021 (edge of stability); Wu, Ma & E 2018; Wu & Su 2023 (trace)",
    cost="expensive",
    requires=["functional"],
)
def stability_sgd(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Largest stable gradient-descent step 2/λ_max, and λ_max against 2/η for a given η."""
    values, _ = hessian_top_eigenpairs(ctx, 1)
    lam = float(values[0])
    lr = params.get("lr")
    if lr is not None and lr <= 0:
        raise BadParameter(f"stability.sgd.lr must be positive, got {lr}", {"param": "lr"})
    out: dict[str, Any] = {
        "value": 2.0 / lam if lam > 0 else float("inf"),
        "lambda_max": lam,
        "largest_stable_lr": 2.0 / lam if lam > 0 else float("inf"),
        "lr": lr,
        "threshold": None if lr is None else 2.0 / lr,
        "stable": None if lr is None else bool(lam <= 2.0 / lr),
        "sharpness_ratio": None if lr is None else lr * lam / 2.0,
        "sample": ctx.hessian_sample().describe(),
        "note": "the loss is the mean cross-entropy over the Hessian sample; a non-positive "
        "lambda_max means every step size is linearly stable",
    }
    if params["trace"]:
        est = _trace_estimate(ctx, "hutchpp", int(params["trace_hvp"]))
        out["trace"] = est.estimate
        out["trace_stderr"] = est.stderr
        out["largest_lr_trace_condition"] = 2.0 / est.estimate if est.estimate > 0 else None
        out["stable_trace"] = None if lr is None else bool(est.estimate <= 2.0 / lr)
    return out
