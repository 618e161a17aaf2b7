"""The record of one exchange: what `build_record` makes of the data captured from a flow.

One record per exchange (see docs/recording-format.md and addons/schemas/record.schema.json).
The large parts of a Messages API request (system prompt, tool list, each message) and the
assistant's content become blobs named by the SHA-256 of their canonical JSON; the record
holds the references, in order, so a conversation resent every turn is stored once. Headers
are recorded from an allowlist, and what is recorded (URL, headers, bodies, session and client
fields, decisions, errors) is masked first. The body built here is unsigned: the journal links
it into its chain and signs it (`chain.seal_record`). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatehouse.masking.masker import Masker
from gatehouse.masking.urlmask import UnmaskableUrl, mask_target
from gatehouse.recording.canonical import RecordError, canonical_json, iso_time, json_safe, parse_json
from gatehouse.recording.sessions import SessionTracker, derive_session
from gatehouse.wire.assembler import assemble_message
from gatehouse.wire.bodies import media_type
from gatehouse.wire.jsonbody import KnownItems, Spanned, loads_spanned
from gatehouse.wire.sse import parse_sse

if TYPE_CHECKING:
    from gatehouse.masking.masker import MaskedDocument

# A JSON body (or the rest of one, once its blobs are taken out) up to this size stays in the
# record; a larger one becomes a blob so records stay small enough to list and read quickly.
INLINE_BODY_LIMIT = 8 * 1024
# What a recorder's `PartCache` holds at most: about a session of 10 MB, or 30 of 1 MB.
PART_CACHE_BYTES = 32 * 1024 * 1024


# Recorded request headers: an allowlist, so an auth header (x-api-key, authorization,
# proxy-authorization, cookie) can never reach a record whatever a client invents.
REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "anthropic-beta",
        "anthropic-version",
        "anthropic-dangerous-direct-browser-access",
        "content-encoding",
        "content-length",
        "content-type",
        "user-agent",
        "x-app",
        "x-claude-code-session-id",
        "x-claude-code-agent-id",
        "x-claude-code-parent-agent-id",
        "x-gatehouse-exchange-id",
    }
)
REQUEST_HEADER_PREFIXES = ("x-stainless-",)
RESPONSE_HEADERS = frozenset(
    {
        "content-encoding",
        "content-length",
        "content-type",
        "request-id",
        "retry-after",
        "x-should-retry",
        "x-gatehouse-exchange-id",
        "anthropic-organization-id",
    }
)
RESPONSE_HEADER_PREFIXES = ("anthropic-ratelimit-",)


def select_headers(
    headers: Iterable[tuple[str, str]], allowed: frozenset[str], prefixes: tuple[str, ...]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        n = name.lower()
        if n in allowed or n.startswith(prefixes):
            out[n] = f"{out[n]}, {value}" if n in out else value
    return out


@dataclass
class RequestInput:
    method: str
    scheme: str
    host: str
    port: int
    path: str
    headers: list[tuple[str, str]]
    body: bytes | None  # content-encoding already removed


@dataclass
class ResponseInput:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | None
    streamed: bool = False
    # The message the client received, reassembled by the streaming pipeline (post-masking).
    assembled: dict[str, Any] | None = None


@dataclass
class ExchangeInput:
    """Plain data captured from a flow: what `build_record` turns into a record."""

    kind: str  # request | exchange | refusal
    exchange_id: str
    request: RequestInput
    response: ResponseInput | None = None
    identity: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    request_findings: list[dict[str, Any]] = field(default_factory=list)
    response_findings: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    request_at: float = 0.0
    first_byte_at: float | None = None
    end_at: float | None = None


@dataclass
class BuiltRequest:
    """The request part of a record, its blobs and what was derived from the raw request."""

    part: dict[str, Any]
    blobs: dict[str, bytes]
    findings: list[dict[str, Any]]
    session: dict[str, Any]
    client: dict[str, Any]


@dataclass
class BuiltRecord:
    body: dict[str, Any]
    blobs: dict[str, bytes]  # hex -> canonical bytes


class PartCache:
    """The blobs of request parts recorded before (the system prompt, the tools, each message),
    by the digest of the part's text as the recorder received it: Claude Code resends the whole
    conversation every turn, and a part seen before is not masked, encoded and hashed again.

    Valid for one masker (`masker`): the record's copy of a part is masked, and masking is
    deterministic for a given policy and fingerprint key. Bounded by the bytes it holds, least
    recently used out first; thread-safe."""

    def __init__(
        self, masker: Masker | None, max_bytes: int = PART_CACHE_BYTES, known: KnownItems | None = None
    ) -> None:
        self.masker = masker
        # The messages parsed before (shared with the gateway's other parses), for a body the
        # recorder parses itself: one that masking changed.
        self.known = known
        self.max_bytes = max_bytes
        self._d: OrderedDict[tuple[Any, ...], tuple[str, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[str, bytes] | None:
        """(hex digest, canonical bytes) of the blob of a part seen before."""
        with self._lock:
            found = self._d.get(key)
            if found is not None:
                self._d.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], hx: str, data: bytes) -> None:
        # A part bigger than a sixteenth of the cache is not kept: it would push out many.
        size = len(data) + 200
        if size > self.max_bytes // 16:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1]) + 200
            self._d[key] = (hx, data)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, d) = self._d.popitem(last=False)
                self._bytes -= len(d) + 200

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)


class _Blobs:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def add(self, value: Any) -> str:
        data = canonical_json(value)
        hx = hashlib.sha256(data).hexdigest()
        self.blobs.setdefault(hx, data)
        return "sha256:" + hx

    def known(self, hx: str, data: bytes) -> str:
        self.blobs.setdefault(hx, data)
        return "sha256:" + hx


def _content_type(headers: Iterable[tuple[str, str]]) -> str:
    """The media type of the first Content-Type header."""
    for name, value in headers:
        if name.lower() == "content-type":
            return media_type(value)
    return ""


def _decode_body(body: bytes | None, content_type: str) -> tuple[str, Any]:
    """("none"|"json"|"text"|"binary", value)."""
    kind, value, _ = _decode_body_spanned(body, content_type, spanned=False)
    return kind, value


def _reusable(parsed: Spanned | None, text: str) -> Spanned | None:
    """`parsed` when it is the parse of exactly `text`, split by ``messages``; else None (the
    body is parsed again). It may hold NaN or Infinity, which `loads_spanned(allow_nan=False)`
    refuses: `canonical_json` refuses them too, and `build_request` then parses again."""
    if parsed is None or parsed.split != "messages" or parsed.text != text:
        return None
    return parsed


def _decode_body_spanned(
    body: bytes | None,
    content_type: str,
    *,
    spanned: bool = True,
    parsed: Spanned | None = None,
    known: KnownItems | None = None,
) -> tuple[str, Any, Spanned | None]:
    """("none"|"json"|"text"|"binary", value, where a JSON object's parts are in its text).
    `parsed`: the body already parsed by `loads_spanned` (see `build_request`); `known`, the
    messages it has parsed before."""
    if not body:
        return "none", None, None
    # Broader than `is_json_media` on purpose (text/json, application/x-ndjson...): that test
    # decides what the gateway refuses; this one only whether to try keeping the body's
    # structure in the record, and a body that does not parse is recorded as text.
    looks_json = content_type.endswith("json") or body[:1] in (b"{", b"[")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "binary", None, None
    if looks_json:
        # Duplicate keys (which the masking addon refuses) make `loads_spanned` give up: such a
        # body is parsed as before, the last copy kept.
        doc = None
        if spanned:
            doc = _reusable(parsed, text) or loads_spanned(text, allow_nan=False, known=known)
        if doc is not None:
            return "json", doc.value, doc
        try:
            return "json", parse_json(text), None
        except ValueError:
            pass
    return "text", text, None


def _mask(masker: Masker | None, obj: Any) -> tuple[Any, list[dict[str, Any]]]:
    if masker is None:
        return obj, []
    masked, findings = masker.mask_for_record(obj)
    return masked, [json_safe(f) for f in findings]


def _put_body(target: dict[str, Any], value: Any, blobs: _Blobs) -> None:
    """A JSON value inline when small, else as a blob."""
    if value is None:
        target["body"] = None
        return
    if len(canonical_json(value)) <= INLINE_BODY_LIMIT:
        target["body"] = value
    else:
        target["body_blob"] = blobs.add(value)


class _Parts:
    """The blobs of one request body's parts, through the `PartCache` (None: no cache)."""

    def __init__(self, md: MaskedDocument | None, doc: Spanned, cache: PartCache | None, blobs: _Blobs) -> None:
        self.blobs = blobs
        self.cache = cache
        if md is None:  # no masker: the parts as they came
            self.member_digests = {k: doc.digest(a, b) for k, a, b in doc.members}
            self.item_digests: list[bytes] | None = (
                [doc.digest(a, b) for a, b in doc.items] if doc.items is not None else None
            )
        else:
            self.member_digests = md.member_digests
            self.item_digests = md.item_digests

    def _add(self, value: Any, key: tuple[Any, ...] | None) -> str:
        if key is None or self.cache is None:
            return self.blobs.add(value)
        found = self.cache.get(key)
        if found is not None:
            return self.blobs.known(found[0], found[1])
        data = canonical_json(value)
        hx = hashlib.sha256(data).hexdigest()
        self.cache.put(key, hx, data)
        return self.blobs.known(hx, data)

    def add(self, value: Any, member: str) -> str:
        digest = self.member_digests.get(member)
        return self._add(value, None if digest is None else ("member", member, digest))

    def add_items(self, items: list[Any]) -> list[str]:
        digests = self.item_digests
        if digests is None or len(digests) != len(items):
            return [self.blobs.add(m) for m in items]
        return [self._add(m, ("item", d)) for m, d in zip(items, digests, strict=True)]


def _mask_parts(
    masker: Masker | None, envelope: dict[str, Any], doc: Spanned, cache: PartCache | None, blobs: _Blobs
) -> tuple[dict[str, Any], list[dict[str, Any]], _Parts]:
    """`_mask(masker, envelope)` for an envelope whose ``body`` is the JSON object `doc`, with
    the body's parts masked through the masker's memory of parts (`Masker.mask_spanned`):
    the same masked copy and findings, in the same order (the envelope's members before
    ``body``, the body, the members after it)."""
    if masker is None:
        return envelope, [], _Parts(None, doc, cache, blobs)
    keys = list(envelope)
    at = keys.index("body")
    head, found_head = masker.mask_for_record({k: envelope[k] for k in keys[:at]})
    md = masker.mask_spanned(doc, record=True, where="body")
    tail, found_tail = masker.mask_for_record({k: envelope[k] for k in keys[at + 1 :]})
    masked = {**head, "body": md.values, **tail}
    findings = [json_safe(f) for f in (*found_head, *md.findings, *found_tail)]
    return masked, findings, _Parts(md, doc, cache, blobs)


def build_request(
    req: RequestInput,
    *,
    masker: Masker | None,
    identity: dict[str, Any] | None,
    at: float,
    tracker: SessionTracker | None,
    cache: PartCache | None = None,
    parsed: Spanned | None = None,
) -> BuiltRequest:
    """The request part of a record. With a `cache` (made for this `masker`), the parts of
    the body seen in earlier requests are not masked, encoded and hashed again.

    `parsed`: the body as `loads_spanned` parsed it already (the masking addon's parse of a
    body it forwarded unchanged), used instead of parsing it again when it is the parse of
    exactly this body; its value may be masked in place, as the recorder's copy."""
    if parsed is not None:
        try:
            return _build_request(req, masker, identity, at, tracker, cache, parsed)
        except ValueError:
            # Every value of the body goes through `canonical_json` here (a part found in the
            # cache did before), which refuses NaN and Infinity: a body holding one, parsed by a
            # parser that allows them, is parsed again as the record parses it (and recorded as
            # text). Nothing before the refusal changed anything the second build depends on.
            pass
    return _build_request(req, masker, identity, at, tracker, cache, None)


def _build_request(
    req: RequestInput,
    masker: Masker | None,
    identity: dict[str, Any] | None,
    at: float,
    tracker: SessionTracker | None,
    cache: PartCache | None,
    parsed: Spanned | None,
) -> BuiltRequest:
    headers = {n.lower(): v for n, v in req.headers}
    known = cache.known if cache is not None else None
    kind, value, doc = _decode_body_spanned(req.body, _content_type(req.headers), parsed=parsed, known=known)
    session = derive_session(headers, value if kind == "json" else None, identity, at, tracker)
    beta = headers.get("anthropic-beta")
    client = {
        "user_agent": headers.get("user-agent"),
        "app": headers.get("x-app"),
        "anthropic_version": headers.get("anthropic-version"),
        "anthropic_beta": [b.strip() for b in beta.split(",") if b.strip()] if beta else [],
    }
    selected = select_headers(req.headers, REQUEST_HEADERS, REQUEST_HEADER_PREFIXES)
    # Session and client values come from client headers too: masked like everything else (a
    # secret pasted into a session id or user agent must not reach the record or the report).
    # Masking is deterministic, so a masked session id still groups the same exchanges.
    # Method, host and path too: on a refused request they are whatever the caller sent.
    path = req.path
    url_findings: list[dict[str, Any]] = []
    if masker is not None:
        try:
            path, found = mask_target(masker, path)
            url_findings = [json_safe(f) for f in found]
        except UnmaskableUrl:
            path = "/[MASKED:url]"
    envelope = {
        "method": req.method,
        "host": req.host,
        "path": path,
        "headers": selected,
        "body": value,
        "session": session,
        "client": client,
    }
    blobs = _Blobs()
    parts: _Parts | None = None
    # The parts' shortcut needs the gateway's own masker (or none); any other masker (a test's
    # stand-in) masks the envelope whole.
    if doc is not None and (masker is None or isinstance(masker, Masker)) and (cache is None or cache.masker is masker):
        masked, findings, parts = _mask_parts(masker, envelope, doc, cache, blobs)
    else:
        masked, findings = _mask(masker, envelope)
    findings = url_findings + findings
    body = masked["body"]
    session, client = masked["session"], masked["client"]

    part: dict[str, Any] = {
        "method": masked["method"],
        "scheme": req.scheme,
        "host": masked["host"],
        "port": req.port,
        "path": masked["path"],
        "headers": masked["headers"],
        "size": len(req.body or b""),
        "encoding": kind,
        "model": None,
        "stream": None,
        "system": None,
        "tools": None,
        "messages": None,
        "body": None,
    }
    if kind == "json" and isinstance(body, dict):
        rest = dict(body)
        for name in ("system", "tools"):
            if name in rest:
                v = rest.pop(name)
                part[name] = blobs.add(v) if parts is None else parts.add(v, name)
        if isinstance(rest.get("messages"), list):
            # In order: the report shows each turn's new messages by comparing these lists.
            items = rest.pop("messages")
            part["messages"] = [blobs.add(m) for m in items] if parts is None else parts.add_items(items)
        if isinstance(rest.get("model"), str):
            part["model"] = rest["model"]
        if isinstance(rest.get("stream"), bool):
            part["stream"] = rest["stream"]
        _put_body(part, rest, blobs)
    elif kind in ("json", "text"):
        _put_body(part, body, blobs)
    return BuiltRequest(part, blobs.blobs, findings, session, client)


def _split_message(msg: dict[str, Any], part: dict[str, Any], blobs: _Blobs) -> None:
    """A Messages API message: content as a blob shaped like a request message, so the next
    turn's copy of it (the client resends the conversation) is the same blob."""
    rest = {k: v for k, v in msg.items() if k != "content"}
    part["message"] = rest
    part["content"] = blobs.add({"role": msg.get("role", "assistant"), "content": msg.get("content", [])})


def build_response(
    resp: ResponseInput, *, masker: Masker | None
) -> tuple[dict[str, Any], dict[str, bytes], list[dict[str, Any]]]:
    selected = select_headers(resp.headers, RESPONSE_HEADERS, RESPONSE_HEADER_PREFIXES)
    ctype = _content_type(resp.headers)
    message: dict[str, Any] | None = None
    kind, value = "none", None
    if resp.assembled is not None:
        message, kind = resp.assembled, "sse"
    elif resp.body and ctype == "text/event-stream":
        # Buffered (no masking pipeline streamed it): assembled here from the body as sent.
        try:
            message = assemble_message(parse_sse(resp.body))
        except Exception:  # a malformed stream is recorded as text, not lost
            message = None
        if message is not None:
            kind = "sse"
        else:
            kind, value = _decode_body(resp.body, ctype)
    else:
        kind, value = _decode_body(resp.body, ctype)
        if kind == "json" and isinstance(value, dict) and value.get("type") == "message":
            message, value = value, None

    masked, findings = _mask(masker, {"headers": selected, "message": message, "body": value})
    blobs = _Blobs()
    part: dict[str, Any] = {
        "status": resp.status,
        "headers": masked["headers"],
        "request_id": masked["headers"].get("request-id"),
        "streamed": resp.streamed,
        "size": len(resp.body) if resp.body is not None and not resp.streamed else None,
        "encoding": kind,
        "message": None,
        "content": None,
        "body": None,
    }
    if masked["message"] is not None:
        _split_message(masked["message"], part, blobs)
    elif kind in ("json", "text"):
        body = masked["body"]
        if part["request_id"] is None and isinstance(body, dict) and isinstance(body.get("request_id"), str):
            part["request_id"] = body["request_id"]
        _put_body(part, body, blobs)
    return part, blobs.blobs, findings


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((b - a) * 1000, 3)


def build_record(
    inp: ExchangeInput,
    *,
    masker: Masker | None,
    gateway_version: str,
    policy_sha256: str | None,
    tracker: SessionTracker | None = None,
    built_request: BuiltRequest | None = None,
    cache: PartCache | None = None,
) -> BuiltRecord:
    """The unsigned body of a record (the journal links and signs it) and its blobs.

    `built_request` reuses the request part already built for the ``request`` record of a
    streamed exchange, so a long conversation is parsed and masked once, not twice.
    """
    if inp.kind not in ("request", "exchange", "refusal"):
        raise RecordError(f"unknown record kind {inp.kind!r}")
    req = built_request or build_request(
        inp.request, masker=masker, identity=inp.identity, at=inp.request_at, tracker=tracker, cache=cache
    )
    blobs = dict(req.blobs)
    response = None
    response_findings: list[dict[str, Any]] = []
    if inp.response is not None and inp.kind != "request":
        response, rblobs, response_findings = build_response(inp.response, masker=masker)
        blobs.update(rblobs)
    # Decisions and errors are the gateway's own words, but may quote content: masked too.
    extra, extra_findings = _mask(masker, {"decisions": json_safe(inp.decisions), "errors": list(inp.errors)})
    decisions = []
    for d in extra["decisions"]:
        d = dict(d)
        if isinstance(d.get("at"), (int, float)) and not isinstance(d.get("at"), bool):
            d["at"] = iso_time(float(d["at"]))
        decisions.append(d)
    end = inp.end_at if inp.kind != "request" else None
    body = {
        "kind": inp.kind,
        "exchange_id": inp.exchange_id,
        "gateway": {"version": gateway_version, "policy_sha256": policy_sha256},
        "timing": {
            "request": iso_time(inp.request_at),
            "first_byte": iso_time(inp.first_byte_at),
            "end": iso_time(end),
            "ttfb_ms": _ms(inp.request_at, inp.first_byte_at),
            "duration_ms": _ms(inp.request_at, end),
        },
        "identity": json_safe(inp.identity),
        "session": req.session,
        "client": req.client,
        "request": req.part,
        "response": response,
        "decisions": decisions,
        "findings": {
            "request": json_safe(inp.request_findings),
            "response": json_safe(inp.response_findings),
            "record": req.findings + response_findings + extra_findings,
        },
        "errors": extra["errors"],
        # A masker with no rules (masking disabled by the policy) masks nothing.
        "masked": masker is not None and masker.enabled,
    }
    return BuiltRecord(body, blobs)
