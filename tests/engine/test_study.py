"""Studies over runs: Kendall τ-a, granulated Kendall and CMI against brute force and hand-worked
examples; the study over reports; the ``study`` command; genscope.study never imports torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from genscope.cli import app
from genscope.study import (
    bootstrap_tau_ci,
    conditional_mutual_information,
    granulated_kendall,
    kendall_tau_a,
    study,
)


def _brute_tau(x, y) -> float:
    n = len(x)
    total = 0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return total / (n * (n - 1))


def _h(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


# --- Kendall ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_tau_a_matches_a_brute_force_pair_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, 23).astype(float)  # many ties
    y = rng.integers(0, 3, 23).astype(float)
    assert kendall_tau_a(x, y) == pytest.approx(_brute_tau(x, y), abs=1e-15)


def test_tau_a_hand_values_and_edge_cases() -> None:
    assert kendall_tau_a([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau_a([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs: (1,2) tie in x -> 0; (1,3) +; (2,3) +  -> 2 * 2 / 6
    assert kendall_tau_a([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)
    assert kendall_tau_a([5, 5, 5], [1, 2, 3]) == 0.0
    assert math.isnan(kendall_tau_a([1], [2]))
    with pytest.raises(ValueError):
        kendall_tau_a([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        kendall_tau_a([1, float("nan")], [1, 2])


def test_tau_a_equals_scipy_tau_b_without_ties() -> None:
    from scipy.stats import kendalltau

    rng = np.random.default_rng(7)
    x, y = rng.normal(size=40), rng.normal(size=40)
    assert kendall_tau_a(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)


def test_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(size=30)
    x = g + 0.3 * rng.normal(size=30)
    lo, hi = bootstrap_tau_ci(x, g, n_boot=500, seed=3)
    assert -1 <= lo <= kendall_tau_a(x, g) <= hi <= 1
    assert (lo, hi) == bootstrap_tau_ci(x, g, n_boot=500, seed=3)  # seeded
    assert (lo, hi) != bootstrap_tau_ci(x, g, n_boot=500, seed=4)
    # one resample by hand: runs (0, 0, 2) of x = g = (1, 2, 3): pairs (0,0) tie, (0,2) + twice
    idx = np.random.default_rng(11).integers(0, 3, size=(1, 3))[0]
    xs = np.array([1.0, 2.0, 3.0])
    expected = _brute_tau(xs[idx], xs[idx])
    assert bootstrap_tau_ci(xs, xs, n_boot=1, seed=11, level=0.5) == pytest.approx(
        (expected, expected)
    )
    with pytest.raises(ValueError):
        bootstrap_tau_ci(x, g, level=1.0)
    with pytest.raises(ValueError):
        bootstrap_tau_ci(x, g, n_boot=0)


# --- granulated Kendall -------------------------------------------------------------------------


def test_granulated_kendall_on_a_hand_computed_2x2_design() -> None:
    hp = [{"a": 0, "b": 0}, {"a": 1, "b": 0}, {"a": 0, "b": 1}, {"a": 1, "b": 1}]
    mu = [1.0, 2.0, 4.0, 3.0]
    gap = [1.0, 3.0, 2.0, 4.0]
    # ψ_a: b=0 group (runs 0, 1): μ up, g up -> +1; b=1 group (runs 2, 3): μ down, g up -> −1
    # ψ_b: a=0 group (runs 0, 2): +1;  a=1 group (runs 1, 3): μ 2<3, g 3<4 -> +1
    out = granulated_kendall(mu, gap, hp)
    assert out["psi"] == {"a": 0.0, "b": 1.0}
    assert out["Psi"] == 0.5
    assert out["groups"] == {"a": 2, "b": 2}


def test_granulated_kendall_skips_groups_without_variation() -> None:
    hp = [{"a": 0, "b": 0}, {"a": 1, "b": 0}, {"a": 0, "b": 1}]  # incomplete design
    out = granulated_kendall([1.0, 2.0, 3.0], [1.0, 2.0, 0.0], hp)
    assert out["psi"]["a"] == 1.0 and out["groups"]["a"] == 1 and out["skipped_groups"]["a"] == 1
    assert out["psi"]["b"] == -1.0  # a=0 group: μ 1<3, g 1>0


# --- conditional mutual information -------------------------------------------------------------


def test_cmi_on_a_hand_worked_example() -> None:
    mu = [1.0, 3.0, 2.0]
    gap = [1.0, 2.0, 3.0]
    hp = [{"h": 0, "k": 0}, {"h": 0, "k": 1}, {"h": 1, "k": 1}]
    # all 9 ordered pairs (self-pairs included), V = 1[a_i > a_j]:
    # (V_g, V_μ) counts: (0,0): 5, (0,1): 1, (1,0): 1, (1,1): 2
    # I = 5/9 log2((5/9)/(4/9)) + 2·(1/9) log2(1/2) + 2/9 log2(2) = 5/9 log2(5/4); H(V_g) = H(1/3)
    empty = (5 / 9) * math.log2(5 / 4) / _h(1 / 3)
    # S = {h}: only the stratum (0, 0) (runs 0, 1: 4 pairs) has V_g varying, with V_μ = V_g -> 1
    # S = {k}: only the stratum (1, 1) (runs 1, 2) varies: counts (0,0) 2, (0,1) 1, (1,0) 1
    i_k = 0.5 * math.log2((1 / 2) / (9 / 16)) + 2 * 0.25 * math.log2((1 / 4) / (3 / 16))
    only_k = i_k / _h(1 / 4)
    # S = {h, k}: every stratum is a single pair: V_g constant everywhere -> undefined
    out = conditional_mutual_information(mu, gap, hp)
    scores = {tuple(e["set"]): e["score"] for e in out["by_set"]}
    assert scores[()] == pytest.approx(empty, rel=1e-12)
    assert scores[("h",)] == pytest.approx(1.0, rel=1e-12)
    assert scores[("k",)] == pytest.approx(only_k, rel=1e-12)
    assert math.isnan(scores[("h", "k")])
    assert out["score"] == pytest.approx(only_k) and out["conditioning_set"] == ["k"]
    assert math.isnan(out["pgdl_score"])


def test_cmi_is_one_for_the_gap_itself_and_small_for_noise() -> None:
    rng = np.random.default_rng(1)
    hp = [{"a": a, "b": b} for a in range(3) for b in range(3) for _ in range(3)]
    gap = np.array([h["a"] + 0.5 * h["b"] for h in hp]) + 0.1 * rng.normal(size=len(hp))
    perfect = conditional_mutual_information(gap, gap, hp)
    assert perfect["score"] == pytest.approx(1.0) and perfect["pgdl_score"] == pytest.approx(1.0)
    noise = conditional_mutual_information(rng.normal(size=len(hp)), gap, hp)
    assert noise["score"] < 0.2
    # on this balanced design pair-weighting and uniform strata agree (PGDL's averaging)
    measure = gap + rng.normal(size=len(hp))
    uniform = conditional_mutual_information(measure, gap, hp, weighting="uniform")
    pairs = conditional_mutual_information(measure, gap, hp)
    for eu, ep in zip(uniform["by_set"], pairs["by_set"], strict=True):
        assert eu["score"] == pytest.approx(ep["score"], rel=1e-12)
    assert pairs["pgdl_score"] == pytest.approx(pairs["by_set"][-1]["score"], rel=1e-12)


# --- the study over reports ---------------------------------------------------------------------


def _report(gap: float, measures: dict[str, tuple[float | None, str | None]]) -> dict:
    out = {}
    for mid, (value, direction) in measures.items():
        entry = {"value": value, "params": {}, "seconds": 0.1, "status": "ok"}
        if value is None:
            entry.update(status="failed", error={"code": "measure_failed", "message": "x"})
        if direction:
            entry["direction"] = direction
        out[mid] = entry
    return {
        "schema": "genscope.report/1",
        "model": {"format": "module", "sha256": "x", "num_params": 1, "layers": []},
        "data": {"name": "d", "sha256": "y", "n_train": 1, "n_test": 1, "num_classes": 2},
        "metrics": {
            "generalization_gap": gap,
            "train_loss": 0.0,
            "train_accuracy": 1.0,
            "test_loss": 0.0,
            "test_accuracy": None if gap is None else 1.0 - gap,
        },
        "measures": out,
    }


def _design():
    rng = np.random.default_rng(0)
    labels = [{"width": w, "noise": n} for w in (32, 128) for n in (0.0, 0.2, 0.4) for _ in (0, 1)]
    reports = []
    for i, lab in enumerate(labels):
        gap = lab["noise"] + 0.01 * lab["width"] / 128 + 0.001 * i
        reports.append(
            _report(
                gap,
                {
                    "sharp": (gap * 3 + 1, "lower_is_better"),
                    "margin": (-gap, "higher_is_better"),
                    "wrong": (gap, "higher_is_better"),
                    "free": (-gap, None),
                    "noise": (float(rng.normal()), "lower_is_better"),
                    "rare": (1.0 if i < 2 else None, "lower_is_better"),
                },
            )
        )
    reports.append(_report(None, {"sharp": (5.0, "lower_is_better")}))  # no gap: not used
    labels.append({"width": 32, "noise": 0.0})
    return reports, labels


def test_study_ranks_by_sign_adjusted_tau() -> None:
    reports, labels = _design()
    out = study(reports, labels, n_boot=200)
    json.dumps(out, allow_nan=False)  # JSON-serialisable, no NaN
    by_id = {e["id"]: e for e in out["measures"]}
    assert by_id["sharp"]["tau"] == 1.0 and by_id["sharp"]["tau_adjusted"] == 1.0
    assert by_id["margin"]["tau"] == -1.0 and by_id["margin"]["tau_adjusted"] == 1.0
    assert by_id["wrong"]["tau_adjusted"] == -1.0
    assert by_id["free"]["tau_adjusted"] is None and by_id["free"]["score"] == 1.0
    assert by_id["sharp"]["runs"] == 12  # the run without a gap is left out
    assert out["ranking"][-1] == "wrong"
    assert set(out["ranking"][:3]) == {"sharp", "margin", "free"}
    assert [s["id"] for s in out["skipped"]] == ["rare"]
    assert out["hyperparameters"] == ["noise", "width"]
    gran = by_id["margin"]["granulated"]
    assert gran["Psi_adjusted"] == 1.0 and gran["psi_adjusted"] == {"noise": 1.0, "width": 1.0}
    assert by_id["sharp"]["cmi"]["score"] == pytest.approx(1.0)
    assert by_id["sharp"]["ci_adjusted"][1] <= 1.0
    assert [e["rank"] for e in out["measures"]] == list(range(1, len(out["measures"]) + 1))


def test_study_without_labels_and_bad_input() -> None:
    reports, _ = _design()
    out = study(reports[:5])
    assert "granulated" not in out["measures"][0] and "cmi" not in out["measures"][0]
    with pytest.raises(ValueError):
        study(reports, [{}])
    with pytest.raises(ValueError):
        study([{"measures": {}}])


def test_study_command(tmp_path) -> None:
    reports, labels = _design()
    paths = []
    for i, rep in enumerate(reports):
        path = tmp_path / f"run{i}.report.json"
        path.write_text(json.dumps(rep))
        paths.append(str(path))
    label_file = tmp_path / "labels.json"
    label_file.write_text(json.dumps({f"run{i}.report": lab for i, lab in enumerate(labels)}))
    out = tmp_path / "study.json"
    result = CliRunner().invoke(
        app, ["study", *paths, "--labels", str(label_file), "--out", str(out), "--n-boot", "50"]
    )
    assert result.exit_code == 0, result.output
    assert "sharp" in result.output and "skipped: rare" in result.output
    written = json.loads(out.read_text())
    assert written["ranking"][-1] == "wrong"
    assert written["runs"][0]["name"] == "run0.report"
    bad = CliRunner().invoke(app, ["study", *paths, "--labels", str(tmp_path / "nope.json")])
    assert bad.exit_code == 2 and "bad_parameter" in bad.output


def test_importing_the_study_module_leaves_torch_out() -> None:
    code = "import sys, genscope.study; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
