"""Parameter counts of the layers the zoo uses, computed arithmetically (no tensor allocated).

Each equals ``sum(p.numel() for p in layer.parameters())`` of the torch layer it names.
"""

from __future__ import annotations


def conv(cin: int, cout: int, kernel: int, bias: bool) -> int:
    """``nn.Conv2d(cin, cout, kernel, bias=bias)``: ``cout * cin * k^2`` (+ ``cout``).

    >>> conv(3, 16, 3, False)
    432
    """
    return cout * cin * kernel * kernel + (cout if bias else 0)


def linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    """``nn.Linear(fan_in, fan_out, bias=bias)``.

    >>> linear(64, 10)
    650
    """
    return fan_in * fan_out + (fan_out if bias else 0)


def batchnorm(channels: int) -> int:
    """``nn.BatchNorm{1,2}d(channels)``: a weight and a bias per channel (buffers excluded).

    >>> batchnorm(16)
    32
    """
    return 2 * channels
