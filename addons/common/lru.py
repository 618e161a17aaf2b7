"""A bounded map, least recently used out first, safe to share between threads."""

from __future__ import annotations

import threading
from collections import OrderedDict


class Lru[K, V]:
    """At most `limit` entries; `get` and `put` count as uses. A limit of 0 or less keeps nothing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
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
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.limit:
                self._d.popitem(last=False)

    def pop(self, key: K) -> V | None:
        with self._lock:
            return self._d.pop(key, None)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._d

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)
