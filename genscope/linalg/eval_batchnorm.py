"""Inference-mode BatchNorm as the per-channel affine map it is, for cheaper curvature products.

In inference mode BatchNorm uses its running statistics, so it is the affine map
y = γ x / sqrt(Var[x] + ε) + (β − γ E[x] / sqrt(Var[x] + ε)) of each channel (Ioffe & Szegedy
2015, Algorithm 2, step 11): the same function of the input and of (γ, β) as the fused kernel,
hence the same gradient and Hessian up to float rounding. Written with elementwise operations,
its second derivatives are elementwise products; the fused kernel's double backward
(``NativeBatchNormBackwardBackward0``) instead evaluates the training-mode formula's terms on
full-sized tensors. Measured on the CIFAR ResNet-8 of ``bench/curvature.py`` (512 examples, one
CPU thread), that double backward took 19% of every Hessian-vector product; with the affine map
a product costs 8% less (the elementwise form saves its inputs, so the graph grows by 12%).

:class:`AffineEvalBatchNorm` is a ``TorchFunctionMode`` that rewrites calls of
``torch.nn.functional.batch_norm`` (and of the aten BatchNorm operators that ``torch.export``
graphs call) with ``training=False`` and running statistics present while it is active; every
other call, and BatchNorm in training mode, runs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_DEFAULTS: dict[str, Any] = {
    "weight": None,
    "bias": None,
    "training": False,
    "momentum": 0.1,
    "eps": 1e-5,
}


def affine_batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """Inference-mode BatchNorm of ``x`` (channels in dimension 1) as ``x · s + t``."""
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = weight * scale
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * scale.reshape(shape) + shift.reshape(shape)


class AffineEvalBatchNorm(TorchFunctionMode):
    """While active, inference-mode BatchNorm calls (``F.batch_norm`` and the aten operators)
    run as :func:`affine_batch_norm`.

    :attr:`rewritten` counts the calls rewritten so far.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rewritten = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        call = _inference_call(func, args, kwargs)
        if call is None:
            return func(*args, **kwargs)
        self.rewritten += 1
        out = affine_batch_norm(*call)
        if func is _LEGIT_NO_TRAINING:  # (output, save_mean, save_rstd); the last two empty
            empty = out.new_empty(0)
            return out, empty, empty
        return out


_LEGIT_NO_TRAINING = torch.ops.aten._native_batch_norm_legit_no_training.default
#: Argument names of each BatchNorm entry point (``torch.export`` graphs call the aten ones).
_SIGNATURES: dict[Any, tuple[str, ...]] = {
    F.batch_norm: (
        "input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps",
    ),
    torch.ops.aten.batch_norm.default: (
        "input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps",
        "cudnn_enabled",
    ),
    _LEGIT_NO_TRAINING: (
        "input", "weight", "bias", "running_mean", "running_var", "momentum", "eps",
    ),
}  # fmt: skip


def _inference_call(
    func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """``(x, running_mean, running_var, weight, bias, eps)`` of an inference-mode BatchNorm
    call with running statistics, or None for anything else."""
    names = _SIGNATURES.get(func)
    if names is None:
        return None
    call = dict(_DEFAULTS)
    call.update(zip(names, args, strict=False))
    call.update(kwargs)
    x = call["input"]
    if (
        call["training"]
        or call["running_mean"] is None
        or call["running_var"] is None
        or not isinstance(x, torch.Tensor)
        or x.ndim < 2
    ):
        return None
    return x, call["running_mean"], call["running_var"], call["weight"], call["bias"], call["eps"]
