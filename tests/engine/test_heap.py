"""The retained-heap policy: scoped, nested, off where it cannot or should not apply."""

from __future__ import annotations

import platform

import pytest
import torch

from genscope.linalg import heap
from genscope.linalg.lanczos import eigsh
from genscope.linalg.operators import DenseOperator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="the policy applies to glibc's malloc only")
def test_nested_holds_release_once_at_the_last_exit() -> None:
    assert not heap.holding()
    with heap.retained_heap() as outer:
        assert outer
        with heap.retained_heap("cpu") as inner:
            assert inner and heap.holding()
        assert heap.holding()
    assert not heap.holding()


def test_cuda_devices_and_the_switch_leave_the_allocator_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with heap.retained_heap(torch.device("cuda")) as held:
        assert not held and not heap.holding()
    monkeypatch.setenv("GENSCOPE_RETAIN_HEAP", "0")
    assert not heap.enabled()
    with heap.retained_heap() as held:
        assert not held and not heap.holding()
    monkeypatch.setenv("GENSCOPE_RETAIN_HEAP", "yes please")
    with pytest.raises(ValueError, match="GENSCOPE_RETAIN_HEAP must be 0 or 1"):
        heap.enabled()


def test_released_after_an_exception() -> None:
    with pytest.raises(RuntimeError), heap.retained_heap():
        raise RuntimeError("boom")
    assert not heap.holding()


@pytest.mark.skipif(not GLIBC, reason="the policy applies to glibc's malloc only")
def test_algorithms_hold_it_while_they_run() -> None:
    seen = []

    matrix = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))

    class Watching(DenseOperator):
        def _matmat(self, block: torch.Tensor) -> torch.Tensor:
            seen.append(heap.holding())
            return super()._matmat(block)

    result = eigsh(Watching(matrix), k=2, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert seen and all(seen)
    assert not heap.holding()
    assert torch.allclose(result.values, torch.tensor([20.0, 19.0], dtype=torch.float64))
