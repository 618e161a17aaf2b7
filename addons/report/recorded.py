"""Values read out of stored records, defensively: a damaged store is still rendered, so each
value is checked for its type where it is taken, and a time that does not parse is no time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from gatehouse.recording.canonical import parse_iso_time


def as_object(value: Any) -> dict[str, Any]:
    """A JSON object from a record, or an empty one."""
    return value if isinstance(value, dict) else {}


def parse_time(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return parse_iso_time(iso)
    except ValueError:
        try:
            return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


def request_time(rec: Mapping[str, Any]) -> float | None:
    """When the request was made; a record without timing has its chain time."""
    timing = as_object(rec.get("timing"))
    t = parse_time(timing.get("request"))
    if t is None:
        chain = as_object(rec.get("chain"))
        t = parse_time(chain.get("at"))
    return t


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a JSON value, depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)
