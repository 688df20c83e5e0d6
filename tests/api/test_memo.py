"""The read routes' memo: bounded by size, and what it hands out is never changed in place."""

from __future__ import annotations

import threading
from collections.abc import Callable

from backend.memo import SizedLRU


def test_sized_lru_evicts_the_least_recently_used_by_size() -> None:
    memo = SizedLRU(max_bytes=100)
    calls: list[str] = []

    def make(key: str, size: int) -> Callable[[], tuple[str, int]]:
        def build() -> tuple[str, int]:
            calls.append(key)
            return key.upper(), size

        return build

    assert memo.get_or_make("a", make("a", 40)) == "A"
    assert memo.get_or_make("b", make("b", 40)) == "B"
    assert memo.get_or_make("a", make("a", 40)) == "A"  # hit: "a" is now the most recent
    assert memo.get_or_make("c", make("c", 40)) == "C"  # 120 > 100: "b" goes
    assert calls == ["a", "b", "c"] and len(memo) == 2
    memo.get_or_make("b", make("b", 40))
    assert calls[-1] == "b"  # it was evicted, so it was built again
    assert memo.get_or_make("huge", make("huge", 1000)) == "HUGE" and len(memo) <= 2
    assert (memo.hits, memo.misses) == (1, 5)


def test_sized_lru_is_safe_across_threads() -> None:
    memo = SizedLRU(max_bytes=1 << 20)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(500):
                key = (seed * i) % 37
                assert memo.get_or_make(key, lambda k=key: (k * 2, 10)) == key * 2
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(memo) == 37
