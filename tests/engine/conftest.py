"""Engine tests run tiny models: one intra-op thread is fastest for them, and it keeps their
timing steady when other processes (a worker, a browser) share the CPU."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
