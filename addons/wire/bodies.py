"""How the gateway reads a Claude API body it inspects: media type, UTF-8 text, strict JSON, kind.

The rules the masking addon applies to every body before masking it, kept apart from mitmproxy:
which Content-Type counts as JSON, which request paths get the Messages API walker, whether a
buffered response is inspected as an event stream, a JSON document or text, and why a body
cannot be read. Every `UnparseableBody` message is shown to the client: it names the body and
the problem, and never quotes the body. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Literal

from gatehouse.wire import jsonbody
from gatehouse.wire.jsonbody import DuplicateKey, KnownItems, Spanned
from gatehouse.wire.sse import compact_json

# Request bodies the Messages API walker knows (the rest get the same generic walk).
MESSAGE_ENDPOINTS = ("/v1/messages", "/v1/messages/count_tokens")

ResponseKind = Literal["sse", "json", "text"]


class UnparseableBody(ValueError):
    """A body the masker cannot read. The message is safe to show the client: it never
    quotes the body."""


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value, lower case, parameters dropped: ``""`` when
    there is none (``"Application/JSON; charset=utf-8"`` -> ``"application/json"``)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_media(media: str) -> bool:
    """Whether a media type declares JSON: ``application/json`` or a ``+json`` suffix (RFC 6839).
    The masking addon refuses a request body that declares anything else; ``text/json`` is
    text to it (masked as JSON text, see `response_kind`)."""
    return media == "application/json" or media.endswith("+json")


def is_message_endpoint(path: str) -> bool:
    """Whether the path (query ignored) is one of `MESSAGE_ENDPOINTS`; a prefix added by an
    upstream base path (``/proxy/v1/messages``) is allowed."""
    p = path.split("?", 1)[0].rstrip("/")
    return any(p == e or p.endswith(e) for e in MESSAGE_ENDPOINTS)


def is_uncompressed(content_encoding: str) -> bool:
    """Whether a Content-Encoding header's value (``""`` when absent) leaves the body as sent."""
    return content_encoding.strip().lower() in ("", "identity")


def asks_for_stream(body: Any) -> bool:
    """Whether a parsed request body asks for a streamed (SSE) response: ``"stream": true``."""
    return isinstance(body, dict) and body.get("stream") is True


def require_json_media(media: str, what: str) -> None:
    """A body parsed as JSON must be declared JSON, or not declared at all."""
    if media and not is_json_media(media):
        raise UnparseableBody(f"{what} has Content-Type {media!r}; the gateway inspects application/json only")


def decode_text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnparseableBody(f"{what} is not UTF-8 text (invalid byte at offset {e.start})") from None


def parse_json(raw: bytes, what: str) -> Any:
    """The JSON value of a UTF-8 body, duplicate keys refused (`jsonbody.loads`), or
    `UnparseableBody` saying why not (where, never what)."""
    return _parse_text(decode_text(raw, what), what)


def parse_json_spanned(raw: bytes, what: str, known: KnownItems | None = None) -> tuple[Any, Spanned | None]:
    """`parse_json`, and, when the body is a JSON object, where its parts are in its text
    (`jsonbody.loads_spanned`: the masker remembers the parts it has seen by their text; with
    `known`, the messages parsed before are not decoded again)."""
    text = decode_text(raw, what)
    doc = jsonbody.loads_spanned(text, known=known)
    if doc is not None:
        return doc.value, doc
    return _parse_text(text, what), None


def _parse_text(text: str, what: str) -> Any:
    try:
        return jsonbody.loads(text)
    except DuplicateKey as e:
        raise UnparseableBody(f"{what} is ambiguous: {e}") from None
    except RecursionError:
        raise UnparseableBody(f"{what} is JSON nested too deeply to inspect") from None
    except ValueError as e:
        raise UnparseableBody(
            f"{what} is not valid JSON ({type(e).__name__} at line {getattr(e, 'lineno', '?')}, "
            f"column {getattr(e, 'colno', '?')})"
        ) from None


def encode_json(value: Any) -> bytes:
    """A body the gateway changed (masked), encoded as the API writes JSON: compact, non-ASCII
    as is."""
    return compact_json(value).encode("utf-8")


def response_kind(media: str, raw: bytes) -> ResponseKind:
    """How a buffered, non-empty response body is inspected: as an event stream, a JSON
    document (declared, or undeclared and looking like one), or text (any ``text/`` type, or
    none: JSON or SSE sent under another type is still parsed by the SDKs). Any other type
    cannot be inspected."""
    if media == "text/event-stream":
        return "sse"
    if is_json_media(media) or (not media and raw.lstrip()[:1] in (b"{", b"[")):
        return "json"
    if media.startswith("text/") or not media:
        return "text"
    raise UnparseableBody(f"the response body has Content-Type {media!r}, which the gateway cannot inspect")
