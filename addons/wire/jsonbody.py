"""Strict JSON for request bodies the gateway inspects.

Python's `json.loads` keeps the last of duplicate keys. A body with two `"messages"` (or two
`"model"`) keys would then be checked on one copy and forwarded with both, and an upstream
that reads the first copy would get what the gateway never inspected. Such bodies are refused.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        # The key name is structural (e.g. "messages"), not content; cut it short anyway.
        super().__init__(f"the JSON object has the key {key[:40]!r} twice")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        out[k] = v
    return out


def loads(text: str | bytes) -> Any:
    """`json.loads` that refuses duplicate keys (raises `DuplicateKey`, a ValueError)."""
    return json.loads(text, object_pairs_hook=_no_duplicates)
