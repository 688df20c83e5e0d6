"""``analyze(model, data, measures)``: orchestration only (ARCHITECTURE.md).

Loads nothing itself beyond resolving specs, checks that data and model fit, computes the
metrics block, then runs each selected measure through the registry with a progress callback.
A measure that fails is recorded as failed with its error code; the others still run.

Every result is checked against its measure's declared schema
(:func:`genscope.measures.schema.check_details`): with ``GENSCOPE_STRICT_SCHEMA=1`` (the test
suite's setting) a departure raises :class:`~genscope.measures.schema.SchemaDeparture`;
otherwise it is logged and listed in the result's ``schema_problems``.

Out of memory (``torch.OutOfMemoryError``, which covers CUDA, or ``MemoryError`` on the CPU):
the measure is retried with half the chunk size (``AnalysisOptions.batch_size``, the examples per
forward pass of the context and the curvature operators) after the failed attempt's cached
intermediates are dropped, down to :data:`~genscope.measures.context.MIN_CHUNK_SIZE`; then that
measure alone is recorded failed with code ``out_of_memory`` and the chunk sizes tried. When a
retry succeeded, the measure's entry says so: ``"oom_retry": {"chunk_size": <the chunk that
worked>, "failed_chunk_sizes": [...]}``. The metrics block is computed with the same retry; if
even one example per chunk is too much there, :func:`analyze` raises
:class:`OutOfMemoryAtEveryChunk` (a ``GenScopeError`` with code ``out_of_memory``).
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from genscope import __version__
from genscope.errors import GenScopeError, ShapeMismatch
from genscope.graph import affine_layers, homogeneity
from genscope.io.checkpoints import LoadedModel, load_checkpoint, set_eval
from genscope.io.datasets import Dataset, load_dataset
from genscope.io.formats import FORMAT_TORCHSCRIPT
from genscope.linalg.heap import retained_heap
from genscope.measures.context import MIN_CHUNK_SIZE, AnalysisOptions, MeasureContext, ProgressFn
from genscope.measures.registry import Measure, resolve_measures, resolve_params
from genscope.measures.schema import SchemaDeparture, check_details
from genscope.report import MeasureResult, Report

log = logging.getLogger(__name__)

COST_WEIGHT = {"cheap": 1.0, "moderate": 5.0, "expensive": 20.0}
#: Set to 1 to make a result that departs from its declared schema raise instead of being noted.
STRICT_SCHEMA_ENV = "GENSCOPE_STRICT_SCHEMA"
OUT_OF_MEMORY = (torch.OutOfMemoryError, MemoryError)
T = TypeVar("T")


class OutOfMemoryAtEveryChunk(GenScopeError):
    """Every chunk size down to the floor ran out of memory (code ``out_of_memory``)."""

    code = "out_of_memory"

    def __init__(self, what: str, tried: list[int], last: BaseException) -> None:
        first = str(last).strip().splitlines()[0][:300] if str(last).strip() else ""
        sizes = ", ".join(str(c) for c in tried)
        super().__init__(
            f"{what} ran out of memory at every chunk size tried ({sizes} examples per forward "
            f"pass){f': {first}' if first else ''}",
            {"chunk_sizes_tried": tried},
        )
        self.tried = tried


def with_chunk_retry(
    ctx: MeasureContext, what: str, fn: Callable[[], T], on_retry: ProgressFn | None = None
) -> tuple[T, list[int]]:
    """Call ``fn``; on out-of-memory, free what it cached, halve the chunk size and call it again.

    ``ctx``'s chunk size is restored afterwards. Returns ``fn``'s result and the chunk sizes that
    ran out of memory (empty when the first attempt worked; the one that worked is then
    ``ctx.chunk_size`` at the time of the call halved ``len(tried)`` times).

    Raises:
        OutOfMemoryAtEveryChunk: it ran out of memory at :data:`MIN_CHUNK_SIZE` too.
    """
    original = ctx.options
    chunk = ctx.chunk_size
    tried: list[int] = []
    try:
        while True:
            before = set(ctx.cache)
            try:
                return fn(), tried
            except OUT_OF_MEMORY as exc:
                tried.append(chunk)
                ctx.release_memory(keep=before)
                if chunk <= MIN_CHUNK_SIZE:
                    raise OutOfMemoryAtEveryChunk(what, tried, exc) from None
                chunk = max(MIN_CHUNK_SIZE, chunk // 2)
                log.warning(
                    "%s: out of memory with chunks of %d; retrying with %d", what, tried[-1], chunk
                )
                ctx.use_chunk_size(chunk)
                if on_retry is not None:
                    on_retry(0.0, f"out of memory; retrying with chunks of {chunk}")
    finally:
        ctx.options = original


def analyze(
    model: LoadedModel | nn.Module | str | Path,
    data: Dataset | str,
    measures: Iterable[str] | str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    options: AnalysisOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    arch: str | None = None,
    arch_config: Mapping[str, Any] | None = None,
) -> Report:
    """Run the selected measures on a model and dataset and return the report.

    Args:
        model: a loaded checkpoint, a plain module, or a checkpoint path.
        data: a :class:`Dataset` or a ``--data`` spec.
        measures: ids or group names; default ``margin.output``.
        params: ``{measure_id: {name: value}}`` overrides of measure parameters.
        options: seed, sample sizes, device, dtype.
        progress: called with (overall fraction in [0, 1], message).
        arch, arch_config: the zoo architecture when ``model`` is a weights-only path.

    Raises:
        GenScopeError: bad inputs (checkpoint, dataset, measure ids, parameters, shapes).
    """
    options = options or AnalysisOptions()
    report_progress = progress or (lambda _f, _m: None)
    selected = resolve_measures(measures)
    resolved = resolve_params(selected, params)
    loaded = _as_loaded(model, arch, arch_config)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    report_progress(0.0, "checking model and data")
    ctx = MeasureContext(loaded, dataset, options)
    check_fit(ctx)

    report = Report(
        model=_model_block(ctx),
        data=dataset.summary(),
        metrics=_metrics_with_retry(ctx),
        settings=_settings_block(ctx),
    )
    weights = [COST_WEIGHT.get(m.cost, 1.0) for m in selected]
    total = sum(weights) or 1.0
    done = 0.0
    for m, weight in zip(selected, weights, strict=True):
        start = done / total

        def sub_progress(
            fraction: float, message: str, start: float = start, w: float = weight, mid: str = m.id
        ) -> None:
            frac = min(max(fraction, 0.0), 1.0)
            report_progress(start + frac * w / total, f"{mid}: {message}" if message else mid)

        report_progress(start, m.id)
        report.measures[m.id] = run_measure(ctx, m, resolved[m.id], sub_progress)
        done += weight
    report_progress(1.0, "done")
    return report


def _as_loaded(
    model: LoadedModel | nn.Module | str | Path,
    arch: str | None,
    arch_config: Mapping[str, Any] | None,
) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        return load_checkpoint(model, arch=arch, arch_config=arch_config)
    if isinstance(model, nn.Module):
        set_eval(model)
        fmt = FORMAT_TORCHSCRIPT if isinstance(model, torch.jit.ScriptModule) else "module"
        return LoadedModel(model, fmt, sha256=_module_sha256(model))
    raise TypeError(f"cannot analyse a {type(model).__name__}")


def _module_sha256(model: nn.Module) -> str:
    from genscope.io.datasets import content_sha256

    return content_sha256(*[t for _, t in sorted(model.state_dict().items())])


def _metrics_with_retry(ctx: MeasureContext) -> dict[str, Any]:
    metrics, _tried = with_chunk_retry(ctx, "the metrics", lambda: compute_metrics(ctx))
    return metrics


def run_measure(
    ctx: MeasureContext, m: Measure, params: dict[str, Any], progress: ProgressFn
) -> MeasureResult:
    """Run one measure; never raise for the measure's own failure (it is recorded).

    Out of memory is retried with smaller chunks (:func:`with_chunk_retry`); the simulated
    memory cap (``GENSCOPE_SIMULATED_MEMORY_CAP_MB``) applies while the measure computes, and
    freed CPU memory stays in the process until it ends (:mod:`genscope.linalg.heap`). The
    result is checked against the measure's declared schema (:func:`conform`).
    """
    return conform(m, _compute_result(ctx, m, params, progress))


def _compute_result(
    ctx: MeasureContext, m: Measure, params: dict[str, Any], progress: ProgressFn
) -> MeasureResult:
    start = time.perf_counter()
    form = ctx.loaded.form
    if form not in m.forms:  # declared in the registry: not defined for this form, not a failure
        reason = f"{m.id} is not defined for a model given as a {form} (it takes {sorted(m.forms)})"
        return MeasureResult(
            m.id, None, params, 0.0, {"reason": reason, "form": form}, direction=m.direction
        )
    ctx.progress = progress
    first_chunk = ctx.chunk_size

    def compute() -> dict[str, Any]:
        with ctx.simulated_memory_cap(), retained_heap(ctx.device):
            return dict(m.compute(ctx, params))

    try:
        if "functional" in m.requires:
            ctx.require_functional(m.id)
        out, tried = with_chunk_retry(ctx, m.id, compute, progress)
        if tried:
            out["oom_retry"] = {
                "chunk_size": max(MIN_CHUNK_SIZE, first_chunk >> len(tried)),
                "failed_chunk_sizes": tried,
            }
        value = out.pop("value", None)
        value = None if value is None else float(value)
        return MeasureResult(
            m.id, value, params, time.perf_counter() - start, out, direction=m.direction
        )
    except GenScopeError as exc:  # OutOfMemoryAtEveryChunk too: code out_of_memory
        return _failed(m, params, start, exc.code, exc.message)
    except Exception as exc:  # a bug or an unforeseen model: record it, keep the run going
        log.error("measure %s failed:\n%s", m.id, traceback.format_exc())
        return _failed(m, params, start, "measure_failed", f"{type(exc).__name__}: {exc}")
    finally:
        ctx.progress = lambda _f, _m: None


def conform(m: Measure, result: MeasureResult) -> MeasureResult:
    """Check ``result`` against ``m``'s declared schema. A departure raises
    :class:`SchemaDeparture` under ``GENSCOPE_STRICT_SCHEMA=1``; otherwise it is logged and
    recorded in the result's ``schema_problems``, never dropped silently."""
    problems = check_details(m.id, m.result, result.details)
    if not problems:
        return result
    if os.environ.get(STRICT_SCHEMA_ENV, "").strip() == "1":
        raise SchemaDeparture("; ".join(problems))
    log.warning("measure %s departs from its declared schema: %s", m.id, "; ".join(problems))
    result.details["schema_problems"] = problems
    return result


