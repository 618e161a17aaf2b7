"""The one encoding of what Gatehouse records: canonical JSON, blob references, timestamps.

Canonical JSON has keys sorted, no insignificant whitespace, ASCII only (every non-ASCII
character escaped, so even a lone surrogate from a client round-trips), no NaN. Those bytes are
what is signed, hashed and stored; a verifier re-encodes what it parsed and refuses a record
whose bytes differ, so there is exactly one encoding of any record. A blob is named by the
SHA-256 of its canonical JSON (``sha256:<hex>``). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gatehouse.exchange import Decision, Finding, Identity

# The hex digest of a SHA-256: what names a blob.
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class RecordError(ValueError):
    """A record, blob or key is malformed."""


def canonical_json(obj: Any) -> bytes:
    """The one encoding of a JSON value that Gatehouse signs, hashes and stores."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity are refused (they have no canonical form)."""
    return json.loads(data, parse_constant=_reject_constant)


def sha256_ref(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ref_hex(ref: str) -> str:
    if not isinstance(ref, str) or not ref.startswith("sha256:") or not SHA256_HEX.match(ref[7:]):
        raise RecordError(f"not a blob reference: {ref!r}")
    return ref[7:]


def json_safe(obj: Any) -> Any:
    """A copy of `obj` that `canonical_json` accepts: tuples become lists, sets sorted lists,
    non-finite floats None, an Exchange's Identity, Decision or Finding its `to_dict()`, any
    other object its `str()`."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((json_safe(v) for v in obj), key=lambda v: canonical_json(v))
    if isinstance(obj, (Identity, Decision, Finding)):
        return json_safe(obj.to_dict())
    return str(obj)


def iso_time(t: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC with microseconds, e.g. ``2025-01-02T03:04:05.123456Z``."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso_time(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
