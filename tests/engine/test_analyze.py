"""``analyze``: metrics, output margins, report schema, errors on data that does not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import genscope
from genscope.analysis import run_measure
from genscope.errors import BadParameter, ShapeMismatch, UnsafeCheckpoint
from genscope.io.checkpoints import LoadedModel, load_checkpoint
from genscope.io.datasets import from_arrays, load_dataset
from genscope.io.zoo import build_model
from genscope.measures.context import AnalysisOptions, MeasureContext
from genscope.measures.registry import Measure, Param
from genscope.report import validate_report
from tests.engine.helpers import export_pt2, save_state_dict, script_pt

RESNET20 = {"depth": 20, "in_channels": 1, "input_size": 8, "num_classes": 10}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return build_model("mlp", {"input_dim": 64, "widths": [32], "num_classes": 10}).eval()


def _expected(model, x, y):
    with torch.no_grad():
        out = model(x).double()
    loss = F.cross_entropy(out, y).item()
    acc = (out.argmax(1) == y).double().mean().item()
    true = out.gather(1, y[:, None]).squeeze(1)
    other = out.scatter(1, y[:, None], float("-inf")).max(1).values
    return loss, acc, true - other


def _check_report(report, model, data) -> None:
    d = report.to_dict()
    assert validate_report(d) == []
    loss, acc, margins = _expected(model, data.x_train, data.y_train)
    test_loss, test_acc, _ = _expected(model, data.x_test, data.y_test)
    m = d["metrics"]
    assert m["train_loss"] == pytest.approx(loss, rel=1e-5)
    assert m["train_accuracy"] == pytest.approx(acc)
    assert m["test_loss"] == pytest.approx(test_loss, rel=1e-5)
    assert m["generalization_gap"] == pytest.approx((1 - test_acc) - (1 - acc))
    res = d["measures"]["margin.output"]
    assert res["status"] == "ok"
    np.testing.assert_allclose(res["values"], margins.numpy(), rtol=1e-5, atol=1e-5)
    assert res["value"] == pytest.approx(float(np.median(margins.numpy())), rel=1e-5)
    assert set(res["quantiles"]) == {"p10", "p25", "p50", "p75", "p90"}
    assert len(res["per_class"]) == data.num_classes


def test_export_mlp_on_digits(tmp_path: Path, digits, mlp) -> None:
    path = export_pt2(mlp, digits.x_train[:4], tmp_path / "mlp.pt2")
    report = genscope.analyze(path, digits, ["margin.output"])
    _check_report(report, mlp, digits)
    d = report.to_dict()
    assert d["model"]["format"] == "torch.export"
    assert [layer["shape"] for layer in d["model"]["layers"]] == [[32, 64], [10, 32]]
    assert d["settings"]["mode"] == "eval"


def test_zoo_resnet20_state_dict_on_digits(tmp_path: Path, digits) -> None:
    torch.manual_seed(1)
    net = build_model("resnet", RESNET20).eval()
    path = save_state_dict(net, tmp_path / "r20.pt", wrap="state_dict", prefix="module.")
    report = genscope.analyze(path, digits, "margins", arch="resnet", arch_config=RESNET20)
    _check_report(report, net, digits)
    d = report.to_dict()
    assert d["model"]["unwrapped"] and d["model"]["arch"] == "resnet"
    assert len(d["model"]["layers"]) == 22  # 19 convs + 2 projection shortcuts + fc


def test_cifar_shaped_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "cifar.npz",
        x_train=rng.random((24, 3, 32, 32), dtype=np.float32),
        y_train=rng.integers(0, 10, 24),
        x_test=rng.random((8, 3, 32, 32), dtype=np.float32),
        y_test=rng.integers(0, 10, 8),
    )
    data = load_dataset(f"npz:{tmp_path / 'cifar.npz'}")
    torch.manual_seed(2)
    net = build_model("resnet", {"depth": 20}).eval()
    report = genscope.analyze(net, data, ["margin.output"])
    _check_report(report, net, data)
    assert report.data["input_shape"] == [3, 32, 32] and report.data["n_test"] == 8


def test_torchscript_file_is_refused(tmp_path: Path, digits, mlp) -> None:
    with pytest.raises(UnsafeCheckpoint, match="TorchScript"):
        genscope.analyze(script_pt(mlp, tmp_path / "s.pt"), digits, ["margin.output"])


def test_float64_and_determinism(digits, mlp) -> None:
    opts = AnalysisOptions(dtype="float64", seed=3)
    a = genscope.analyze(mlp, digits, ["margin.output"], options=opts).to_dict()
    b = genscope.analyze(mlp, digits, ["margin.output"], options=opts).to_dict()
    assert a["settings"]["dtype"] == "float64"
    assert a["measures"]["margin.output"]["values"] == b["measures"]["margin.output"]["values"]
    assert a["metrics"] == b["metrics"]


def test_progress_reaches_one(digits, mlp) -> None:
    seen: list[float] = []
    genscope.analyze(mlp, digits, ["margin.output"], progress=lambda f, _m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)


def test_inputs_that_do_not_fit_name_both_shapes(digits) -> None:
    moons = load_dataset("moons")
    net = build_model("mlp", {"input_dim": 64, "widths": [8]})
    with pytest.raises(ShapeMismatch, match=r"\(2,\)"):
        genscope.analyze(net, moons)
    small = build_model("mlp", {"input_dim": 64, "widths": [8], "num_classes": 3})
    with pytest.raises(ShapeMismatch, match="3 logits .* 10 classes"):
        genscope.analyze(small, digits)


def test_bad_parameter_is_refused_before_any_work(digits, mlp) -> None:
    with pytest.raises(BadParameter):
        genscope.analyze(mlp, digits, ["margin.output"], params={"margin.output": {"nope": 1}})


def test_a_failing_measure_is_recorded_and_the_rest_go_on(digits, mlp) -> None:
    ctx = MeasureContext(LoadedModel(mlp, "module", "x"), digits)

    def broken(_ctx, _params):
        raise RuntimeError("boom")

    m = Measure("test.broken", "margins", broken, (Param("a", int, 1),))
    res = run_measure(ctx, m, {"a": 1}, lambda _f, _m: None)
    assert res.status == "failed" and res.error == {
        "code": "measure_failed",
        "message": "RuntimeError: boom",
    }
    functional = Measure("test.functional", "hessian", broken, requires=frozenset({"functional"}))
    scripted = LoadedModel(torch.jit.script(mlp), "torchscript", "y")
    res = run_measure(MeasureContext(scripted, digits), functional, {}, lambda _f, _m: None)
    assert res.error["code"] == "unsupported_model" and "torch.export" in res.error["message"]


def test_sample_draws_follow_the_seed(digits, mlp) -> None:
    ctx = MeasureContext(LoadedModel(mlp, "module", "x"), digits, AnalysisOptions(seed=5))
    s = ctx.train_sample(100, "p")
    assert s.n == 100 and not s.whole and bool((s.indices[1:] > s.indices[:-1]).all())
    other = MeasureContext(LoadedModel(mlp, "module", "x"), digits, AnalysisOptions(seed=5))
    assert torch.equal(other.train_sample(100, "p").indices, s.indices)
    whole = ctx.train_sample(10**6, "p")
    assert whole.whole and whole.n == digits.n_train


def test_loaded_checkpoint_reused(tmp_path: Path, digits, mlp) -> None:
    loaded = load_checkpoint(export_pt2(mlp, digits.x_train[:2], tmp_path / "m.pt2"))
    report = genscope.analyze(
        loaded, from_arrays("tiny", digits.x_train[:10], digits.y_train[:10], num_classes=10)
    )
    assert report.to_dict()["metrics"]["test_loss"] is None
