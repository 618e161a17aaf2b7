"""One parse of a request body, shared by the addons that read it.

Access reads a Messages API body for its model and server tools, masking walks it, the recorder
copies it into the record: three parses of the same megabyte on a late turn of a Claude Code
session (the whole conversation is resent every turn). The first addon that parses it keeps the
parse here, by flow, with the exact body object it parsed; the next one takes it only while the
flow still carries that same object. A body replaced since (masking wrote its masked copy) is
parsed anew by whoever reads it next, so no addon ever judges one text and forwards another.

Entries are written and read on the event loop (the parse itself may run on a worker thread);
the dictionary holds flows weakly, so a flow that ends takes its parse with it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from gatehouse.mitm.flowutil import off_loop
from gatehouse.wire import bodies
from gatehouse.wire.jsonbody import KnownItems, Spanned

WHAT = "the request body"
# The parts of request bodies parsed before (a conversation's messages, its tools and system
# prompt), by their exact text (`jsonbody.KnownItems`), shared by every flow: a late turn's
# megabyte of earlier messages is copied from here instead of being decoded and hashed again.
# Bounded by the memory it holds (texts and their parsed values, ~2 MB for a 1 MB conversation;
# no part over a sixteenth of it): room for the conversations of some tens of sessions at once.
# Unmasked text, in memory only, as the flows themselves hold it.
KNOWN_PARTS = KnownItems(max_bytes=96 * 1024 * 1024)


@dataclass(frozen=True)
class ParsedRequest:
    """The JSON value of a request body and, when it is an object, where its parts are in its
    text (`bodies.parse_json_spanned`). Readers must not change `value` while it is shared."""

    value: Any
    spanned: Spanned | None


@dataclass(frozen=True)
class _Entry:
    raw: bytes
    parsed: ParsedRequest


_CACHE: weakref.WeakKeyDictionary[http.HTTPFlow, _Entry] = weakref.WeakKeyDictionary()


def _uncompressed(req: http.Request) -> bool:
    return bodies.is_uncompressed(req.headers.get("content-encoding", ""))


def parse(raw: bytes) -> ParsedRequest:
    """Parse an (uncompressed) request body: duplicate keys refused, `UnparseableBody` saying
    why not. Pure: safe on a worker thread."""
    value, spanned = bodies.parse_json_spanned(raw, WHAT, KNOWN_PARTS)
    return ParsedRequest(value, spanned)


def remember(flow: http.HTTPFlow, raw: bytes, parsed: ParsedRequest) -> None:
    """Keep `parsed`, the parse of `raw`, for the flow's next reader. `raw` must be the object
    `flow.request.raw_content` was when it was read (a compressed body is never kept)."""
    if _uncompressed(flow.request):
        _CACHE[flow] = _Entry(raw, parsed)


def cached(flow: http.HTTPFlow) -> ParsedRequest | None:
    """The kept parse of the flow's request body, if the flow still carries exactly the body
    that was parsed (the same object: nothing replaced it since); else None."""
    entry = _CACHE.get(flow)
    if entry is None:
        return None
    if entry.raw is not flow.request.raw_content or not _uncompressed(flow.request):
        del _CACHE[flow]
        return None
    return entry.parsed


async def read(flow: http.HTTPFlow) -> ParsedRequest:
    """The flow's request body (uncompressed: the caller checks) parsed: the kept parse, or a
    new one (on a worker thread for a big body) kept for the next reader. Raises
    `UnparseableBody`, and RecursionError for JSON nested too deeply."""
    if (parsed := cached(flow)) is not None:
        return parsed
    raw = flow.request.raw_content or b""
    parsed = await off_loop(len(raw), parse, raw)
    remember(flow, raw, parsed)
    return parsed


def take(flow: http.HTTPFlow) -> ParsedRequest | None:
    """`cached`, handed over for good: the taker may change its value (the recorder masks the
    record's copy in place), so no one else gets it."""
    parsed = cached(flow)
    _CACHE.pop(flow, None)
    return parsed
