"""A bounded map, least recently used out first, safe to share between threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


class Lru[K, V]:
    """At most `limit` entries; `get` and `put` count as uses. A limit of 0 or less keeps nothing.
    With `weight`, the limit is on the sum of the entries' weights instead (an entry heavier than
    the limit is not kept)."""

    def __init__(self, limit: int, weight: Callable[[V], int] | None = None) -> None:
        self.limit = limit
        self._weight = weight
        self._total = 0
        self._d: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._d.get(key)
            if value is not None:
                self._d.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        if self.limit <= 0:
            return
        weigh = self._weight
        if weigh is None:
            with self._lock:
                self._d[key] = value
                self._d.move_to_end(key)
                while len(self._d) > self.limit:
                    self._d.popitem(last=False)
            return
        w = weigh(value)
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._total -= weigh(old)
            if w > self.limit:
                return
            self._d[key] = value
            self._total += w
            while self._total > self.limit:
                _, evicted = self._d.popitem(last=False)
                self._total -= weigh(evicted)

    def pop(self, key: K) -> V | None:
        with self._lock:
            value = self._d.pop(key, None)
            if value is not None and self._weight is not None:
                self._total -= self._weight(value)
            return value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._d

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)
