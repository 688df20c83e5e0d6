"""Numerical generalization bounds with every term shown (measures.md, "Bounds and complexity").

Each bound returns ``value`` (the bound on the test error), ``terms`` (every factor that enters
it), ``vacuous`` (value ≥ 1, or not finite), ``informative`` (value < min(1 − 1/K, 1 −
INFORMATIVE_MARGIN): below the error of guessing uniformly among the K classes, and clearly
below 1; a value of 0.999998 is not vacuous but not informative either), ``rigorous`` (whether
the constants are those of a checked theorem and every assumption is met) with
``rigorous_reason``, and ``test_error`` when the dataset has a test split. Norms come from
:func:`genscope.norms.layer_norms` (BatchNorm folded, convolution operator norms at the actual
input shape). γ is the ``margin_quantile`` of the training margins by linear interpolation;
``gamma_conventions`` gives it by the rule of Jiang et al. 2020 (⌊q·m⌋-th smallest) too.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from genscope.errors import UnsupportedModel
from genscope.graph import homogeneity
from genscope.measures.complexity import cached_layer_norms, load_init, margin_at_quantile
from genscope.measures.context import MeasureContext
from genscope.measures.registry import LOWER_IS_BETTER, Param, measure
from genscope.measures.schema import Detail
from genscope.measures.sharpness import SEARCH_PARAMS, pacbayes_sigma
from genscope.measures.stats import quantile_conventions
from genscope.norms import spectral_complexity

DELTA = Param("delta", float, 0.05, "failure probability δ", 1e-12, 0.5)
INFORMATIVE_MARGIN = 0.01  # a bound within this of 1 says nothing about the error
MARGIN_Q = Param("margin_quantile", float, 0.1, "γ = this quantile of training margins", 0.0, 1.0)


def _test_error(ctx: MeasureContext) -> float | None:
    logits = ctx.test_logits()
    if logits is None or ctx.y_test is None:
        return None
    return float((logits.argmax(dim=1) != ctx.y_test).double().mean())


def _train_error(ctx: MeasureContext) -> float:
    return float((ctx.train_logits().argmax(dim=1) != ctx.y_train).double().mean())


def _finish(
    ctx: MeasureContext,
    value: float | None,
    terms: dict[str, Any],
    rigorous: bool,
    rigorous_reason: str,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "terms": terms,
        "rigorous": rigorous,
        "rigorous_reason": rigorous_reason,
        "test_error": _test_error(ctx),
        "train_error": _train_error(ctx),
        **extra,
    }
    out.update(informativeness(value, ctx.num_classes))
    if value is None or not math.isfinite(value):
        out["value"] = None
        out.setdefault("reason", f"the bound is not finite ({value})")
    else:
        out["value"] = value
    return out


def informativeness(value: float | None, num_classes: int) -> dict[str, Any]:
    """``vacuous``: the bound on the error is ≥ 1 (or not finite). ``informative``: it is below
    the trivial bound 1 − 1/K (the expected error of guessing uniformly among K classes) and at
    least INFORMATIVE_MARGIN below 1; the threshold and the rule are reported."""
    trivial = 1.0 - 1.0 / num_classes if num_classes > 1 else 1.0
    threshold = min(trivial, 1.0 - INFORMATIVE_MARGIN)
    v = value if value is not None and math.isfinite(value) else math.inf
    return {
        "vacuous": v >= 1.0,
        "informative": v < threshold,
        "trivial_bound": trivial,
        "informative_below": threshold,
        "informative_rule": f"value < min(1 − 1/K, 1 − {INFORMATIVE_MARGIN}) with K = "
        f"{num_classes} classes",
    }


def _data_norms(ctx: MeasureContext) -> tuple[float, float]:
    """(‖X‖_F over the training set, max_j ‖x_j‖₂)."""
    norms = ctx.x_train.flatten(1).double().norm(dim=1)
    return float(norms.norm()), float(norms.max())


def _widest(norms: list[Any]) -> int:
    return max(max(n.fan_in for n in norms), max(n.fan_out for n in norms))


# --- Bartlett, Foster & Telgarsky --------------------------------------------------------------


GAMMA_CONVENTIONS = (
    Detail("quantile", "number", "the quantile q"),
    Detail("value", "number", "the q-quantile by linear interpolation (GenScope's rule)"),
    Detail("rule", "string", "that rule"),
    Detail("jiang", "number", "the ⌊qm⌋-th smallest margin (Jiang et al. 2020)"),
    Detail("jiang_rule", "string", "that rule"),
)
BOUND_COMMON = (
    Detail("rigorous", "boolean", "whether the value is a bound with every constant known"),
    Detail("rigorous_reason", "string", "why it is or is not rigorous"),
    Detail("test_error", "number", "the model's test error (0-1 loss), null without a test split"),
    Detail("train_error", "number", "the model's training error"),
    Detail("vacuous", "boolean", "whether the bound on the error is ≥ 1 (or not finite)"),
    Detail("informative", "boolean", "whether it is below informative_below"),
    Detail("trivial_bound", "number", "1 − 1/K, the error of guessing among K classes"),
    Detail("informative_below", "number", "the threshold: min(1 − 1/K, 1 − margin)"),
    Detail("informative_rule", "string", "the rule, with K"),
)
#: The terms every margin bound shares: γ, how it was taken, the margin loss at γ, and δ.
MARGIN_TERMS = (
    Detail("gamma", "number", "γ: the margin_quantile-quantile of the output margins"),
    Detail("margin_quantile", "number", "the quantile q"),
    Detail(
        "gamma_conventions",
        "object",
        "γ by both quantile rules (linear interpolation; Jiang et al.'s ⌊qm⌋-th smallest)",
        fields=GAMMA_CONVENTIONS,
    ),
    Detail("margin_loss", "number", "fraction of training margins ≤ γ"),
    Detail("delta", "number", "the confidence parameter δ"),
)
SPECTRAL_BOUND_RESULT = (
    Detail(
        "terms",
        "object",
        "the terms of Theorem 1.1: value = margin_loss + constant_term + complexity_term + "
        "confidence_term",
        fields=(
            Detail("n", "integer", "training examples"),
            *MARGIN_TERMS,
            Detail("spectral_complexity", "number", "R_A (eq. 1.2); null if it overflows"),
            Detail("log_spectral_complexity", "number", "ln R_A"),
            Detail("log_product_of_spectral_norms", "number", "Σ_i ln ‖W_i‖₂"),
            Detail("data_frobenius_norm", "number", "‖X‖_F of the training inputs"),
            Detail("width", "integer", "the widest layer W"),
            Detail("log_width_term", "number", "ln(2W)"),
            Detail("log_n", "number", "ln n"),
            Detail("constant_term", "number", "8 / n"),
            Detail("confidence_term", "number", "3 sqrt(ln(2/δ) / (2n))"),
            Detail(
                "layers",
                "array",
                "per affine layer: ‖W‖₂ and ‖Wᵀ‖_{2,1}",
                per="layer",
                fields=(
                    Detail("name", "string", "the layer"),
                    Detail("spectral", "number", "‖W‖₂"),
                    Detail("l21", "number", "‖Wᵀ‖_{2,1}"),
                ),
            ),
            Detail(
                "complexity_term",
                "number",
                "72 ‖X‖_F R_A ln(2W) ln n / (γ n); null if γ ≤ 0 or it overflows",
            ),
        ),
    ),
    *BOUND_COMMON,
)


@measure(
    "bound.spectral",
    result=SPECTRAL_BOUND_RESULT,
    group="bounds",
    params=[MARGIN_Q, DELTA],
    direction=LOWER_IS_BETTER,
    source="Bartlett, Foster & Telgarsky 2017, Theorem 1.1 (explicit-constant form, appendix)",
)
def spectral_bound(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Spectrally-normalized margin bound of Bartlett, Foster & Telgarsky (NeurIPS 2017).

    R̂_γ + 8/n + 72 ‖X‖_F R_A ln(2W) ln(n)/(γ n) + 3 sqrt(ln(2/δ)/(2n)) (measures.md): R̂_γ the
    fraction of training margins ≤ γ, γ the ``margin_quantile`` of the training output margins,
    R_A the spectral complexity (their eq. 1.2; reference matrices 0, ρ_i = 1, biases left out),
    ‖X‖_F the Frobenius norm of the training inputs, W the widest layer (input included).
    The constants are recalled, not checked against the paper's appendix: ``rigorous`` false.
    """
    norms = cached_layer_norms(ctx)
    gamma, margins = margin_at_quantile(ctx, params["margin_quantile"])
    n = int(margins.numel())
    x_fro, _ = _data_norms(ctx)
    width = _widest(norms)
    delta = params["delta"]
    log_ra = spectral_complexity(norms, log=True)
    terms: dict[str, Any] = {
        "n": n,
        "gamma": gamma,
        "margin_quantile": params["margin_quantile"],
        "gamma_conventions": quantile_conventions(margins, params["margin_quantile"]),
        "margin_loss": float((margins <= gamma).double().mean()),
        "spectral_complexity": math.exp(log_ra) if log_ra < 700 else None,
        "log_spectral_complexity": log_ra,
        "log_product_of_spectral_norms": sum(math.log(m.spectral) for m in norms)
        if all(m.spectral > 0 for m in norms)
        else None,
        "data_frobenius_norm": x_fro,
        "width": width,
        "log_width_term": math.log(2 * width),
        "log_n": math.log(n),
        "delta": delta,
        "constant_term": 8.0 / n,
        "confidence_term": 3.0 * math.sqrt(math.log(2.0 / delta) / (2.0 * n)),
        "layers": [{"name": m.name, "spectral": m.spectral, "l21": m.l21} for m in norms],
    }
    reason = (
        "constants 8, 72 and 3 as recalled in measures-research §2.2, not checked against the "
        "appendix of Bartlett et al. 2017"
    )
    if gamma <= 0:
        terms["complexity_term"] = None
        return _finish(
            ctx,
            None,
            terms,
            False,
            reason,
            reason=f"γ = {gamma:.4g} ≤ 0: more than a {params['margin_quantile']} fraction of "
            "training points is misclassified at this quantile",
        )
    log_complexity = (
        (
            math.log(72.0)
            + math.log(x_fro)
            + log_ra
            + math.log(math.log(2 * width))
            + math.log(math.log(n))
            - math.log(gamma)
            - math.log(n)
        )
        if x_fro > 0 and n > 1
        else float("-inf")
    )
    complexity = math.exp(log_complexity) if log_complexity < 700 else math.inf
    terms["complexity_term"] = complexity if math.isfinite(complexity) else None
    value = terms["margin_loss"] + terms["constant_term"] + complexity + terms["confidence_term"]
    return _finish(ctx, value, terms, False, reason)


