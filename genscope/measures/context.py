"""What a measure gets to work with: the model, the data, the options, shared intermediates.

A :class:`MeasureContext` is built once per analysis. Measures never change the model's
parameters, ``.grad`` or mode: they call :meth:`MeasureContext.functional` with a params dict
(``torch.func.functional_call``) or the model itself under ``torch.no_grad``. Intermediates that
several measures need (logits on the training set, samples) are computed once and cached here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from genscope.errors import UnsupportedModel
from genscope.io.checkpoints import LoadedModel
from genscope.io.datasets import Dataset

ProgressFn = Callable[[float, str], None]


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
