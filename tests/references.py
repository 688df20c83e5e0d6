"""Exact references for the tests: dense float64 Hessians and an assertion that explains itself."""

from __future__ import annotations

import torch
from torch import nn


def flat_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def dense_loss_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Hessian of the mean cross-entropy w.r.t. all parameters, as a dense (P, P) matrix in
    the order of ``model.named_parameters()``."""
    params = flat_params(model)
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(flat: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(flat, sizes)
        p = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        out = torch.func.functional_call(model, (p, buffers), (x,))
        return torch.nn.functional.cross_entropy(out, y)

    flat = torch.cat([params[n].reshape(-1) for n in names])
    return torch.func.hessian(loss)(flat)


def assert_close(
    actual: torch.Tensor | float,
    expected: torch.Tensor | float,
    rtol: float = 1e-6,
    atol: float = 0.0,
    what: str = "value",
) -> None:
    """Like torch.testing.assert_close but says what was compared and the largest error."""
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    err = (a - e).abs()
    tol = atol + rtol * e.abs()
    if not bool((err <= tol).all()):
        worst = int((err - tol).flatten().argmax())
        raise AssertionError(
            f"{what}: max error {float(err.max()):.3e} "
            f"(tolerance {float(tol.flatten()[worst]):.3e} "
            f"at index {worst}): actual {a.flatten()[worst].item():.10g}, expected "
            f"{e.flatten()[worst].item():.10g}"
        )
