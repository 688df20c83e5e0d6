"""Kendall τ-a, downsampling and ECDF helpers of the dashboard."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from frontend.stats import (
    downsample_indices,
    downsample_pairs,
    ecdf,
    histogram_density,
    kendall_tau_a,
    shared_edges,
)


def brute_force_tau_a(x: list[float], y: list[float]) -> float:
    """(concordant − discordant) / (n choose 2), counting pairs one by one; ties count 0."""
    concordant = discordant = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        s = (x[i] - x[j]) * (y[i] - y[j])
        if s > 0:
            concordant += 1
        elif s < 0:
            discordant += 1
    n = len(x)
    return (concordant - discordant) / (n * (n - 1) / 2)


@pytest.mark.parametrize("seed", range(20))
def test_kendall_tau_a_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 25))
    # few distinct values: many ties in both variables
    x = rng.integers(0, 4, size=n).astype(float).tolist()
    y = rng.integers(0, 4, size=n).astype(float).tolist()
    assert kendall_tau_a(x, y) == pytest.approx(brute_force_tau_a(x, y), abs=1e-12)


def test_kendall_tau_a_closed_forms() -> None:
    assert kendall_tau_a([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau_a([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # all tied: every pair counts 0 (τ-b would be undefined)
    assert kendall_tau_a([1, 1, 1], [1, 2, 3]) == 0.0
    # one tied pair out of three: (2 - 0) / 3, where τ-b would give 2/sqrt(3*2)
    assert kendall_tau_a([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / 3)


def test_kendall_tau_a_equals_scipy_without_ties() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=15), rng.normal(size=15)
    assert kendall_tau_a(x.tolist(), y.tolist()) == pytest.approx(scipy_stats.kendalltau(x, y)[0])


def test_kendall_tau_a_drops_missing_pairs_and_checks_lengths() -> None:
    assert kendall_tau_a([1, None, 3, math.nan], [1, 5, 2, 7]) == 1.0
    assert kendall_tau_a([1], [2]) is None
    assert kendall_tau_a([], []) is None
    with pytest.raises(ValueError, match="lengths 2 and 3"):
        kendall_tau_a([1, 2], [1, 2, 3])


def test_downsample_indices_bounds_and_keeps_ends() -> None:
    idx = downsample_indices(10_000, 100, keep=[1234, 5678])
    assert len(idx) <= 102
    assert idx[0] == 0 and idx[-1] == 9_999
    assert {1234, 5678} <= set(idx.tolist())
    assert np.all(np.diff(idx) > 0)
    assert downsample_indices(5, 100).tolist() == [0, 1, 2, 3, 4]
    assert downsample_indices(0, 10).size == 0


def test_ecdf_keeps_min_and_max() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=50_000)
    xs, fs = ecdf([*v.tolist(), None, math.inf], max_points=300)
    assert len(xs) <= 300
    assert xs[0] == v.min() and xs[-1] == v.max()
    assert fs[0] == pytest.approx(1 / v.size) and fs[-1] == 1.0
    assert np.all(np.diff(xs) >= 0)


def test_downsample_pairs_keeps_extremes_of_both_coordinates() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=20_000), rng.normal(size=20_000)
    dx, dy, idx = downsample_pairs(x, y, 500)
    assert len(dx) <= 500
    assert dx.min() == x.min() and dx.max() == x.max()
    assert dy.min() == y.min() and dy.max() == y.max()
    assert np.array_equal(dx, x[idx])


def test_histogram_density_integrates_to_one_on_shared_edges() -> None:
    a, b = np.arange(100.0), np.arange(50.0, 300.0)
    edges = shared_edges([a, b], bins=30)
    assert edges is not None and edges[0] == 0 and edges[-1] == 299
    for v in (a, b):
        centers, density, e = histogram_density(v, edges=edges)
        assert np.sum(density * np.diff(e)) == pytest.approx(1.0)
        assert len(centers) == 30
    centers, density, _ = histogram_density([])
    assert centers.size == 0 and density.size == 0
    # a constant sample still gets a bin
    centers, density, _ = histogram_density([2.0, 2.0])
    assert len(centers) > 0
