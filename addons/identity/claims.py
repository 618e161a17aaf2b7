"""Reading a token's claims: values at claim paths, required-claim matching, times, and how a
claim value is shown in a message.

Nothing here decides whether a token is accepted; the verifier does, with these readers. Only
claims of a token whose signature verified are read, except ``iss`` (which picks the issuer).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from gatehouse.identity.config import ClaimPath, ClaimScalar, ClaimValue
from gatehouse.identity.errors import TokenError


def claim_at(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    """The value at a claim path, or None.

    A string path is first taken as one claim name (namespaced claims such as
    ``https://example.com/groups`` contain dots); otherwise it is split on dots, the longest
    existing key winning at each level, so ``https://example.com/claims.groups`` also works.
    A tuple is an exact list of path segments.
    """
    if isinstance(path, tuple):
        cur: Any = claims
        for seg in path:
            if not isinstance(cur, dict) or seg not in cur:
                return None
            cur = cur[seg]
        return cur
    if path in claims:
        return claims[path]
    segs = path.split(".")
    cur = claims
    i = 0
    while i < len(segs):
        if not isinstance(cur, dict):
            return None
        for j in range(len(segs), i, -1):
            key = ".".join(segs[i:j])
            if key in cur:
                cur = cur[key]
                i = j
                break
        else:
            return None
    return cur


def path_name(path: ClaimPath) -> str:
    return path if isinstance(path, str) else ".".join(path)


def show_value(value: Any, limit: int = 80) -> str:
    """A claim value for a message: JSON, shortened. Never used on the token itself."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _same(actual: Any, expected: ClaimScalar) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, (int, float)):
        return isinstance(actual, (int, float)) and actual == expected
    return isinstance(actual, str) and actual == expected


def claim_matches(actual: Any, expected: ClaimValue) -> bool:
    """A required claim: equal to the value (or one of a tuple); a list claim must contain it."""
    options = expected if isinstance(expected, tuple) else (expected,)
    values = actual if isinstance(actual, list) else [actual]
    return any(_same(a, e) for a in values for e in options)


def numeric_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A time claim (``exp``, ``nbf``, ``iat``) in seconds since the epoch; None when absent."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenError("claims", f"The token's {name} claim is not a number of seconds since the epoch.")
    return float(value)


def string_claim(claims: Mapping[str, Any], path: ClaimPath) -> str | None:
    value = claim_at(claims, path)
    return value if isinstance(value, str) and value else None


def group_names(value: Any, static: Iterable[str]) -> tuple[str, ...]:
    """The groups a groups claim (a string or a list) names, then the issuer's static groups, once each."""
    found: list[str] = []
    if isinstance(value, str) and value:
        found.append(value)
    elif isinstance(value, list):
        found.extend(v for v in value if isinstance(v, str) and v)
    found.extend(static)
    return tuple(dict.fromkeys(found))


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