# --- Neyshabur, Bhojanapalli & Srebro -----------------------------------------------------------


PACBAYES_SPECTRAL_RESULT = (
    Detail(
        "terms",
        "object",
        "the terms of Theorem 1: value = margin_loss + slack",
        fields=(
            Detail("m", "integer", "training examples"),
            *MARGIN_TERMS,
            Detail("depth", "integer", "number of affine layers d"),
            Detail("width", "integer", "the widest layer h"),
            Detail("input_norm_bound", "number", "B = max_j ‖x_j‖₂"),
            Detail("log_product_spectral_sq", "number", "Σ_i ln ‖W_i‖₂²"),
            Detail("sum_frobenius_over_spectral_sq", "number", "Σ_i ‖W_i‖_F² / ‖W_i‖₂²"),
            Detail("log_term", "number", "ln(6 d m / δ)"),
            Detail("constant", "number", "the constant 42 of the KL term"),
            Detail("kl", "number", "the KL term (null if γ ≤ 0 or it overflows)"),
            Detail("log_kl", "number", "its logarithm"),
            Detail("slack", "number", "4 sqrt((KL + log_term) / (m − 1))"),
        ),
    ),
    *BOUND_COMMON,
    Detail("assumptions", "string", "the theorem's assumptions and how they are met"),
)


