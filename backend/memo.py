"""A small thread-safe LRU memo for immutable things the API reads again and again.

Content-addressed blobs never change, and neither do the figures of a finished run: the read
routes (run pages, comparisons, share links) would otherwise decompress, parse and re-plot the
same reports on every request. Entries are bounded by an estimated size in bytes. Values handed
out are shared between requests: callers must not modify them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class SizedLRU:
    """Least-recently-used memo holding at most ``max_bytes`` of estimated size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_make(self, key: Hashable, make: Callable[[], tuple[Any, int]]) -> Any:
        """The value for ``key``; on a miss ``make()`` returns ``(value, size_in_bytes)``.

        Two threads missing the same key at once may both compute it; the values are equal.
        """
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return hit[0]
            self.misses += 1
        value, size = make()
        if size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = (value, size)
                self._size += size
            while self._size > self.max_bytes and self._items:
                _, (_, dropped) = self._items.popitem(last=False)
                self._size -= dropped
        return value

    def __len__(self) -> int:
        return len(self._items)
