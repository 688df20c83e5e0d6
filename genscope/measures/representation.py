"""Representation and training-dynamics measures (measures.md; measures-research.md §10, §11, §13).

* ``collapse.nc1`` … ``collapse.nc4``: neural collapse of the penultimate features of the
  training set (Papyan, Han & Donoho, PNAS 2020), with the ETF-distance forms of Zhu et al.
  (NeurIPS 2021). Statistics in float64, pseudo-inverses by SVD.
* ``coherence.m``: m-coherence of per-example loss gradients (Chatterjee & Zielinski 2020),
  with per-example gradients from ``torch.func`` (``vmap(grad)``) in chunks of bounded memory.
* ``ntk.spectrum``: the empirical neural tangent kernel Gram matrix on a training subset, summed
  over logits, and its eigenvalues (chunked Jacobian contractions).
* ``activations.sparsity``: per ReLU application, the fraction of active units over the data
  and the count of dead units.

Directions: the literature agrees on none of these as a predictor of the generalization gap
except gradient coherence, whose authors argue that more coherent gradients generalize better;
the others declare no direction (None) and say why in their docstrings.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from genscope.errors import UnsupportedModel
from genscope.features import Classifier, FeatureExtractor, penultimate_features
from genscope.measures.context import MeasureContext
from genscope.measures.registry import HIGHER_IS_BETTER, Param, measure
from genscope.measures.schema import QUANTILE_FIELDS, SAMPLE, Detail
from genscope.measures.stats import quantiles

NC_SAMPLES = Param(
    "samples",
    int,
    10_000,
    "training examples whose penultimate features are used",
    min=2,
    max=10_000_000,
)
PAPYAN = "Papyan, Han & Donoho 2020 (PNAS), Figs. 2-7"
ZHU = "Zhu et al. 2021 (NeurIPS), §3.1 NC metrics"


# --- neural collapse ----------------------------------------------------------------------------


def simplex_etf(c: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalised simplex-ETF Gram matrix (I_C − 11ᵀ/C)/sqrt(C−1) (Frobenius norm 1).

    >>> float(torch.linalg.matrix_norm(simplex_etf(4)))
    1.0
    """
    eye = torch.eye(c, dtype=dtype)
    return (eye - torch.full((c, c), 1.0 / c, dtype=dtype)) / math.sqrt(c - 1)


def etf_distance(gram_like: torch.Tensor) -> float:
    """‖A/‖A‖_F − (I − 11ᵀ/C)/sqrt(C−1)‖_F for a C×C matrix A (Zhu et al. 2021, NC2/NC3)."""
    a = gram_like.double()
    norm = torch.linalg.matrix_norm(a)
    if not bool(norm > 0):
        return math.nan
    return float(torch.linalg.matrix_norm(a / norm - simplex_etf(a.shape[0])))


