"""What a measure gets to work with: the model, the data, the options, shared intermediates.

A :class:`MeasureContext` is built once per analysis. Measures never change the model's
parameters, ``.grad`` or mode: they call :meth:`MeasureContext.functional` with a params dict
(``torch.func.functional_call``) or the model itself under ``torch.no_grad``. Intermediates that
several measures need (logits on the training set, samples) are computed once and cached here.

Memory: ``AnalysisOptions.batch_size`` is the chunk size of every forward pass the context and the
curvature operators make, so peak activation memory scales with it. When a measure runs out of
memory, :func:`genscope.analysis.run_measure` halves it (down to :data:`MIN_CHUNK_SIZE`) with
:meth:`MeasureContext.use_chunk_size` after :meth:`MeasureContext.release_memory` has dropped
what the failed attempt left behind.

``GENSCOPE_SIMULATED_MEMORY_CAP_MB`` (a test and operations knob, unset in production) simulates
a device with little memory: while a measure runs, a forward pre-hook on the model raises
``torch.OutOfMemoryError`` when the tensors passed to one forward call take more than the cap.
The estimate is deliberately simple: the bytes of the forward call's tensor inputs, i.e.
batch x per-example input numel x element size (factor 1; fractional megabytes are allowed, so
``0.0015`` admits 196 moons examples in float32). The fit check and the metrics are not capped.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from genscope.errors import UnsupportedModel
from genscope.io.checkpoints import LoadedModel
from genscope.io.datasets import Dataset

ProgressFn = Callable[[float, str], None]

SIMULATED_MEMORY_CAP_ENV = "GENSCOPE_SIMULATED_MEMORY_CAP_MB"
MIN_CHUNK_SIZE = 1  # the smallest chunk an out-of-memory retry tries


def simulated_memory_cap_bytes() -> int | None:
    """The simulated memory cap from ``GENSCOPE_SIMULATED_MEMORY_CAP_MB`` in bytes, or None.

    Raises:
        ValueError: the variable is set but is not a non-negative number.
    """
    raw = os.environ.get(SIMULATED_MEMORY_CAP_ENV, "").strip()
    if not raw:
        return None
    megabytes = float(raw)
    if not megabytes >= 0:
        raise ValueError(f"{SIMULATED_MEMORY_CAP_ENV} must be >= 0, got {raw!r}")
    return int(megabytes * 1024 * 1024)


def _no_progress(_fraction: float, _message: str) -> None:
    return None


@dataclass
class AnalysisOptions:
    """Run-wide options (interfaces.md §2)."""

    seed: int = 0
    hessian_samples: int = 1000
    margin_samples: int = 10_000
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 256

    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class Sample:
    """A subset of a split: inputs, labels and the indices into the split they came from."""

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor
    whole: bool  # True when the sample is the whole split, in order

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"size": self.n, "whole_set": self.whole}


@dataclass
class MeasureContext:
    """The model and data of one analysis, on the analysis device and dtype."""

    loaded: LoadedModel
    data: Dataset
    options: AnalysisOptions = field(default_factory=AnalysisOptions)
    progress: ProgressFn = _no_progress
    cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = self.options.torch_device()
        self.dtype = self.options.torch_dtype()
        self.model: nn.Module = self.loaded.module.to(device=self.device, dtype=self.dtype)
        self._x_train = self.data.x_train.to(self.device, self.dtype)
        self._y_train = self.data.y_train.to(self.device)
        self._x_test = (
            None if self.data.x_test is None else self.data.x_test.to(self.device, self.dtype)
        )
        self._y_test = None if self.data.y_test is None else self.data.y_test.to(self.device)
        self.memory_cap_bytes = simulated_memory_cap_bytes()

    # --- memory -------------------------------------------------------------------------------
    @property
    def chunk_size(self) -> int:
        """Examples per forward pass (``options.batch_size``)."""
        return self.options.batch_size

    def use_chunk_size(self, chunk_size: int) -> None:
        """Make later forward passes use chunks of ``chunk_size`` examples (the caller's
        :class:`AnalysisOptions` object is not modified)."""
        if chunk_size < MIN_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be >= {MIN_CHUNK_SIZE}, got {chunk_size}")
        self.options = replace(self.options, batch_size=int(chunk_size))

    def release_memory(self, keep: set[str]) -> None:
        """Free memory after an out-of-memory error: drop the cache entries not in ``keep``
        (what the failed attempt built) and every cached object that works in chunks (it would
        keep the chunk size that failed), then collect garbage and empty the CUDA cache."""
        for key in list(self.cache):
            if key not in keep or hasattr(self.cache[key], "chunk_size"):
                del self.cache[key]
        gc.collect()
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()

    @contextmanager
    def simulated_memory_cap(self) -> Iterator[None]:
        """While the body runs, enforce ``GENSCOPE_SIMULATED_MEMORY_CAP_MB`` on forward calls of
        the model (nothing when the variable is unset)."""
        cap = self.memory_cap_bytes
        if cap is None:
            yield
            return

        def check(_module: nn.Module, args: tuple[Any, ...]) -> None:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            need = sum(t.numel() * t.element_size() for t in tensors)
            if need > cap:
                batch = int(tensors[0].shape[0]) if tensors and tensors[0].ndim else 1
                raise torch.OutOfMemoryError(
                    f"simulated out of memory: a forward pass on {batch} examples needs "
                    f"{need} bytes of input, above {SIMULATED_MEMORY_CAP_ENV} ({cap} bytes)"
                )

        try:
            handle = self.model.register_forward_pre_hook(check)
        except (AttributeError, RuntimeError):  # a TorchScript module takes no Python hooks
            yield
            return
        try:
            yield
        finally:
            handle.remove()

    # --- data ---------------------------------------------------------------------------------
    @property
    def x_train(self) -> torch.Tensor:
        return self._x_train

    @property
    def y_train(self) -> torch.Tensor:
        return self._y_train

    @property
    def x_test(self) -> torch.Tensor | None:
        return self._x_test

    @property
    def y_test(self) -> torch.Tensor | None:
        return self._y_test

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def generator(self, purpose: str) -> torch.Generator:
        """A CPU generator seeded by (seed, purpose): measures get the same draws whatever
        else runs, so a fixed ``--seed`` gives the same report."""
        digest = hashlib.sha256(f"{self.options.seed}:{purpose}".encode()).digest()
        gen = torch.Generator()
        gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        return gen

    def train_sample(self, n: int | None, purpose: str = "sample") -> Sample:
        """The training set if it has at most ``n`` examples (in order), else ``n`` drawn with
        the seed (sorted, so per-example outputs follow the training-set order)."""
        key = f"train_sample:{n}:{purpose}"
        if key in self.cache:
            return self.cache[key]
        total = self.data.n_train
        if n is None or n >= total:
            idx = torch.arange(total)
            whole = True
        else:
            idx = torch.randperm(total, generator=self.generator(purpose))[:n].sort().values
            whole = False
        idx_dev = idx.to(self.device)
        sample = Sample(self._x_train[idx_dev], self._y_train[idx_dev], idx, whole)
        self.cache[key] = sample
        return sample

    def hessian_sample(self) -> Sample:
        """The sample every curvature measure shares (``--hessian-samples``)."""
        return self.train_sample(self.options.hessian_samples, "hessian")

    def margin_sample(self) -> Sample:
        """The sample of the expensive per-example margins (``--margin-samples``)."""
        return self.train_sample(self.options.margin_samples, "margin")

    # --- model --------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Logits of ``x`` in batches, without gradients."""
        bs = batch_size or self.options.batch_size
        outs = [self.model(x[i : i + bs]) for i in range(0, x.shape[0], bs)]
        return torch.cat(outs) if outs else x.new_zeros((0, self.num_classes))

    def train_logits(self) -> torch.Tensor:
        if "train_logits" not in self.cache:
            self.cache["train_logits"] = self.logits(self._x_train)
        return self.cache["train_logits"]

    def test_logits(self) -> torch.Tensor | None:
        if self._x_test is None:
            return None
        if "test_logits" not in self.cache:
            self.cache["test_logits"] = self.logits(self._x_test)
        return self.cache["test_logits"]

    def params(self) -> dict[str, torch.Tensor]:
        """Detached copies-by-reference of the named parameters, in registration order."""
        return {k: v.detach() for k, v in self.model.named_parameters()}

    def buffers(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.model.named_buffers()}

    def require_functional(self, measure_id: str) -> None:
        if not self.loaded.functional:
            raise UnsupportedModel(
                f"{measure_id} needs to call the model with substituted parameters, which "
                "TorchScript modules do not allow; export the model with torch.export.save or "
                "upload its state dict with an architecture"
            )

    def functional(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The model's logits with ``params`` in place of its parameters (buffers unchanged)."""
        return torch.func.functional_call(self.model, (params, self.buffers()), (x,))