def _failed(
    m: Measure, params: dict[str, Any], start: float, code: str, message: str
) -> MeasureResult:
    return MeasureResult(
        m.id,
        None,
        params,
        time.perf_counter() - start,
        {"reason": message},
        status="failed",
        error={"code": code, "message": message},
        direction=m.direction,
    )


def check_fit(ctx: MeasureContext) -> None:
    """Run two examples through the model; name both shapes when they do not fit."""
    x = ctx.x_train[:2]
    try:
        with torch.no_grad():
            out = ctx.model(x)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ShapeMismatch(
            f"the model does not accept the dataset's inputs of shape "
            f"{tuple(ctx.data.input_shape)} per example ({first})",
            {"input_shape": list(ctx.data.input_shape)},
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeMismatch(
            f"the model must return logits of shape (batch, classes); for a batch of "
            f"{x.shape[0]} it returned {shape}"
        )
    if out.shape[1] < ctx.num_classes:
        raise ShapeMismatch(
            f"the model returns {out.shape[1]} logits per example but the dataset has "
            f"{ctx.num_classes} classes",
            {"model_outputs": int(out.shape[1]), "num_classes": ctx.num_classes},
        )


def _split_metrics(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits.double(), y, reduction="mean").item()
    accuracy = (logits.argmax(dim=1) == y).double().mean().item()
    return loss, accuracy


def compute_metrics(ctx: MeasureContext) -> dict[str, Any]:
    """Train/test loss and accuracy, and the generalization gap = test error - train error."""
    train_loss, train_acc = _split_metrics(ctx.train_logits(), ctx.y_train)
    metrics: dict[str, Any] = {
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "train_error": 1.0 - train_acc,
        "test_loss": None,
        "test_accuracy": None,
        "test_error": None,
        "generalization_gap": None,
        "loss_gap": None,
    }
    test_logits = ctx.test_logits()
    if test_logits is None or ctx.y_test is None:
        metrics["reason"] = "the dataset has no test split"
        return metrics
    test_loss, test_acc = _split_metrics(test_logits, ctx.y_test)
    metrics.update(
        test_loss=test_loss,
        test_accuracy=test_acc,
        test_error=1.0 - test_acc,
        generalization_gap=(1.0 - test_acc) - (1.0 - train_acc),
        loss_gap=test_loss - train_loss,
    )
    return {
        k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()
    }


def _model_block(ctx: MeasureContext) -> dict[str, Any]:
    block = ctx.loaded.summary()
    block["layers"] = [layer.to_dict() for layer in affine_layers(ctx.model, ctx.x_train[:1])]
    homog = homogeneity(ctx.model)
    block["homogeneous"] = {
        "homogeneous": homog.homogeneous,
        "degree": homog.degree,
        "reason": homog.reason,
    }
    block["mode"] = "eval"
    return block


def _settings_block(ctx: MeasureContext) -> dict[str, Any]:
    opts = ctx.options
    return {
        "engine_version": __version__,
        "torch_version": torch.__version__,
        "seed": opts.seed,
        "device": str(ctx.device),
        "dtype": opts.dtype,
        "hessian_samples": opts.hessian_samples,
        "margin_samples": opts.margin_samples,
        "mode": "eval",
        "loss": "mean cross-entropy",
    }
