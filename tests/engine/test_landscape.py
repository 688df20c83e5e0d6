"""Loss-landscape slices and checkpoint interpolation."""

from __future__ import annotations

import pytest
import torch

from genscope import analyze
from genscope.io.checkpoints import LoadedModel
from genscope.io.datasets import from_arrays
from genscope.io.zoo import build_model
from genscope.measures.context import AnalysisOptions
from genscope.measures.landscape import filter_normalized_direction
from tests.cases import mlp_batchnorm, relu_mlp, small_cnn
from tests.references import assert_close

F64 = AnalysisOptions(dtype="float64")


def _data(case):
    return from_arrays(case.id, case.x, case.y, case.x, case.y, num_classes=case.num_classes)


def _run(model, data, measure_id, params=None):
    report = analyze(model, data, [measure_id], params={measure_id: params or {}}, options=F64)
    return report.measures[measure_id]


def _clean_loss(model, x, y):
    x = x.float().double()  # datasets hold float32 inputs
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), y))


def test_filter_normalization():
    """Li et al. 2018: every filter of d has the norm of the same filter of w; biases get 0."""
    case = small_cnn()
    params = {k: v.detach() for k, v in case.model.named_parameters()}
    d = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    for name, p in params.items():
        if p.dim() > 1:
            assert_close(
                d[name].flatten(1).norm(dim=1), p.flatten(1).norm(dim=1), rtol=1e-12, what=name
            )
        else:
            assert torch.count_nonzero(d[name]) == 0
    with_bias = filter_normalized_direction(params, torch.Generator().manual_seed(0), True)
    assert torch.equal(with_bias["0.bias"], params["0.bias"])


def test_slice_1d_passes_through_the_weights():
    case = relu_mlp()
    result = _run(case.model, _data(case), "landscape.slice_1d", {"points": 9, "extent": 0.5})
    assert result.status == "ok", result.details
    d = result.details
    assert len(d["alphas"]) == len(d["loss"]) == len(d["accuracy"]) == 9
    assert d["alphas"][4] == 0.0
    clean = _clean_loss(case.model, case.x, case.y)
    assert_close(d["loss"][4], clean, rtol=1e-12, what="loss at α = 0")
    assert_close(result.value, max(d["loss"]) - clean, rtol=1e-12, what="largest rise")


def test_slice_2d_grid():
    case = mlp_batchnorm()
    result = _run(case.model, _data(case), "landscape.slice_2d", {"points": 3, "extent": 0.3})
    assert result.status == "ok", result.details
    d = result.details
    assert len(d["loss"]) == 3 and all(len(row) == 3 for row in d["loss"])
    assert_close(
        d["loss"][1][1],
        _clean_loss(case.model, case.x, case.y),
        rtol=1e-12,
        what="centre of the plane",
    )
    assert abs(d["directions"]["cosine"]) < 0.9


def test_slice_along_top_hessian_eigenvector_is_its_parabola():
    """Along the top eigenvector v scaled to norm s: L(w + αv) ≈ L(w) + gᵀvα + ½λs²α²."""
    pytest.importorskip("genscope.measures.curvature")
    case = relu_mlp()
    h = 1e-3
    result = _run(
        case.model,
        _data(case),
        "landscape.slice_1d",
        {"direction": "hessian", "points": 3, "extent": h},
    )
    assert result.status == "ok", result.details
    loss = result.details["loss"]
    info = result.details["directions"]
    curvature = (loss[0] + loss[2] - 2 * loss[1]) / h**2
    expected = info["eigenvalues"][0] * info["scaled_to_norm"] ** 2
    assert_close(curvature, expected, rtol=1e-3, what="second difference vs λ s²")


def _zoo_pair(tmp_path, widths=(16,)):
    cfg = {"input_dim": 6, "widths": list(widths), "num_classes": 3}
    torch.manual_seed(0)
    a = build_model("mlp", cfg).double().eval()
    torch.manual_seed(1)
    b = build_model("mlp", cfg).double().eval()
    path = tmp_path / "other.pt"
    torch.save(b.state_dict(), path)
    loaded = LoadedModel(a, "state_dict", sha256="x", arch="mlp", arch_config=cfg)
    return loaded, a, b, str(path)


def test_interpolate_ends_and_barrier(tmp_path):
    case = relu_mlp()
    loaded, a, b, path = _zoo_pair(tmp_path)
    data = _data(case)
    result = _run(loaded, data, "landscape.interpolate", {"other": path, "points": 11})
    assert result.status == "ok", result.details
    d = result.details
    x, y = case.x, case.y
    assert_close(d["loss"][0], _clean_loss(a, x, y), rtol=1e-10, what="t = 0")
    assert_close(d["loss"][-1], _clean_loss(b, x, y), rtol=1e-10, what="t = 1")
    chord = [(1 - t) * d["loss"][0] + t * d["loss"][-1] for t in d["t"]]
    assert_close(
        result.value,
        max(lo - c for lo, c in zip(d["loss"], chord, strict=True)),
        rtol=1e-12,
        what="barrier",
    )
    assert result.value >= 0


def test_interpolate_with_itself_has_no_barrier(tmp_path):
    case = relu_mlp()
    loaded, a, _, _ = _zoo_pair(tmp_path)
    path = tmp_path / "same.pt"
    torch.save(a.state_dict(), path)
    result = _run(loaded, _data(case), "landscape.interpolate", {"other": str(path), "points": 5})
    assert abs(result.value) < 1e-12 and result.details["distance"] == 0.0


def test_interpolate_refuses_other_architectures(tmp_path):
    case = relu_mlp()
    loaded, _, _, _ = _zoo_pair(tmp_path)
    wider = build_model("mlp", {"input_dim": 6, "widths": [32], "num_classes": 3})
    path = tmp_path / "wider.pt"
    torch.save(wider.state_dict(), path)
    result = _run(loaded, _data(case), "landscape.interpolate", {"other": str(path)})
    assert result.status == "failed"
    assert result.error["code"] == "weight_mismatch"  # the zoo refuses it when loading
    missing = _run(loaded, _data(case), "landscape.interpolate")
    assert missing.status == "ok" and missing.value is None
    assert "needs other=PATH" in missing.details["reason"]


def test_interpolate_names_the_differing_parameters(tmp_path):
    """An exported model carries its own architecture: the shapes are checked here."""
    case = relu_mlp()
    other = relu_mlp(seed=1).model
    with torch.no_grad():
        other[0] = torch.nn.Linear(6, 8, bias=False).double()
    program = torch.export.export(other.eval(), (case.x[:2],))
    path = tmp_path / "other.pt2"
    torch.export.save(program, path)
    result = _run(case.model, _data(case), "landscape.interpolate", {"other": str(path)})
    assert result.status == "failed" and result.error["code"] == "bad_parameter"
    assert "0.bias" in result.error["message"]
