"""The "How to read this" text of every dashboard figure: what is plotted, on which split and
sample, which way is better, the paper it comes from and the measure it documents.

Each figure spec of the pages' payload carries ``help: {"title", "text", "source", "anchor"}``
(plain text; ``anchor`` is the measure id, whose definition is in docs/measures.md and
docs/results.md, or ``studies`` for the rank correlations across runs). The run page's text
also says the sample the measure recorded (``sample``: size, whole set or not, split).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from frontend.figures.common import Report, measure, measures_of

#: figure id -> (anchor measure id, what is plotted and which way is better, source)
FIGURE_HELP: dict[str, tuple[str, str, str]] = {
    "margin_distribution": (
        "margin.output",
        "Histogram and cumulative distribution of each training example's margin; the menu "
        "switches the kind (output, all-layer, normalized). Negative margins are misclassified "
        "examples. Larger margins (mass further right, CDF lower) are better.",
        "Bartlett et al. 2017; Wei & Ma 2020; Jiang et al. 2019",
    ),
    "margin_per_class": (
        "margin.output",
        "Per-class box of the margins (whiskers p10-p90) on the training set. A class whose "
        "box sits low is learned with less room to spare; higher is better.",
        "Bartlett et al. 2017",
    ),
    "margin_class_cdf": (
        "margin.output",
        "Cumulative distribution of the output margin for each class of the training set. A "
        "curve further right means larger margins for that class, which is better.",
        "Bartlett et al. 2017",
    ),
    "margin_scatter": (
        "margin.all_layer",
        "Each point is a training example: its output margin (x) against its all-layer margin "
        "(y). Points near zero on either axis are fragile; larger is better on both axes.",
        "Wei & Ma 2020, all-layer margin",
    ),
    "layer_shares": (
        "margin.all_layer",
        "Mean share of the smallest flipping all-layer perturbation that falls on each layer: "
        "where the network is easiest to push over. No better or worse; a layer taking most "
        "of the share is the bottleneck.",
        "Wei & Ma 2020",
    ),
    "hidden_margins": (
        "margin.hidden",
        "Distribution signature (quartiles and fences) of the normalized first-order margin at "
        "each layer's output, on the training set. Higher margins are better.",
        "Jiang et al. 2019, Predicting the generalization gap in deep networks",
    ),
    "robust_accuracy": (
        "margin.robust",
        "Fraction of training examples still classified correctly under input perturbations "
        "up to ε (L2 and L∞). A curve that falls later (to the right) is more robust: better.",
        "minimum-norm attacks on the input",
    ),
    "hessian_eigenvalues": (
        "hessian.top_eigenvalues",
        "Largest Hessian (and GGN) eigenvalues of the mean training loss by rank, Lanczos; "
        "the Lanczos residual on hover. Smaller top eigenvalues mean a flatter minimum, "
        "usually read as better.",
        "Lanczos; Ghorbani et al. 2019",
    ),
    "hessian_density": (
        "hessian.density",
        "Smoothed spectral density of the Hessian (and GGN) by stochastic Lanczos quadrature, "
        "log density axis; triangles mark outlying eigenvalues. Mass near zero and few large "
        "outliers mean a flatter minimum.",
        "Ghorbani et al. 2019, An investigation into neural net optimization via Hessian "
        "eigenvalue density",
    ),
    "layer_spectra": (
        "hessian.layer_spectra",
        "Top eigenvalue and trace of each layer's diagonal Hessian block: which layers carry "
        "the curvature. Smaller is flatter.",
        "Ghorbani et al. 2019",
    ),
    "ntk_spectrum": (
        "ntk.spectrum",
        "Eigenvalues of the empirical neural tangent kernel on a sample of training inputs, by "
        "rank. A fast decay means the network fits few directions easily; no direction is "
        "better by itself.",
        "Jacot et al. 2018",
    ),
    "sharpness_curves": (
        "sharpness.sam",
        "Each sharpness measure at several multiples of its radius ρ (ε for Keskar), ± one "
        "standard error, on a training sample. Lower curves are flatter: better.",
        "Foret et al. 2021; Andriushchenko et al. 2023; Keskar et al. 2017",
    ),
    "flatness_search": (
        "sharpness.pacbayes_flatness",
        "Training accuracy under Gaussian weight noise of scale σ during the bisection; the "
        "dotted line is the σ found (accuracy drop 0.1). A larger σ found is flatter: better.",
        "Jiang et al. 2020, appendix C.3; Dziugaite et al. 2020",
    ),
    "landscape_1d": (
        "landscape.slice_1d",
        "Training loss along filter-normalized directions through the weights (α = 0 is the "
        "checkpoint), or along the line to another checkpoint. A wide, low basin is flatter; "
        "a barrier between checkpoints means they are not linearly connected.",
        "Li et al. 2018, Visualizing the loss landscape of neural nets",
    ),
    "landscape_2d": (
        "landscape.slice_2d",
        "Training loss on a plane of two filter-normalized directions through the weights "
        "(centre = the checkpoint). Wider low contours are flatter.",
        "Li et al. 2018",
    ),
    "bound_breakdown": (
        "bound.spectral",
        "Each bound on the test error (log scale) against the measured test error (dashed) "
        "and 1 (dotted). A bound ≥ 1 is vacuous: it says nothing. Lower is better, and only a "
        "bound below the error of guessing says something.",
        "Bartlett et al. 2017; Neyshabur et al. 2018; Wei & Ma 2020; Dziugaite & Roy 2017",
    ),
    "complexity_layers": (
        "complexity.spectral",
        "Per-layer norms behind the norm-based measures, BatchNorm folded: the operator norm "
        "(linear: of the weight matrix; conv: of the convolution at its input shape) and the "
        "Frobenius norm (linear: of the weight matrix; conv: of the kernel). A convolution's "
        "operator norm can exceed its kernel's Frobenius norm: they are norms of different "
        "objects, and ‖conv‖₂ ≤ √(k·k′)·‖K‖_F for a k×k′ kernel. Smaller norms give smaller "
        "complexity.",
        "Jiang et al. 2020, eqs. 29-42; Sedghi et al. 2019, The Singular Values of "
        "Convolutional Layers, Thm. 6",
    ),
    "compare_margin_cdfs": (
        "margin.output",
        "Cumulative distribution of the training margins, one colour per run; the menu "
        "switches the margin kind. A run whose curve lies further right has larger margins: "
        "better.",
        "Bartlett et al. 2017; Wei & Ma 2020",
    ),
    "compare_margin_densities": (
        "margin.output",
        "Density of the training margins on bins shared by every run, one colour per run. "
        "Mass further right is better.",
        "Bartlett et al. 2017",
    ),
    "compare_spectral_density": (
        "hessian.density",
        "Hessian spectral densities (stochastic Lanczos quadrature, log density), one colour "
        "per run, each on its own training sample. Mass near zero means flatter.",
        "Ghorbani et al. 2019",
    ),
    "compare_eigenvalues": (
        "hessian.top_eigenvalues",
        "Top Hessian eigenvalues of the mean training loss by rank, one line per run. Lower "
        "is flatter.",
        "Lanczos",
    ),
    "compare_bounds": (
        "bound.spectral",
        "Each bound on the test error per run (log scale); the dotted line at 1 marks "
        "vacuous bounds. A hatched bar marked 'no value' is a run without that bound (the "
        "reason on hover). Lower is better, and no vacuous bound is better than another.",
        "Bartlett et al. 2017; Neyshabur et al. 2018; Wei & Ma 2020; Dziugaite & Roy 2017",
    ),
    "gap_scatter": (
        "studies",
        "Each measure (x) against the measured generalization gap (y, test error − train "
        "error), "
        "one point per run. τ is Kendall's τ-a (ties count 0) with a 95 % bootstrap interval "
        "over the runs and n the runs used; a τ of the sign its direction predicts means the "
        "measure ranks the runs' gaps. With fewer than five runs, or runs of different "
        "architectures or data, τ cannot rank measures.",
        "Jiang et al. 2020, Fantastic generalization measures and where to find them, eq. 3",
    ),
}


def _sample_line(entry: Mapping[str, Any] | None) -> str:
    """The sample a measure recorded, in one sentence (empty when it recorded none)."""
    sample = entry.get("sample") if isinstance(entry, Mapping) else None
    if not isinstance(sample, Mapping) or sample.get("size") is None:
        return ""
    split = {"train": "training", "test": "test"}.get(str(sample.get("split") or "train"))
    split = split or str(sample.get("split"))
    if sample.get("whole_set"):
        return f"Computed on the whole {split} set ({sample['size']} examples)."
    return f"Computed on a sample of {sample['size']} {split} examples."


def figure_help(fid: str, title: str, report: Report | None = None) -> dict[str, str] | None:
    """The ``help`` of figure ``fid`` (``None`` for a figure without one); with the run's
    ``report``, the text also gives the sample its measure used."""
    known = FIGURE_HELP.get(fid)
    if known is None:
        return None
    anchor, text, source = known
    if report is not None:
        entry = measure(report, anchor) or measures_of(report).get(anchor)
        line = _sample_line(entry)
        text = f"{text} {line}" if line else text
    return {"title": title, "text": text, "source": source, "anchor": anchor}
