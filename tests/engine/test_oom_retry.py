"""Out of memory in a measure: retried with halved chunks, then failed alone as ``out_of_memory``.

The memory limit is simulated with ``GENSCOPE_SIMULATED_MEMORY_CAP_MB`` (a forward pre-hook that
raises ``torch.OutOfMemoryError`` when a forward call's inputs exceed the cap); moons inputs in
float64 take 16 bytes per example, so 0.003 MB (3145 bytes) admits 196 examples per forward pass:
the default chunk of 256 fails and 128 works.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import genscope
from genscope.analysis import run_measure
from genscope.io.checkpoints import LoadedModel
from genscope.io.datasets import Dataset, load_dataset
from genscope.io.zoo import build_model
from genscope.measures.context import SIMULATED_MEMORY_CAP_ENV, AnalysisOptions, MeasureContext
from genscope.measures.registry import Measure

OPTIONS = AnalysisOptions(dtype="float64", hessian_samples=600, batch_size=256)
CAP_ONE_RETRY_MB = "0.003"  # 196 examples of 16 bytes: 256 fails, 128 fits
CAP_BELOW_ONE_EXAMPLE_MB = "0.000001"  # 1 byte


@pytest.fixture(scope="module")
def moons() -> Dataset:
    return load_dataset("moons")


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", {"input_dim": 2, "widths": [8], "num_classes": 2}).eval()


def _measures(
    net: torch.nn.Module, data: Dataset, measures: list[str]
) -> dict[str, dict[str, Any]]:
    return genscope.analyze(net, data, measures, options=OPTIONS).to_dict()["measures"]


def test_one_retry_with_smaller_chunks_gives_the_same_value(
    net: torch.nn.Module, moons: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SIMULATED_MEMORY_CAP_ENV, raising=False)
    free = _measures(net, moons, ["hessian.trace"])["hessian.trace"]
    assert free["status"] == "ok" and "oom_retry" not in free

    monkeypatch.setenv(SIMULATED_MEMORY_CAP_ENV, CAP_ONE_RETRY_MB)
    capped = _measures(net, moons, ["hessian.trace"])["hessian.trace"]
    assert capped["status"] == "ok", capped
    assert capped["oom_retry"] == {"chunk_size": 128, "failed_chunk_sizes": [256]}
    assert capped["value"] == pytest.approx(free["value"], rel=1e-6, abs=1e-6)


def test_a_cap_below_one_example_fails_that_measure_alone(
    net: torch.nn.Module, moons: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SIMULATED_MEMORY_CAP_ENV, CAP_BELOW_ONE_EXAMPLE_MB)
    # margin.output reads the training logits of the (uncapped) metrics: it needs no forward pass
    out = _measures(net, moons, ["hessian.trace", "margin.output"])
    failed = out["hessian.trace"]
    assert failed["status"] == "failed" and failed["value"] is None
    assert failed["error"]["code"] == "out_of_memory"
    message = failed["error"]["message"]
    assert "256, 128, 64, 32, 16, 8, 4, 2, 1 examples" in message, message
    assert SIMULATED_MEMORY_CAP_ENV in message
    assert out["margin.output"]["status"] == "ok"
    assert len(out["margin.output"]["values"]) == moons.n_train


def test_cpu_memory_error_is_retried_and_the_context_restored(
    net: torch.nn.Module, moons: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SIMULATED_MEMORY_CAP_ENV, raising=False)
    ctx = MeasureContext(LoadedModel(net, "module", "x"), moons, OPTIONS)
    seen: list[int] = []

    def hungry(c: MeasureContext, _params: dict[str, Any]) -> dict[str, Any]:
        seen.append(c.chunk_size)
        c.cache["partial"] = torch.zeros(3)  # left behind by a failed attempt
        if c.chunk_size > 64:
            raise MemoryError()
        return {"value": float(c.logits(c.x_train).sum())}

    res = run_measure(ctx, Measure("test.hungry", "margins", hungry), {}, lambda _f, _m: None)
    assert res.status == "ok" and seen == [256, 128, 64]
    assert res.details["oom_retry"] == {"chunk_size": 64, "failed_chunk_sizes": [256, 128]}
    assert ctx.chunk_size == 256 and OPTIONS.batch_size == 256  # restored, caller's untouched