def class_statistics(
    features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classes present, their counts, class means (C, p) and the global mean (p), in float64.

    The global mean is the average over all examples (Papyan et al. 2020, μ_G = Ave_{i,c} h_{i,c}).
    """
    h = features.double()
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = torch.zeros((classes.numel(), h.shape[1]), dtype=h.dtype, device=h.device)
    sums.index_add_(0, inverse, h)
    means = sums / counts[:, None].to(h.dtype)
    return classes, counts, means, h.mean(dim=0)


def nc1_statistics(features: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """NC1 = tr(Σ_W Σ_B^†)/C (Papyan, Han & Donoho 2020, §"NC1", Fig. 6), with variants.

    Σ_W = Ave_{i} (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ over all N examples, Σ_B = Ave_c (μ_c − μ_G)
    (μ_c − μ_G)ᵀ unweighted over the C classes present. With M = [μ_c − μ_G] = U S Vᵀ,
    Σ_B^† = C Σ_k u_k u_kᵀ / s_k² over the singular values kept by the pseudo-inverse rule of
    ``torch.linalg.pinv`` on Σ_B (s_k² > p·eps·s_max²), so that
    NC1 = (1/N) Σ_k ‖Z u_k‖² / s_k², Z the within-class deviations: no p×p matrix is formed.

    Variants: ``truncated`` keeps only the top C−1 directions (Han, Papyan & Donoho 2022);
    ``trace_ratio`` = tr(Σ_W)/tr(Σ_B) (Tirer, Huang & Niles-Weston 2023).
    """
    classes, counts, means, mu_g = class_statistics(features, labels)
    c = int(classes.numel())
    if c < 2:
        raise UnsupportedModel("neural collapse needs examples of at least 2 classes")
    h = features.double()
    index = torch.searchsorted(classes, labels)
    z = h - means[index]
    n, p = h.shape
    m = (means - mu_g).T  # p x C
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    s2 = s**2
    tol = max(p, 1) * torch.finfo(torch.float64).eps * (float(s2.max()) if s2.numel() else 0.0)
    keep = s2 > tol
    proj = (z @ u) ** 2  # (N, C): squared projections on each left singular vector
    per_dir = proj.sum(dim=0) / n  # u_kᵀ Σ_W u_k
    nc1 = float((per_dir[keep] / s2[keep]).sum()) if bool(keep.any()) else math.nan
    top = min(c - 1, int(keep.sum()))
    truncated = float((per_dir[:top] / s2[:top]).sum()) if top > 0 else math.nan
    tr_w = float((z**2).sum() / n)
    tr_b = float((m**2).sum() / c)
    return {
        "nc1": nc1,
        "truncated": truncated,
        "trace_ratio": tr_w / tr_b if tr_b > 0 else math.nan,
        "trace_sigma_w": tr_w,
        "trace_sigma_b": tr_b,
        "rank_sigma_b": int(keep.sum()),
        "classes": c,
        "feature_dim": p,
        "class_counts": counts.tolist(),
    }


def _cosines(vectors: torch.Tensor) -> torch.Tensor:
    """Pairwise cosines of the rows, off-diagonal entries only."""
    v = vectors.double()
    unit = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    cos = unit @ unit.T
    c = cos.shape[0]
    return cos[~torch.eye(c, dtype=torch.bool, device=cos.device)]


def _geometry(vectors: torch.Tensor) -> dict[str, float]:
    """Papyan et al. 2020 NC2 diagnostics of C vectors: equinorm (std/mean of the norms),
    equiangularity (std of the pairwise cosines) and max-angle (mean |cos + 1/(C−1)|).
    Standard deviations are population ones (ddof 0)."""
    norms = vectors.double().norm(dim=1)
    cos = _cosines(vectors)
    c = vectors.shape[0]
    return {
        "equinorm": float(norms.std(unbiased=False) / norms.mean()),
        "equiangular": float(cos.std(unbiased=False)),
        "max_angle": float((cos + 1.0 / (c - 1)).abs().mean()),
    }


def collapse_geometry(
    features: torch.Tensor, labels: torch.Tensor, classifier: Classifier
) -> dict[str, Any]:
    """NC2, NC3 and NC4 of penultimate features and a linear classifier (W, b).

    * NC2 (Zhu et al. 2021): ‖MᵀM/‖MᵀM‖_F − E‖_F of the centred class means M (p×C) and
      ‖WWᵀ/‖WWᵀ‖_F − E‖_F of the classifier rows of the classes present, E the normalised
      simplex ETF (I − 11ᵀ/C)/sqrt(C−1); Papyan's equinorm/equiangularity/max-angle beside.
    * NC3 (Zhu et al. 2021): ‖WM/‖WM‖_F − E‖_F; Papyan's self-duality ‖Wᵀ/‖W‖_F − M/‖M‖_F‖_F².
    * NC4 (Papyan et al. 2020): the fraction of examples on which the classifier's decision
      argmax_c (⟨w_c, h⟩ + b_c) differs from the nearest class mean argmin_c ‖h − μ_c‖.
    """
    classes, _, means, mu_g = class_statistics(features, labels)
    c = int(classes.numel())
    if c < 2:
        raise UnsupportedModel("neural collapse needs examples of at least 2 classes")
    w_all = classifier.weight.double().to(means.device)
    if w_all.dim() != 2 or w_all.shape[1] != means.shape[1]:
        raise UnsupportedModel(
            f"neural collapse needs a final Linear classifier on the penultimate features; the "
            f"last affine layer {classifier.name} is a {classifier.kind} of weight shape "
            f"{tuple(w_all.shape)}"
        )
    if int(classes.max()) >= w_all.shape[0]:
        raise UnsupportedModel(
            f"labels go up to {int(classes.max())} but the classifier has {w_all.shape[0]} rows"
        )
    w = w_all[classes]  # C x p
    m = (means - mu_g).T  # p x C
    h = features.double()
    scores = h @ w_all.T
    if classifier.bias is not None:
        scores = scores + classifier.bias.double().to(scores.device)
    dist = torch.cdist(h, means)
    ncc = classes[dist.argmin(dim=1)]
    mismatch = float((scores.argmax(dim=1) != ncc).double().mean())
    wn = w / torch.linalg.matrix_norm(w)
    mn = m / torch.linalg.matrix_norm(m)
    return {
        "nc2_means": etf_distance(m.T @ m),
        "nc2_classifier": etf_distance(w @ w.T),
        "means_geometry": _geometry(m.T),
        "classifier_geometry": _geometry(w),
        "nc3": etf_distance(w @ m),
        "self_duality_sq": float(torch.linalg.matrix_norm(wn.T - mn) ** 2),
        "nc4_mismatch": mismatch,
        "classes": c,
    }


def _penultimate(ctx: MeasureContext, n: int) -> dict[str, Any]:
    key = f"representation.penultimate:{n}"
    if key not in ctx.cache:
        sample = ctx.train_sample(n, "collapse")
        feats, logits, clf = penultimate_features(ctx.model, sample.x, ctx.options.batch_size)
        scores = feats @ clf.weight.T if clf.weight.dim() == 2 else None
        matches = None
        if scores is not None and scores.shape == logits.shape:
            if clf.bias is not None:
                scores = scores + clf.bias
            scale = float(logits.abs().max()) if logits.numel() else 1.0
            matches = bool((scores - logits).abs().max() <= 1e-4 * max(scale, 1.0))
        ctx.cache[key] = {
            "features": feats.double(),
            "labels": sample.y,
            "classifier": clf,
            "sample": {**sample.describe(), "split": "train"},
            "classifier_block": {
                "layer": clf.name,
                "kind": clf.kind,
                "bias": clf.bias is not None,
                "output_is_logits": matches,
            },
        }
    return ctx.cache[key]


def _geometry_cached(ctx: MeasureContext, n: int) -> dict[str, Any]:
    pen = _penultimate(ctx, n)
    if "geometry" not in pen:
        pen["geometry"] = collapse_geometry(pen["features"], pen["labels"], pen["classifier"])
    return pen["geometry"]


_NC_DIRECTION_NOTE = (
    "no declared direction: Papyan et al. 2020 link collapse on the training set to better "
    "generalization, Hui, Belkin & Nakkiran 2022 show it need not carry to the test set"
)


CLASSIFIER = Detail(
    "classifier",
    "object",
    "the last affine layer, whose input are the penultimate features",
    fields=(
        Detail("layer", "string", "its name"),
        Detail("kind", "string", "its kind"),
        Detail("bias", "boolean", "whether it has a bias"),
        Detail("output_is_logits", "boolean", "whether its output is the model's logits"),
    ),
)
NC_COMMON = (
    Detail("classes", "integer", "classes present in the sample"),
    CLASSIFIER,
    SAMPLE,
    Detail("direction_note", "string", "why no direction is declared"),
)
NC1_RESULT = (
    Detail(
        "truncated",
        "number",
        "NC1 over the top C − 1 directions of Σ_B only (Han, Papyan & Donoho 2022)",
    ),
    Detail("trace_ratio", "number", "tr(Σ_W) / tr(Σ_B) (Tirer, Huang & Niles-Weston 2023)"),
    Detail("trace_sigma_w", "number", "tr(Σ_W), within-class covariance"),
    Detail("trace_sigma_b", "number", "tr(Σ_B), between-class covariance"),
    Detail("rank_sigma_b", "integer", "directions of Σ_B kept by the pseudo-inverse rule"),
    Detail("feature_dim", "integer", "dimension of the penultimate features"),
    Detail("class_counts", "array", "examples of each class present in the sample", per="class"),
    *NC_COMMON,
)


@measure(
    "collapse.nc1",
    result=NC1_RESULT,
    group="representation",
    params=[NC_SAMPLES],
    direction=None,
    source=f"{PAPYAN}; {ZHU}; rhubarbwu/neural-collapse covariance_ratio(metric='pinv')",
)
def collapse_nc1(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Within-class variability collapse NC1 = tr(Σ_W Σ_B^†)/C of the penultimate features.

    Papyan, Han & Donoho 2020 (PNAS), NC1 (Fig. 6: Tr(Σ_W Σ_B^†)/C), on the features of the
    training sample at the input of the last affine layer (flattened when that layer is a
    convolution), in float64. Also reports the top-(C−1) truncated form and tr(Σ_W)/tr(Σ_B).
    0 when every example sits on its class mean. No declared direction (see the module
    docstring).
    """
    pen = _penultimate(ctx, params["samples"])
    ctx.progress(0.5, "class statistics")
    stats = nc1_statistics(pen["features"], pen["labels"])
    value = stats.pop("nc1")
    return {
        "value": value,
        **stats,
        "classifier": pen["classifier_block"],
        "sample": pen["sample"],
        "direction_note": _NC_DIRECTION_NOTE,
    }


GEOMETRY_FIELDS = (
    Detail("equinorm", "number", "std / mean of the norms (0: equal norms)"),
    Detail("equiangular", "number", "std of the pairwise cosines (0: equal angles)"),
    Detail("max_angle", "number", "mean |cos + 1/(C − 1)| (0: maximally separated)"),
)
NC2_RESULT = (
    Detail("classifier_etf_distance", "number", "ETF distance of the classifier's rows"),
    Detail(
        "means_geometry", "object", "geometry of the centred class means", fields=GEOMETRY_FIELDS
    ),
    Detail(
        "classifier_geometry", "object", "geometry of the classifier rows", fields=GEOMETRY_FIELDS
    ),
    *NC_COMMON,
)


@measure(
    "collapse.nc2",
    result=NC2_RESULT,
    group="representation",
    params=[NC_SAMPLES],
    direction=None,
    source=f"{ZHU} (NC2 = ETF distance); {PAPYAN} (equinorm, equiangularity)",
)
def collapse_nc2(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Convergence of the centred class means to a simplex ETF (NC2), as an ETF distance.

    Zhu et al. 2021, NC2: ‖MᵀM/‖MᵀM‖_F − (I − 11ᵀ/C)/sqrt(C−1)‖_F for the centred class means
    M (the value), and the same for the classifier rows WWᵀ; Papyan et al. 2020's equinorm,
    equiangularity and max-angle for both. 0 for an exact simplex ETF. No declared direction.
    """
    geo = _geometry_cached(ctx, params["samples"])
    pen = _penultimate(ctx, params["samples"])
    return {
        "value": geo["nc2_means"],
        "classifier_etf_distance": geo["nc2_classifier"],
        "means_geometry": geo["means_geometry"],
        "classifier_geometry": geo["classifier_geometry"],
        "classes": geo["classes"],
        "classifier": pen["classifier_block"],
        "sample": pen["sample"],
        "direction_note": _NC_DIRECTION_NOTE,
    }


NC3_RESULT = (
    Detail("self_duality_sq", "number", "‖W/‖W‖_F − M/‖M‖_F‖_F² (Papyan et al. Fig. 5)"),
    *NC_COMMON,
)


@measure(
    "collapse.nc3",
    result=NC3_RESULT,
    group="representation",
    params=[NC_SAMPLES],
    direction=None,
    source=f"{ZHU} (NC3); {PAPYAN} Fig. 5 (self-duality)",
)
def collapse_nc3(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Self-duality of classifier and class means (NC3), as an ETF distance.

    Zhu et al. 2021, NC3: ‖WM/‖WM‖_F − (I − 11ᵀ/C)/sqrt(C−1)‖_F (the value); Papyan et al.
    2020 Fig. 5: ‖Wᵀ/‖W‖_F − M/‖M‖_F‖_F² beside it. 0 when W ∝ Mᵀ forms a simplex ETF.
    No declared direction.
    """
    geo = _geometry_cached(ctx, params["samples"])
    pen = _penultimate(ctx, params["samples"])
    return {
        "value": geo["nc3"],
        "self_duality_sq": geo["self_duality_sq"],
        "classes": geo["classes"],
        "classifier": pen["classifier_block"],
        "sample": pen["sample"],
        "direction_note": _NC_DIRECTION_NOTE,
    }


NC4_RESULT = (
    Detail("agreement", "number", "fraction where the nearest class centre agrees with the net"),
    *NC_COMMON,
)


@measure(
    "collapse.nc4",
    result=NC4_RESULT,
    group="representation",
    params=[NC_SAMPLES],
    direction=None,
    source=f"{PAPYAN}, Fig. 7 (simplification to nearest class center)",
)
def collapse_nc4(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Simplification to the nearest class center (NC4): fraction of disagreements.

    Papyan et al. 2020, NC4 (Fig. 7): the fraction of training examples on which the last
    Linear layer's decision argmax_c (⟨w_c, h⟩ + b_c) differs from argmin_c ‖h − μ_c‖. 0 under
    collapse; ``agreement`` = 1 − value. No declared direction.
    """
    geo = _geometry_cached(ctx, params["samples"])
    pen = _penultimate(ctx, params["samples"])
    return {
        "value": geo["nc4_mismatch"],
        "agreement": 1.0 - geo["nc4_mismatch"],
        "classes": geo["classes"],
        "classifier": pen["classifier_block"],
        "sample": pen["sample"],
        "direction_note": _NC_DIRECTION_NOTE,
    }


# --- gradient coherence -------------------------------------------------------------------------


def _auto_chunk(num_params: int, budget_values: int = 1 << 23) -> int:
    """Examples per chunk so that a chunk's per-example gradients hold ~``budget_values``
    numbers (64 MiB in float64)."""
    return max(1, min(4096, budget_values // max(num_params, 1)))


def coherence_from_sums(sum_sq_of_sum: float, sum_of_sq: float, m: int) -> dict[str, float]:
    """α̂ = ‖(1/m)Σ g_i‖² / ((1/m)Σ‖g_i‖²) and m-coherence = m·α̂ = ‖Σ g_i‖²/Σ‖g_i‖².

    Chatterjee & Zielinski 2020, §2 (α = E_{z,z'}[g_z·g_z'] / E_z[g_z·g_z], z, z' independent
    draws from the sample; m-coherence = m·α): 1 for pairwise orthogonal gradients, m for
    identical ones.

    >>> coherence_from_sums(4.0, 2.0, 2)["m_coherence"]  # two identical unit gradients
    2.0
    """
    if not sum_of_sq > 0:
        return {"alpha": math.nan, "m_coherence": math.nan}
    alpha = (sum_sq_of_sum / m**2) / (sum_of_sq / m)
    return {"alpha": alpha, "m_coherence": m * alpha}


COHERENCE_RESULT = (
    Detail("alpha", "number", "α = ‖Σ_i g_i‖² / (m Σ_i ‖g_i‖²) (Chatterjee & Zielinski 2020)"),
    Detail("m", "integer", "examples in the sample"),
    Detail("alpha_orthogonal", "number", "1/m: α of mutually orthogonal gradients"),
    Detail("definition", "string", "the definition"),
    Detail("mean_gradient_norm_sq", "number", "‖(1/m) Σ_i g_i‖²"),
    Detail(
        "per_example_gradient_norm",
        "object",
        "quantiles of ‖g_i‖ over the sample",
        fields=QUANTILE_FIELDS,
    ),
    Detail(
        "per_parameter",
        "array",
        "α and m-coherence of each parameter tensor",
        per="item",
        fields=(
            Detail("name", "string", "the parameter"),
            Detail("numel", "integer", "its size"),
            Detail("alpha", "number", "its α"),
            Detail("m_coherence", "number", "its m-coherence"),
        ),
    ),
    Detail("chunk_size", "integer", "examples per Jacobian chunk"),
    SAMPLE,
)


@measure(
    "coherence.m",
    result=COHERENCE_RESULT,
    group="representation",
    params=[
        Param("samples", int, 512, "m: training examples in the sample", min=2, max=100_000),
        Param(
            "chunk_size",
            int,
            0,
            "examples whose per-example gradients are held at once (0: from a 64 MiB budget)",
            min=0,
            max=100_000,
        ),
    ],
    direction=HIGHER_IS_BETTER,
    source="Chatterjee & Zielinski 2020, arXiv:2008.01217, §2 (α and m-coherence); "
    "Chatterjee 2020 (ICLR), Coherent Gradients",
    cost="moderate",
    requires=["functional"],
)
def coherence_m(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """m-coherence of the per-example gradients of the cross-entropy on a training sample.

    Chatterjee & Zielinski 2020 ("Making coherence out of nothing at all", §2):
    α = E_{z,z'}[g_z·g_z'] / E_z[‖g_z‖²] with z, z' independent draws from the sample, estimated by
    α̂ = ‖mean g‖² / mean ‖g‖²; the value is m-coherence = m·α̂ = ‖Σ g_i‖² / Σ ‖g_i‖² ∈ [0, m]
    (1 for pairwise orthogonal gradients, m for identical ones; the inverse of the gradient
    diversity of Yin et al. 2018). Per-example gradients by ``torch.func.vmap(grad)``, in chunks;
    sums in float64. Per-parameter-tensor α̂ in ``per_parameter``. Direction: higher is better, the
    authors' claim (coherent gradients generalize, Chatterjee 2020) — made for coherence followed
    during training: at a minimum of the training loss the mean gradient is ≈ 0 (−wd·θ with weight
    decay), so a final checkpoint's value mostly measures its distance from stationarity.
    """
    sample = ctx.train_sample(params["samples"], "coherence")
    p0 = ctx.params()
    names = list(p0)
    total = sum(t.numel() for t in p0.values())
    chunk = params["chunk_size"] or _auto_chunk(total)

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(ctx.functional(p, x[None]), y[None])

    per_example = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
    sums = {k: torch.zeros(v.shape, dtype=torch.float64, device=v.device) for k, v in p0.items()}
    sq = dict.fromkeys(names, 0.0)
    norms: list[torch.Tensor] = []
    m = sample.n
    for start in range(0, m, chunk):
        grads = per_example(p0, sample.x[start : start + chunk], sample.y[start : start + chunk])
        chunk_sq = torch.zeros(0, dtype=torch.float64)
        for k in names:
            g = grads[k].double()
            sums[k] += g.sum(dim=0)
            per = (g.reshape(g.shape[0], -1) ** 2).sum(dim=1).cpu()
            sq[k] += float(per.sum())
            chunk_sq = per if chunk_sq.numel() == 0 else chunk_sq + per
        norms.append(chunk_sq.sqrt())
        ctx.progress(min(1.0, (start + chunk) / m), f"{min(m, start + chunk)}/{m} examples")
    total_sum_sq = sum(float((s**2).sum()) for s in sums.values())
    total_sq = sum(sq.values())
    out = coherence_from_sums(total_sum_sq, total_sq, m)
    per_param = []
    for k in names:
        entry = coherence_from_sums(float((sums[k] ** 2).sum()), sq[k], m)
        per_param.append({"name": k, "numel": int(p0[k].numel()), **entry})
    result: dict[str, Any] = {
        "value": out["m_coherence"],
        "alpha": out["alpha"],
        "m": m,
        "alpha_orthogonal": 1.0 / m,
        "definition": "m-coherence = m * alpha = ||sum_i g_i||^2 / sum_i ||g_i||^2 "
        "(Chatterjee & Zielinski 2020); g_i the gradient of example i's cross-entropy",
        "mean_gradient_norm_sq": total_sum_sq / m**2,
        "per_example_gradient_norm": quantiles(torch.cat(norms)),
        "per_parameter": per_param,
        "chunk_size": chunk,
        "sample": {**sample.describe(), "split": "train"},
    }
    if not math.isfinite(out["m_coherence"]):
        result["reason"] = "every per-example gradient is zero"
    return result


# --- empirical NTK ------------------------------------------------------------------------------


def ntk_gram(
    fn: Any,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    chunk_size: int,
    keep_all: bool,
    progress: Any = None,
) -> tuple[torch.Tensor, dict[str, int]]:
    """Θ_ij = Σ_a ⟨∂f_a(x_i)/∂θ, ∂f_a(x_j)/∂θ⟩ (float64), from per-example Jacobians.

    Jacobians of ``fn(params, x_batch) -> logits`` per chunk of examples by
    ``vmap(jacrev)``, flattened to (chunk, K, P) in float64 and contracted block by block.
    With ``keep_all`` every chunk's Jacobian is kept (one Jacobian pass over the sample);
    otherwise block (i, j) recomputes chunk j (memory of two chunks, (c² + c)/2 passes for c
    chunks).
    """

    def single(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return fn(p, xi[None])[0]

    jac_fn = torch.func.vmap(torch.func.jacrev(single), in_dims=(None, 0))
    n = x.shape[0]
    starts = list(range(0, n, chunk_size))
    passes = 0

    def jac(start: int) -> torch.Tensor:
        nonlocal passes
        passes += 1
        j = jac_fn(params, x[start : start + chunk_size])
        parts = [t.reshape(t.shape[0], t.shape[1], -1).double() for t in j.values()]
        return torch.cat(parts, dim=2)

    gram = torch.zeros((n, n), dtype=torch.float64, device=x.device)
    stored: dict[int, torch.Tensor] = {}
    blocks = len(starts) * (len(starts) + 1) // 2
    done = 0
    for a, sa in enumerate(starts):
        ja = stored.get(sa) if keep_all else None
        if ja is None:
            ja = jac(sa)
            if keep_all:
                stored[sa] = ja
        for sb in starts[a:]:
            if sb == sa:
                jb = ja
            elif keep_all:
                if sb not in stored:
                    stored[sb] = jac(sb)
                jb = stored[sb]
            else:
                jb = jac(sb)
            block = ja.reshape(ja.shape[0], -1) @ jb.reshape(jb.shape[0], -1).T
            gram[sa : sa + ja.shape[0], sb : sb + jb.shape[0]] = block
            gram[sb : sb + jb.shape[0], sa : sa + ja.shape[0]] = block.T
            done += 1
            if progress is not None:
                progress(done / blocks, f"block {done}/{blocks}")
    return gram, {"jacobian_passes": passes, "chunks": len(starts), "chunk_size": chunk_size}


NTK_RESULT = (
    Detail("kernel", "string", "the Gram matrix's definition"),
    Detail("logits", "integer", "number of logits summed over"),
    Detail(
        "eigenvalues",
        "array",
        "eigenvalues of the n × n NTK Gram matrix, largest first",
        per="eigenvalue",
    ),
    Detail("lambda_max", "number", "largest eigenvalue"),
    Detail("lambda_min", "number", "smallest eigenvalue"),
    Detail("lambda_min_mean_over_logits", "number", "λ_min divided by the number of logits"),
    Detail("condition_number", "number", "λ_max / λ_min (null if λ_min ≤ 0)"),
    Detail("condition_reason", "string", "why condition_number is null"),
    Detail("trace", "number", "trace of the Gram matrix"),
    Detail("num_params", "integer", "parameters of the model"),
    Detail("jacobian_passes", "integer", "Jacobian computations"),
    Detail("chunks", "integer", "chunks of examples"),
    Detail("chunk_size", "integer", "examples per chunk"),
    SAMPLE,
)


@measure(
    "ntk.spectrum",
    result=NTK_RESULT,
    group="representation",
    params=[
        Param("samples", int, 256, "training examples in the Gram matrix", min=2, max=4096),
        Param(
            "max_memory_mb",
            int,
            512,
            "memory for Jacobians; above it, chunks are recomputed instead of kept",
            min=8,
            max=1_000_000,
        ),
    ],
    direction=None,
    source="Jacot, Gabriel & Hongler 2018; google/neural-tangents empirical_ntk_fn "
    "(JACOBIAN_CONTRACTION, here summed over logits); Du et al. 2019, Arora et al. 2019 (λ_min)",
    cost="expensive",
    requires=["functional"],
)
def ntk_spectrum(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Eigenvalues of the empirical NTK Gram matrix on a training subset, λ_min and condition.

    Θ_ij = Σ_a ⟨∂f_a(x_i)/∂θ, ∂f_a(x_j)/∂θ⟩, the trace over the K logits of the full nK×nK
    kernel (Jacot et al. 2018): **summed** over logits, where google/neural-tangents averages
    (divides by K); ``lambda_min_mean_over_logits`` gives that convention's λ_min. Eigenvalues by
    ``eigvalsh`` in float64; value λ_min (Du et al. 2019 and Arora et al. 2019 tie a larger
    λ_min of the infinite-width kernel to faster training and a smaller bound for two-layer nets;
    for a trained finite network there is no consensus, so no direction is declared).
    """
    sample = ctx.train_sample(params["samples"], "ntk")
    p0 = ctx.params()
    total = sum(t.numel() for t in p0.values())
    with torch.no_grad():
        k = int(ctx.model(sample.x[:1]).shape[1])
    bytes_per_example = k * total * 8
    budget = params["max_memory_mb"] * (1 << 20)
    keep_all = sample.n * bytes_per_example <= budget
    per_chunk = budget if keep_all else budget // 2
    chunk = max(1, min(sample.n, per_chunk // max(bytes_per_example, 1)))
    gram, work = ntk_gram(
        ctx.functional, p0, sample.x, chunk, keep_all, lambda f, msg: ctx.progress(0.95 * f, msg)
    )
    ctx.progress(0.97, "eigenvalues")
    eig = torch.linalg.eigvalsh(gram).flip(0).cpu()
    lam_max, lam_min = float(eig[0]), float(eig[-1])
    result: dict[str, Any] = {
        "value": lam_min,
        "kernel": "sum over logits: Theta_ij = sum_a <df_a(x_i)/dtheta, df_a(x_j)/dtheta>",
        "logits": k,
        "eigenvalues": eig,
        "lambda_max": lam_max,
        "lambda_min": lam_min,
        "lambda_min_mean_over_logits": lam_min / k,
        "condition_number": lam_max / lam_min if lam_min > 0 else None,
        "trace": float(torch.trace(gram)),
        "num_params": total,
        **work,
        "sample": {**sample.describe(), "split": "train"},
    }
    if lam_min <= 0:
        result["condition_reason"] = "λ_min <= 0 (the Gram matrix is singular to float64)"
    return result


# --- activation sparsity ------------------------------------------------------------------------


def relu_activity(
    ex: FeatureExtractor, x: torch.Tensor, batch_size: int, progress: Any = None
) -> list[dict[str, Any]]:
    """Per ReLU application: units, fraction of (example, unit) pairs with output > 0, dead
    units (never > 0 on ``x``) and, for conv layers, dead channels."""
    counts: dict[str, torch.Tensor] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    n = x.shape[0]
    for start, cap in ex.batches(x, batch_size):
        for name, out in cap.relus.items():
            active = (out > 0).reshape(out.shape[0], -1).sum(dim=0)
            counts[name] = counts[name] + active if name in counts else active
            shapes[name] = tuple(out.shape[1:])
        if progress is not None:
            progress(min(1.0, (start + batch_size) / n), f"{min(n, start + batch_size)}/{n}")
    layers = []
    for name, cnt in counts.items():
        units = int(cnt.numel())
        dead = cnt == 0
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(shapes[name]),
            "units": units,
            "active_fraction": float(cnt.double().sum() / (units * n)),
            "dead_units": int(dead.sum()),
            "dead_fraction": float(dead.double().mean()),
        }
        if len(shapes[name]) >= 2:  # (channels, spatial...)
            per_channel = cnt.reshape(shapes[name][0], -1).sum(dim=1)
            entry["dead_channels"] = int((per_channel == 0).sum())
        layers.append(entry)
    return layers


SPARSITY_RESULT = (
    Detail(
        "layers",
        "array",
        "per ReLU application: units, active fraction, dead units (and channels for conv)",
        per="layer",
        fields=(
            Detail("name", "string", "the ReLU application"),
            Detail("shape", "array", "its output shape per example", per="item"),
            Detail("units", "integer", "units"),
            Detail("active_fraction", "number", "fraction of (example, unit) pairs > 0"),
            Detail("dead_units", "integer", "units never > 0 on the sample"),
            Detail("dead_fraction", "number", "fraction of dead units"),
            Detail("dead_channels", "integer", "channels never > 0 (conv layers)"),
        ),
    ),
    Detail("units", "integer", "ReLU units in all"),
    Detail("dead_units", "integer", "dead units in all"),
    SAMPLE,
)


@measure(
    "activations.sparsity",
    result=SPARSITY_RESULT,
    group="representation",
    params=[Param("samples", int, 10_000, "training examples", min=1, max=10_000_000)],
    direction=None,
    source="Glorot, Bordes & Bengio 2011 (AISTATS), §3 (ReLU sparsity); Lu et al. 2020 "
    "(dying ReLU)",
)
def activations_sparsity(ctx: MeasureContext, params: dict[str, Any]) -> dict[str, Any]:
    """Fraction of active ReLU units over the data, per layer, and the count of dead units.

    For every ReLU application (a module used twice counts twice), the fraction of
    (example, unit) pairs with output > 0 (Glorot, Bordes & Bengio 2011 measure sparsity as the
    fraction of exact zeros, i.e. 1 − this) and the units that are never active on the sample
    (dead ReLUs, Lu et al. 2020); per channel for conv layers. The value is the fraction active
    over all ReLU units together. No declared direction: sparsity is argued to help
    (Glorot et al.) and dead units to hurt trainability; no consensus on the gap.
    """
    sample = ctx.train_sample(params["samples"], "activations")
    ex = FeatureExtractor(ctx.model, sample.x[:1], relus=True)
    layers = relu_activity(ex, sample.x, ctx.options.batch_size, ctx.progress)
    units = sum(layer["units"] for layer in layers)
    active = sum(layer["active_fraction"] * layer["units"] for layer in layers)
    return {
        "value": active / units if units else None,
        "layers": layers,
        "units": units,
        "dead_units": sum(layer["dead_units"] for layer in layers),
        "sample": {**sample.describe(), "split": "train"},
    }
