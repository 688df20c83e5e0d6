"""Small, torch-free statistics for the dashboard: rank correlation with its bootstrap interval,
downsampling, ECDFs.

Everything here works on plain Python sequences or numpy arrays so that the API process can
import it without pulling in the engine (which imports torch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from genscope.study import kendall_tau_a as study_tau_a


def finite_array(values: Iterable[Any] | None) -> np.ndarray:
    """The finite numbers of ``values`` as a float64 array (``None``, NaN and ±inf dropped)."""
    if values is None:
        return np.zeros(0)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return np.asarray(out, dtype=np.float64)


def kendall_tau_a(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-a (:func:`genscope.study.kendall_tau_a`: ties count 0, Jiang et al. 2020,
    eq. 3) on the pairs where both values are finite numbers.

    Returns:
        τ-a in [−1, 1], or ``None`` when fewer than two complete pairs remain.

    Raises:
        ValueError: when ``x`` and ``y`` have different lengths.

    >>> kendall_tau_a([1, 2, 3, None], [1, 1, 2, 5])  # one tied pair counts 0: (2 - 0) / 3
    0.6666666666666666
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_a needs paired samples, got lengths {len(x)} and {len(y)}")
    pairs = [
        (float(a), float(b))
        for a, b in zip(x, y, strict=True)
        if _is_finite_number(a) and _is_finite_number(b)
    ]
    if len(pairs) < 2:
        return None
    return study_tau_a([a for a, _ in pairs], [b for _, b in pairs])


#: Below this many runs a rank correlation says little about which measure predicts the gap.
MIN_RUNS_TO_RANK = 5


def kendall_tau_interval(
    x: Sequence[float],
    y: Sequence[float],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """A percentile bootstrap interval for Kendall's τ-a (Efron & Tibshirani 1993, ch. 13):
    the runs (pairs) are resampled with replacement, τ-a is recomputed on each resample over
    the pairs of draws of two different runs (two draws of one run are no pair: counting them
    as ties would pull every resample towards 0; a tie between two runs counts 0, as in
    :func:`kendall_tau_a`), and the interval holds the central ``level`` of those values;
    resamples of a single run are left out. Deterministic for a given ``seed``.

    Returns:
        ``(low, high)`` within [−1, 1], or ``None`` when fewer than two complete pairs remain.

    >>> kendall_tau_interval([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])[1]
    1.0
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_interval needs paired samples, got {len(x)} and {len(y)}")
    pairs = [
        (float(a), float(b))
        for a, b in zip(x, y, strict=True)
        if _is_finite_number(a) and _is_finite_number(b)
    ]
    n = len(pairs)
    if n < 2:
        return None
    a = np.asarray([p[0] for p in pairs])
    b = np.asarray([p[1] for p in pairs])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    ra, rb = a[idx], b[idx]
    sa = np.sign(ra[:, :, None] - ra[:, None, :])
    sb = np.sign(rb[:, :, None] - rb[:, None, :])
    distinct = idx[:, :, None] != idx[:, None, :]
    pairs_used = distinct.sum(axis=(1, 2))
    keep = pairs_used > 0
    taus = (sa * sb * distinct).sum(axis=(1, 2))[keep] / pairs_used[keep]
    alpha = (1.0 - level) / 2
    low, high = np.quantile(taus, [alpha, 1.0 - alpha])
    return float(low), float(high)


def format_tau(tau: float | None, interval: tuple[float, float] | None, n: int) -> str:
    """The rank correlation as the dashboard prints it, with its interval and run count.

    >>> format_tau(1 / 3, (-0.6, 1.0), 3)
    'τ = 0.33 [−0.60, 1.00], n = 3 runs'
    """

    def f(v: float) -> str:
        return f"{v:.2f}".replace("-", "−")

    runs = f"n = {n} run{'s' if n != 1 else ''}"
    if tau is None:
        return f"τ undefined, {runs}"
    ci = f" [{f(interval[0])}, {f(interval[1])}]" if interval is not None else ""
    return f"τ = {f(tau)}{ci}, {runs}"


def _is_finite_number(v: Any) -> bool:
    if v is None or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def downsample_indices(n: int, max_points: int, keep: Iterable[int] = ()) -> np.ndarray:
    """At most ``max_points`` sorted indices into ``range(n)``, evenly spread, always with
    the first and last index and every index in ``keep`` (e.g. the argmin and argmax).

    Args:
        n: Length of the array to thin out.
        max_points: Upper bound on the result's length (at least 2, plus ``keep``'s size).
        keep: Indices that must survive.

    Returns:
        A sorted int64 array of unique indices.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    keep_set = {int(k) for k in keep if 0 <= int(k) < n}
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    budget = max(2, max_points - len(keep_set))
    base = np.unique(np.round(np.linspace(0, n - 1, budget)).astype(np.int64))
    return np.unique(np.concatenate([base, np.fromiter(keep_set, dtype=np.int64)]))


def downsample_pairs(
    x: np.ndarray, y: np.ndarray, max_points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin out paired per-example values for a scatter plot.

    Keeps the examples holding the minimum and maximum of each coordinate, so the plotted
    extent equals the data's. Returns ``(x, y, indices)``.
    """
    n = len(x)
    if n == 0:
        return x, y, np.zeros(0, dtype=np.int64)
    keep = [int(np.argmin(x)), int(np.argmax(x)), int(np.argmin(y)), int(np.argmax(y))]
    # an even stride over a random-looking order would still be biased on sorted data, so
    # take a fixed-seed random subset instead of a stride
    if n > max_points:
        rng = np.random.default_rng(0)
        chosen = rng.choice(n, size=max(1, max_points - len(keep)), replace=False)
        idx = np.unique(np.concatenate([chosen, np.array(keep, dtype=np.int64)]))
    else:
        idx = np.arange(n, dtype=np.int64)
    return x[idx], y[idx], idx


def ecdf(values: Iterable[Any] | None, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF points ``(x, F(x))`` of the finite values, at most ``max_points`` of
    them; the smallest and largest value are always kept (F = 1/n and 1)."""
    v = np.sort(finite_array(values))
    n = len(v)
    if n == 0:
        return v, v
    f = np.arange(1, n + 1, dtype=np.float64) / n
    idx = downsample_indices(n, max_points)
    return v[idx], f[idx]


def histogram_density(
    values: Iterable[Any] | None, edges: np.ndarray | None = None, bins: int = 60
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A density histogram ``(centers, density, edges)`` of the finite values.

    With ``edges`` given (e.g. shared by several runs of a comparison) those are used;
    otherwise ``bins`` equal bins span the data's min to max.
    """
    v = finite_array(values)
    if edges is None:
        edges = shared_edges([v], bins=bins)
    if len(v) == 0 or edges is None or len(edges) < 2:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0) if edges is None else edges
    counts, edges = np.histogram(v, bins=edges)
    widths = np.diff(edges)
    total = counts.sum()
    density = counts / (total * widths) if total else counts.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    return centers, density, edges


def shared_edges(samples: Sequence[np.ndarray], bins: int = 60) -> np.ndarray | None:
    """Equal-width bin edges spanning every sample's range (``None`` when all are empty)."""
    nonempty = [s for s in samples if len(s)]
    if not nonempty:
        return None
    lo = min(float(s.min()) for s in nonempty)
    hi = max(float(s.max()) for s in nonempty)
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    return np.linspace(lo, hi, bins + 1)