@measure(
    "bound.pacbayes_spectral",
    result=PACBAYES_SPECTRAL_RESULT,
    group="bounds",
    params=[MARGIN_Q, DELTA],
    direction=LOWER_IS_BETTER,
    source="Neyshabur, Bhojanapalli & Srebro 2018, Theorem 1 (and Lemma 1 for the constants)",
)
def pacbayes_spectral(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """PAC-Bayes spectral bound of Neyshabur, Bhojanapalli & Srebro (ICLR 2018), Theorem 1.

    L̂_γ + 4 sqrt((KL + ln(6 d m/δ)) / (m − 1)) with the Gaussian posterior of their proof,
    σ = γ / (42 d B sqrt(h ln(4hd)) β^{d−1}), whose KL term is
    KL = 42² d² B² h ln(4hd) Π_i ‖W_i‖₂² Σ_i ‖W_i‖_F²/‖W_i‖₂² / (2γ²):
    d layers, h the widest layer, B = max ‖x‖₂, m training points, γ the ``margin_quantile``
    of the training margins. The union bound over their β̃ grid is stood in for by the factor d
    inside the logarithm, and the constants 42, 4, 6 are recalled (measures-research §3), so
    ``rigorous`` is false.
    """
    norms = cached_layer_norms(ctx)
    gamma, margins = margin_at_quantile(ctx, params["margin_quantile"])
    m = int(margins.numel())
    _, b = _data_norms(ctx)
    d = len(norms)
    h = _widest(norms)
    delta = params["delta"]
    homog = homogeneity(ctx.model)
    log_prod_sq = (
        sum(2 * math.log(n.spectral) for n in norms)
        if all(n.spectral > 0 for n in norms)
        else float("-inf")
    )
    ratio = sum(n.frobenius**2 / n.spectral**2 for n in norms if n.spectral > 0)
    terms: dict[str, Any] = {
        "m": m,
        "gamma": gamma,
        "margin_quantile": params["margin_quantile"],
        "gamma_conventions": quantile_conventions(margins, params["margin_quantile"]),
        "margin_loss": float((margins <= gamma).double().mean()),
        "depth": d,
        "width": h,
        "input_norm_bound": b,
        "log_product_spectral_sq": log_prod_sq,
        "sum_frobenius_over_spectral_sq": ratio,
        "delta": delta,
        "log_term": math.log(6.0 * d * m / delta),
        "constant": 42.0,
    }
    reason = (
        "constants 42, 4 and 6 and the β̃-grid union bound are recalled, not checked against "
        "the paper (measures-research §3)"
    )
    assumptions = (
        "bias-free ReLU chain (the theorem's setting)"
        if homog.homogeneous
        else f"the theorem assumes a bias-free ReLU chain; here: {homog.reason}"
    )
    if gamma <= 0:
        terms["kl"] = None
        return _finish(
            ctx,
            None,
            terms,
            False,
            reason,
            assumptions=assumptions,
            reason=f"γ = {gamma:.4g} ≤ 0 at quantile {params['margin_quantile']}",
        )
    log_kl = (
        2 * math.log(42.0)
        + 2 * math.log(d)
        + 2 * math.log(b)
        + math.log(h)
        + math.log(math.log(4 * h * d))
        + log_prod_sq
        + math.log(ratio)
        - math.log(2.0)
        - 2 * math.log(gamma)
    )
    kl = math.exp(log_kl) if log_kl < 700 else math.inf
    terms["kl"] = kl if math.isfinite(kl) else None
    terms["log_kl"] = log_kl
    slack = 4.0 * math.sqrt((kl + terms["log_term"]) / (m - 1)) if m > 1 else math.inf
    terms["slack"] = slack if math.isfinite(slack) else None
    return _finish(ctx, terms["margin_loss"] + slack, terms, False, reason, assumptions=assumptions)


# --- Wei & Ma ----------------------------------------------------------------------------------


ALL_LAYER_BOUND_RESULT = (
    Detail(
        "terms",
        "object",
        "the terms of the bound: value = complexity_term + confidence_term + training_error",
        fields=(
            Detail("n", "integer", "training examples"),
            Detail("margin_sample", "integer", "examples whose all-layer margin was computed"),
            Detail("correct_in_sample", "integer", "correctly classified among them"),
            Detail("sum_C", "number", "Σ_i C_i"),
            Detail(
                "layers",
                "array",
                "per affine layer: C_i = ‖W_i‖_{1,1} sqrt(ln(2 d_in d_out))",
                per="layer",
                fields=(
                    Detail("name", "string", "the layer"),
                    Detail("l11", "number", "‖W_i‖_{1,1}"),
                    Detail("log_factor", "number", "sqrt(ln(2 d_in d_out))"),
                    Detail("C", "number", "C_i"),
                ),
            ),
            Detail("log_sq_n", "number", "ln² n"),
            Detail("delta", "number", "the confidence parameter δ"),
            Detail("confidence_term", "number", "(ln(1/δ) + ln n) / n"),
            Detail("training_error", "number", "the training error"),
            Detail("points", "array", "the perturbation points", per="layer"),
            Detail(
                "unconfirmed_left_out", "integer", "correct examples left out: no confirmed m_F"
            ),
            Detail("inverse_margin_rms", "number", "sqrt(mean 1/m_F²) over the correct examples"),
            Detail("complexity_term", "number", "Σ C_i / √n · inverse_margin_rms · ln² n"),
        ),
    ),
    *BOUND_COMMON,
)


@measure(
    "bound.all_layer",
    result=ALL_LAYER_BOUND_RESULT,
    group="bounds",
    params=[DELTA],
    direction=LOWER_IS_BETTER,
    source="Wei & Ma 2020, 'Improved sample complexities for deep networks', Theorem (§3)",
    cost="expensive",
    requires=["functional"],
)
def all_layer_bound(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """All-layer-margin bound of Wei & Ma (ICLR 2020), evaluated with the Õ constants set to 1.

    (Σ_i C_i)/√n · sqrt(mean over correctly classified training points of 1/m_F²) · ln²n
    + (ln(1/δ) + ln n)/n + training error, C_i = ‖W_i‖_{1,1} sqrt(ln(2 d_in d_out)) (BatchNorm
    folded); m_F from ``margin.all_layer`` on the margin sample. ``rigorous`` is false: the
    constants of the Õ are unknown (measures-research §1.2).
    """
    try:
        from genscope.measures.margins import all_layer_margins
    except ImportError:
        raise UnsupportedModel(
            "bound.all_layer needs the all-layer margins (margin.all_layer), not available"
        ) from None

    norms = cached_layer_norms(ctx)
    margins = all_layer_margins(ctx)
    values = torch.as_tensor(margins["values"], dtype=torch.float64).flatten()
    correct = torch.as_tensor(margins["correct"]).flatten().bool()
    n = ctx.data.n_train
    delta = params["delta"]
    layer_c: list[dict[str, Any]] = [
        {
            "name": m.name,
            "l11": m.l1,
            "log_factor": math.sqrt(math.log(2.0 * m.fan_in * m.fan_out)),
            "C": m.l1 * math.sqrt(math.log(2.0 * m.fan_in * m.fan_out)),
        }
        for m in norms
    ]
    sum_c = sum(item["C"] for item in layer_c)
    finite = torch.isfinite(values)
    pos = values[correct & finite]
    train_error = _train_error(ctx)
    terms: dict[str, Any] = {
        "n": n,
        "margin_sample": int(values.numel()),
        "correct_in_sample": int(correct.sum()),
        "sum_C": sum_c,
        "layers": layer_c,
        "log_sq_n": math.log(n) ** 2,
        "delta": delta,
        "confidence_term": (math.log(1.0 / delta) + math.log(n)) / n,
        "training_error": train_error,
        "points": list(margins.get("points") or []),
        "unconfirmed_left_out": int((correct & ~finite).sum()),
    }
    reason = "the constants of the Õ(·) are set to 1 (Wei & Ma state the bound up to them)"
    if pos.numel() == 0:
        return _finish(ctx, None, terms, False, reason, reason="no correctly classified point")
    if bool((pos <= 0).any()):
        terms["inverse_margin_rms"] = None
        return _finish(
            ctx,
            None,
            terms,
            False,
            reason,
            reason="an all-layer margin of a correctly classified point is 0",
        )
    rms = float(torch.sqrt((1.0 / pos**2).mean()))
    terms["inverse_margin_rms"] = rms
    complexity = sum_c / math.sqrt(n) * rms * math.log(n) ** 2
    terms["complexity_term"] = complexity
    value = complexity + terms["confidence_term"] + train_error
    return _finish(ctx, value, terms, False, reason)


# --- PAC-Bayes with the flatness σ --------------------------------------------------------------


def kl_bernoulli(p: float, q: float) -> float:
    """kl(p ‖ q) between Bernoulli distributions (nats)."""
    eps = 1e-300
    out = 0.0
    if p > 0:
        out += p * math.log(p / max(q, eps))
    if p < 1:
        out += (1 - p) * math.log((1 - p) / max(1 - q, eps))
    return out


def kl_inverse_upper(p: float, c: float, iters: int = 100) -> float:
    """max{q ∈ [p, 1] : kl(p ‖ q) ≤ c}, by bisection (Langford & Seeger 2001).

    >>> round(kl_inverse_upper(0.0, math.log(2)), 6)
    0.5
    """
    if c <= 0:
        return p
    lo, hi = p, 1.0
    if kl_bernoulli(p, hi) <= c:
        return 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if kl_bernoulli(p, mid) > c:
            hi = mid
        else:
            lo = mid
    return hi


PACBAYES_SHARPNESS_RESULT = (
    Detail(
        "terms",
        "object",
        "the terms of the PAC-Bayes-kl bound: value = kl⁻¹(posterior_train_error_upper, kl_rhs)",
        fields=(
            Detail("sigma", "number", "σ of prior and posterior (the pacbayes_flatness search)"),
            Detail("sigma_converged", "boolean", "whether that search converged"),
            Detail("m", "integer", "training examples"),
            Detail("prior_mean", "string", "the prior's mean: the init checkpoint or zero"),
            Detail("distance_sq_to_prior_mean", "number", "‖w − w⁰‖²"),
            Detail("kl", "number", "KL(Q‖P) = ‖w − w⁰‖² / (2σ²)"),
            Detail("log_grid_size", "number", "ln(2^depth − 1), the union bound over the σ grid"),
            Detail("log_confidence", "number", "ln(2√m / δ)"),
            Detail("kl_rhs", "number", "(KL + ln(2√m/δ) + ln|grid|) / m"),
            Detail("posterior_train_error_mc", "number", "Monte-Carlo training error of Q"),
            Detail("posterior_train_error_mc_stderr", "number", "its standard error"),
            Detail(
                "posterior_train_error_upper", "number", "kl⁻¹ upper bound on Q's training error"
            ),
            Detail("mc_draws", "integer", "posterior draws"),
            Detail("delta", "number", "the confidence parameter δ"),
            Detail("delta_mc", "number", "the Monte-Carlo confidence parameter δ_mc"),
            Detail("confidence", "number", "1 − δ − δ_mc"),
        ),
    ),
    *BOUND_COMMON,
    Detail("bounds", "string", "what is bounded (the Gaussian posterior's error)"),
)


@measure(
    "bound.pacbayes_sharpness",
    result=PACBAYES_SHARPNESS_RESULT,
    group="bounds",
    params=[
        *SEARCH_PARAMS,
        DELTA,
        Param(
            "delta_mc",
            float,
            0.01,
            "failure probability of the Monte-Carlo error bound",
            1e-12,
            0.5,
        ),
        Param("mc_draws", int, 100, "posterior draws to estimate its training error", 1, 10**6),
        Param(
            "init",
            str,
            None,
            "checkpoint at initialization for the prior mean (else 0)",
            optional=True,
            checkpoint=True,
        ),
    ],
    direction=LOWER_IS_BETTER,
    source="Dziugaite & Roy 2017, §3-4 (PAC-Bayes-kl bound, Monte-Carlo error bound); "
    "σ from Jiang et al. 2020's flatness search",
    cost="expensive",
    requires=["functional"],
)
def pacbayes_sharpness(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """PAC-Bayes-kl bound on the error of the Gaussian posterior N(w, σ²I), σ from the search.

    Langford & Seeger 2001 / Maurer 2004 form, as evaluated by Dziugaite & Roy (UAI 2017,
    eqs. 4 and 8): with prior P = N(w⁰, σ²I) (w⁰ the ``init`` checkpoint, else 0) and posterior
    Q = N(w, σ²I), KL(Q‖P) = ‖w − w⁰‖²/(2σ²); σ is the ``sharpness.pacbayes_flatness`` σ,
    which lies on the dyadic grid of the bisection, so a union bound over that grid
    (2^depth − 1 points) costs ln(2^depth − 1). Then with probability ≥ 1 − δ − δ_mc:
    e(Q) ≤ kl⁻¹(ê, (KL + ln(2√m/δ) + ln|grid|)/m), ê = kl⁻¹(ê_MC, ln(2/δ_mc)/N) the
    Monte-Carlo upper bound on Q's training error from N draws on the whole training set.
    This bounds the error of the *stochastic* network w + u, not of w itself.
    """
    search, _, _ = pacbayes_sigma(ctx, params, magnitude=False)
    sigma = search.sigma
    theta_params = ctx.params()
    prior = (
        load_init(ctx, params["init"], "bound.pacbayes_sharpness")
        if params["init"] is not None
        else {k: torch.zeros_like(v) for k, v in theta_params.items()}
    )
    dist_sq = sum(float(((theta_params[k] - prior[k]).double() ** 2).sum()) for k in theta_params)
    m = ctx.data.n_train
    n_draws = params["mc_draws"]
    gen = ctx.generator("bound.pacbayes_sharpness")
    errors = []
    with torch.no_grad():
        for i in range(n_draws):
            noisy = {
                k: v
                + sigma
                * torch.randn(v.shape, generator=gen, dtype=torch.float64).to(v.device, v.dtype)
                for k, v in theta_params.items()
            }
            wrong = 0
            for j in range(0, m, 512):
                out = ctx.functional(noisy, ctx.x_train[j : j + 512])
                wrong += int((out.argmax(dim=1) != ctx.y_train[j : j + 512]).sum())
            errors.append(wrong / m)
            ctx.progress((i + 1) / n_draws, "posterior error")
    mc_error = sum(errors) / n_draws
    delta, delta_mc = params["delta"], params["delta_mc"]
    mc_upper = kl_inverse_upper(mc_error, math.log(2.0 / delta_mc) / n_draws)
    grid = 2 ** params["depth"] - 1
    kl = dist_sq / (2 * sigma**2) if sigma > 0 else math.inf
    rhs = (kl + math.log(2 * math.sqrt(m) / delta) + math.log(grid)) / m
    value = kl_inverse_upper(mc_upper, rhs) if math.isfinite(rhs) else math.inf
    terms: dict[str, Any] = {
        "sigma": sigma,
        "sigma_converged": search.converged,
        "m": m,
        "prior_mean": "init checkpoint" if params["init"] is not None else "zero",
        "distance_sq_to_prior_mean": dist_sq,
        "kl": kl if math.isfinite(kl) else None,
        "log_grid_size": math.log(grid),
        "log_confidence": math.log(2 * math.sqrt(m) / delta),
        "kl_rhs": rhs if math.isfinite(rhs) else None,
        "posterior_train_error_mc": mc_error,
        "posterior_train_error_mc_stderr": (
            float(torch.tensor(errors, dtype=torch.float64).std() / math.sqrt(n_draws))
            if n_draws > 1
            else None
        ),
        "posterior_train_error_upper": mc_upper,
        "mc_draws": n_draws,
        "delta": delta,
        "delta_mc": delta_mc,
        "confidence": 1.0 - delta - delta_mc,
    }
    reason = (
        "PAC-Bayes-kl with a data-independent prior on a finite σ grid, Monte-Carlo error "
        "bounded with its own δ, whole training set: a valid bound on the stochastic network's "
        "error (not on the deterministic network's)"
    )
    if m < 8:
        reason = "the PAC-Bayes-kl bound in this form needs m ≥ 8 training points"
    return _finish(
        ctx,
        value,
        terms,
        m >= 8,
        reason,
        bounds="error of the Gaussian posterior N(w, σ²I)",
    )
