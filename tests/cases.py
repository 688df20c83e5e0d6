"""Tiny seeded models and data shared by the tests (readable ids, float64 by default).

Each case is built fresh by its factory so tests never share mutable state. Test modules may
define further cases of their own; these are the common ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from genscope.io.datasets import Dataset, from_arrays, load_dataset


@dataclass
class Case:
    """A model with a small labelled batch."""

    id: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int


def _data(
    n: int, shape: tuple[int, ...], classes: int, seed: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=gen, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


def mlp(dtype: torch.dtype = torch.float64, seed: int = 0) -> Case:
    """5 -> 4 -> 3 tanh MLP with biases, 16 examples (43 parameters)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(dtype).eval()
    x, y = _data(16, (5,), 3, seed + 1, dtype)
    return Case("mlp", model, x, y, 3)


def relu_mlp(dtype: torch.dtype = torch.float64, seed: int = 0, bias: bool = True) -> Case:
    """6 -> 8 -> 8 -> 3 ReLU MLP, 20 examples; ``bias=False`` gives a homogeneous net."""
    torch.manual_seed(seed)
    model = (
        nn.Sequential(
            nn.Linear(6, 8, bias=bias),
            nn.ReLU(),
            nn.Linear(8, 8, bias=bias),
            nn.ReLU(),
            nn.Linear(8, 3, bias=bias),
        )
        .to(dtype)
        .eval()
    )
    x, y = _data(20, (6,), 3, seed + 1, dtype)
    return Case("relu_mlp" if bias else "relu_mlp_nobias", model, x, y, 3)


def mlp_batchnorm(dtype: torch.dtype = torch.float64, seed: int = 0) -> Case:
    """5 -> 6 (BatchNorm, eval mode with non-trivial running stats) -> 3 MLP, 16 examples."""
    torch.manual_seed(seed)
    bn = nn.BatchNorm1d(6)
    model = nn.Sequential(nn.Linear(5, 6), bn, nn.ReLU(), nn.Linear(6, 3)).to(dtype)
    with torch.no_grad():
        bn.running_mean.copy_(torch.linspace(-0.5, 0.5, 6, dtype=dtype))
        bn.running_var.copy_(torch.linspace(0.5, 2.0, 6, dtype=dtype))
        bn.weight.copy_(torch.linspace(0.8, 1.2, 6, dtype=dtype))
        bn.bias.copy_(torch.linspace(-0.1, 0.1, 6, dtype=dtype))
    model.eval()
    x, y = _data(16, (5,), 3, seed + 1, dtype)
    return Case("mlp_batchnorm", model, x, y, 3)


def small_cnn(dtype: torch.dtype = torch.float64, seed: int = 0) -> Case:
    """1x6x6 input, conv(1->3) ReLU, conv(3->4, stride 2) ReLU, linear -> 3; 12 examples."""
    torch.manual_seed(seed)
    model = (
        nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(3, 4, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 3 * 3, 3),
        )
        .to(dtype)
        .eval()
    )
    x, y = _data(12, (1, 6, 6), 3, seed + 1, dtype)
    return Case("small_cnn", model, x, y, 3)


def linear_classifier(dtype: torch.dtype = torch.float64, seed: int = 0) -> Case:
    """A single affine map 4 -> 3 (closed forms for margins), 24 examples."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3)).to(dtype).eval()
    x, y = _data(24, (4,), 3, seed + 1, dtype)
    return Case("linear", model, x, y, 3)


CASES: dict[str, Callable[..., Case]] = {
    "mlp": mlp,
    "relu_mlp": relu_mlp,
    "mlp_batchnorm": mlp_batchnorm,
    "small_cnn": small_cnn,
    "linear": linear_classifier,
}


def first_examples(name: str, n: int) -> Dataset:
    """The built-in dataset ``name`` cut to its first ``n`` training and test examples."""
    d = load_dataset(name)
    return from_arrays(
        name, d.x_train[:n], d.y_train[:n], d.x_test[:n], d.y_test[:n], num_classes=d.num_classes
    )


def train_briefly(model: nn.Module, data: Dataset, steps: int = 60) -> nn.Module:
    """A few full-batch Adam steps in train mode: positive margins, real BatchNorm statistics."""
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.x_train.float()), data.y_train).backward()
        opt.step()
    return model.eval()
