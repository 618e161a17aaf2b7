"""A fake Anthropic API upstream for end-to-end tests, demos and benchmarks.

It speaks enough of the Claude API for the Anthropic SDKs and the Claude Code CLI: `POST
/v1/messages` (JSON or SSE, `?beta=true` allowed), `POST /v1/messages/count_tokens`, `GET
/v1/models[/{id}]`, `/api/claude_code/*` (an empty object), and a 404 in the Anthropic error shape
for everything else. It records every request it receives, so a test can assert on exactly what
left the gateway.

    with FakeUpstream(tls=True) as up:
        up.enqueue(Reply.text("hi", chunk_chars=1), Reply.error(529, "overloaded_error", "busy"))
        ...                                         # point the gateway at up.base_url
        assert up.requests[0].headers["x-api-key"] == GATEWAY_KEY

Which reply a request gets: `up.responder(request)` if set and it returns a `Reply`; otherwise for
`POST /v1/messages` the next queued reply (`up.enqueue`), else a short default text answer that
echoes the request's model; other paths get their built-in answers.

Only the standard library and `cryptography` (through `tls_certs`) are used, so that the fake
never shares code, or bugs, with the gateway under test. Run it alone for demos and benchmarks:

    PYTHONPATH=tests python -m support.fake_upstream [--port N] [--tls] [--cert-dir DIR] [--tool-command CMD]

prints the base URL (and, with --tls, the CA certificate path), one per line, then serves until
killed.
"""

from __future__ import annotations

import argparse
import collections
import functools
import gzip as gzip_module
import json
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, overload

# Importable as `tests.fake_upstream` (relative import), as top-level `fake_upstream` with tests/
# on sys.path (pytest's default "prepend" import mode), and as a script (its folder is sys.path[0]).
if __package__:
    from .tls_certs import TLSFiles, server_ssl_context, write_tls_files
else:
    from support.tls_certs import TLSFiles, server_ssl_context, write_tls_files

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TEXT",
    "MODELS",
    "FakeUpstream",
    "Gate",
    "ReceivedRequest",
    "Reply",
    "RequestLog",
    "Responder",
    "assemble_message",
    "claude_code_tool_responder",
    "complete_message",
    "encode_sse",
    "encode_sse_event",
    "error_body",
    "example_for_schema",
    "is_claude_code_main_request",
    "parse_sse",
    "sse_events",
    "text_reply_for",
]

DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_TEXT = "Hello from the fake upstream."
MAX_BODY_BYTES = 64 * 1024 * 1024

# Status -> Anthropic error type, as the real API pairs them.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}

MODELS: list[dict[str, Any]] = [
    {
        "type": "model",
        "id": "claude-opus-4-1",
        "display_name": "Claude Opus 4.1",
        "created_at": "2025-08-05T00:00:00Z",
    },
    {
        "type": "model",
        "id": "claude-sonnet-4-5",
        "display_name": "Claude Sonnet 4.5",
        "created_at": "2025-09-29T00:00:00Z",
    },
    {
        "type": "model",
        "id": "claude-haiku-4-5",
        "display_name": "Claude Haiku 4.5",
        "created_at": "2025-10-01T00:00:00Z",
    },
]


def _hex(n: int = 24) -> str:
    return uuid.uuid4().hex[:n]


def _dumps(obj: Any) -> bytes:
    # Compact separators, like the real API's `data:` lines and JSON bodies.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_body(
    status: int, type: str | None = None, message: str | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """The Anthropic error shape: `{"type":"error","error":{type,message},"request_id":...}`."""
    etype = type or ERROR_TYPES.get(status, "api_error")
    return {
        "type": "error",
        "error": {"type": etype, "message": message or etype.replace("_", " ")},
        "request_id": request_id,
    }


# --------------------------------------------------------------------------------------------
# What was received
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReceivedRequest:
    """One request as it arrived on the wire.

    `headers` maps lower-cased names to values; a header sent several times has its values
    joined with ", " (so a duplicated `x-api-key` is visible as such); `header_values(name)`
    gives them one by one. `body` is the raw body after de-chunking, never decompressed.
    """

    method: str
    path: str  # including the query string, e.g. "/v1/messages?beta=true"
    headers: dict[str, str]
    header_items: tuple[tuple[str, str], ...]  # (lower-cased name, value) in wire order
    body: bytes
    http_version: str = "HTTP/1.1"
    chunked: bool = False  # the body came with Transfer-Encoding: chunked
    tls: bool = False
    received_at: float = 0.0  # time.monotonic()

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.header_items if k == name]

    @property
    def route(self) -> str:
        """The path without the query string."""
        return urllib.parse.urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query, keep_blank_values=True)

    def decoded_body(self) -> bytes:
        """The body with a gzip/deflate Content-Encoding undone (other encodings raise)."""
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return self.body
        if encoding in ("gzip", "x-gzip"):
            return gzip_module.decompress(self.body)
        if encoding == "deflate":
            return zlib.decompress(self.body)
        raise ValueError(f"cannot decode request content-encoding {encoding!r}")

    def json(self) -> Any:
        return json.loads(self.decoded_body())

    @functools.cached_property
    def _parsed(self) -> Any:
        # Parsed once: Claude Code's bodies are ~75 KB and several properties below look inside.
        try:
            return self.json()
        except (ValueError, UnicodeDecodeError, OSError):  # OSError: bad gzip data
            return None

    def json_or_none(self) -> Any:
        """The parsed body, or None if it is not JSON. Shared between calls: do not mutate."""
        return self._parsed

    @property
    def is_messages(self) -> bool:
        """A `POST /v1/messages` (any query string), i.e. a model call."""
        return self.method == "POST" and self.route == "/v1/messages"

    @property
    def wants_stream(self) -> bool:
        body = self.json_or_none()
        return isinstance(body, dict) and body.get("stream") is True

    @property
    def model(self) -> str | None:
        body = self.json_or_none()
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None

    def last_user_blocks(self) -> list[dict[str, Any]]:
        """Content blocks of the last message of a Messages request if it is a user message
        (a string content becomes one text block); [] otherwise."""
        body = self.json_or_none()
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return []
        messages = body["messages"]
        if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
            return []
        content = messages[-1].get("content")
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        return [b for b in content or [] if isinstance(b, dict)]

    def tool_results(self) -> list[dict[str, Any]]:
        """The `tool_result` blocks of the last user message."""
        return [b for b in self.last_user_blocks() if b.get("type") == "tool_result"]


class RequestLog(Sequence[ReceivedRequest]):
    """A thread-safe, append-only (until `clear`) list of received requests.

    Indexing and iteration work on a snapshot; `wait_for` blocks until enough has arrived.
    """

    def __init__(self) -> None:
        self._items: list[ReceivedRequest] = []
        self._cond = threading.Condition()

    def append(self, request: ReceivedRequest) -> None:
        with self._cond:
            self._items.append(request)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def snapshot(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._items)

    @overload
    def __getitem__(self, index: int) -> ReceivedRequest: ...
    @overload
    def __getitem__(self, index: slice) -> list[ReceivedRequest]: ...
    def __getitem__(self, index: int | slice) -> ReceivedRequest | list[ReceivedRequest]:
        with self._cond:
            return self._items[index]

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[ReceivedRequest]:
        return iter(self.snapshot())

    def __repr__(self) -> str:
        return f"RequestLog({[f'{r.method} {r.path}' for r in self.snapshot()]})"

    def messages(self) -> list[ReceivedRequest]:
        """The `POST /v1/messages` requests, in arrival order."""
        return [r for r in self.snapshot() if r.is_messages]

    def wait_for(
        self,
        condition: int | Callable[[list[ReceivedRequest]], bool],
        timeout: float = 10.0,
    ) -> list[ReceivedRequest]:
        """Block until at least `condition` requests arrived (or `condition(snapshot)` holds);
        return the snapshot. Raises TimeoutError after `timeout` seconds."""
        if isinstance(condition, int):
            count = condition
            condition = lambda items: len(items) >= count
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition(list(self._items)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fake upstream: condition not met; received {self!r}")
                self._cond.wait(remaining)
            return list(self._items)


# --------------------------------------------------------------------------------------------
# Messages and SSE
# --------------------------------------------------------------------------------------------


def _estimate_tokens(text_len: int) -> int:
    # About four characters per token; the numbers only need to be plausible and deterministic.
    return max(1, text_len // 4)


def _block_output_len(block: Mapping[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return len(block.get("text", ""))
    if kind == "thinking":
        return len(block.get("thinking", ""))
    if kind in ("tool_use", "server_tool_use"):
        return len(json.dumps(block.get("input", {})))
    return 0


def complete_message(
    message: Mapping[str, Any],
    *,
    model: str | None = None,
    input_tokens: int | None = None,
) -> dict[str, Any]:
    """A full Messages API response object from a partial one: fills `id`, `type`, `role`,
    `model` (the message's, else `model`, else DEFAULT_MODEL), `stop_reason` (`tool_use` when a
    tool_use block is present, else `end_turn`), `stop_sequence` and `usage`."""
    content = [dict(b) for b in message.get("content", [])]
    has_tool = any(b.get("type") == "tool_use" for b in content)
    usage = {
        "input_tokens": input_tokens if input_tokens is not None else 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": _estimate_tokens(sum(_block_output_len(b) for b in content)),
    }
    usage.update(message.get("usage") or {})
    out = dict(message)
    out.update(
        id=message.get("id") or f"msg_fake_{_hex()}",
        type="message",
        role="assistant",
        model=message.get("model") or model or DEFAULT_MODEL,
        content=content,
        stop_reason=message.get("stop_reason") or ("tool_use" if has_tool else "end_turn"),
        stop_sequence=message.get("stop_sequence"),
        usage=usage,
    )
    return out


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse_events(
    message: Mapping[str, Any],
    *,
    chunk_chars: int = 8,
    json_chunk_chars: int = 12,
    pings: bool = True,
) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data) sequence the real API streams for `message`.

    message_start (content empty), ping, then per block content_block_start / deltas /
    content_block_stop, then message_delta (stop_reason, output_tokens) and message_stop.
    Text and thinking are split into `chunk_chars`-character deltas; a tool_use input is
    serialised with `json.dumps` and split into `json_chunk_chars` pieces after an initial empty
    `partial_json` (as the real API sends), so the concatenation of the pieces is the input.
    A thinking block ends with one signature_delta. Other block types (redacted_thinking,
    server tool results) are sent whole in content_block_start.
    """
    msg = complete_message(message)
    usage = dict(msg["usage"])
    start_usage = dict(usage, output_tokens=min(1, usage.get("output_tokens", 1)))
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": dict(msg, content=[], stop_reason=None, stop_sequence=None, usage=start_usage),
            },
        )
    ]
    if pings:
        events.append(("ping", {"type": "ping"}))

    def delta(index: int, d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})

    for index, block in enumerate(msg["content"]):
        kind = block.get("type")
        if kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [delta(index, {"type": "citations_delta", "citation": c}) for c in block.get("citations") or []]
            deltas += [
                delta(index, {"type": "text_delta", "text": p}) for p in _pieces(block.get("text", ""), chunk_chars)
            ]
        elif kind in ("tool_use", "server_tool_use"):
            start = {k: v for k, v in block.items() if k != "input"} | {"input": {}}
            raw = json.dumps(block.get("input", {}), ensure_ascii=False)
            deltas = [
                delta(index, {"type": "input_json_delta", "partial_json": p})
                for p in ["", *_pieces(raw, json_chunk_chars)]
            ]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                delta(index, {"type": "thinking_delta", "thinking": p})
                for p in _pieces(block.get("thinking", ""), chunk_chars)
            ]
            deltas.append(delta(index, {"type": "signature_delta", "signature": block.get("signature", "")}))
        else:
            start, deltas = dict(block), []
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events.extend(deltas)
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))

    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": msg["stop_sequence"]},
                "usage": {"output_tokens": usage.get("output_tokens", 1)},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def encode_sse_event(event: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


def encode_sse(events: Sequence[tuple[str, Mapping[str, Any]]]) -> bytes:
    """`event: X\\ndata: {json}\\n\\n` for each event, concatenated."""
    return b"".join(encode_sse_event(name, data) for name, data in events)


def parse_sse(data: bytes | str) -> list[tuple[str, Any]]:
    """Parse an SSE body into (event name, JSON data) pairs; a reference parser for tests.

    Accepts LF, CRLF or CR line ends, ignores comments and fields other than `event`/`data`,
    joins multi-line `data`, and skips events without data. The name defaults to "message".
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[tuple[str, Any]] = []
    name, lines = "", list[str]()
    for line in text.split("\n") + [""]:
        if line == "":
            if lines:
                out.append((name or "message", json.loads("\n".join(lines))))
            name, lines = "", []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "event":
            name = value
        elif key == "data":
            lines.append(value)
    return out


def assemble_message(events: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Rebuild the message a stream describes (what a buffered response would have carried).

    Raises ValueError on an `error` event or a stream that does not start with message_start.
    """
    message: dict[str, Any] | None = None
    json_parts: dict[int, list[str]] = collections.defaultdict(list)
    for name, data in events:
        if name == "error":
            raise ValueError(f"error event in stream: {data}")
        if name == "ping":
            continue
        if name == "message_start":
            message = json.loads(json.dumps(data["message"]))  # deep copy
            continue
        if message is None:
            raise ValueError(f"{name} before message_start")
        if name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, d = message["content"][data["index"]], data["delta"]
            kind = d.get("type")
            if kind == "text_delta":
                block["text"] = block.get("text", "") + d["text"]
            elif kind == "input_json_delta":
                json_parts[data["index"]].append(d["partial_json"])
            elif kind == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + d["thinking"]
            elif kind == "signature_delta":
                block["signature"] = d["signature"]
            elif kind == "citations_delta":
                block.setdefault("citations", []).append(d["citation"])
        elif name == "content_block_stop":
            parts = json_parts.pop(data["index"], None)
            if parts is not None:
                raw = "".join(parts)
                message["content"][data["index"]]["input"] = json.loads(raw) if raw else {}
        elif name == "message_delta":
            message.update({k: v for k, v in data.get("delta", {}).items()})
            message["usage"] = dict(message.get("usage") or {}, **(data.get("usage") or {}))
    if message is None:
        raise ValueError("no message_start in stream")
    return message


# --------------------------------------------------------------------------------------------
# Scripting replies
# --------------------------------------------------------------------------------------------


class Gate:
    """A barrier a streamed reply waits at (see `Reply.pause_before_event`).

    `reached` is set when a stream arrives at the gate, i.e. once every earlier event has been
    written to the socket; `release()` lets it continue. A stream that waits longer than
    `timeout` seconds gives up and drops the connection, so a forgotten release cannot hang a
    test run.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def wait_reached(self, timeout: float = 10.0) -> bool:
        return self.reached.wait(timeout)

    def _wait(self, stopping: threading.Event) -> bool:
        """Server side: block until released (True) or timed out / server stopping (False)."""
        self.reached.set()
        deadline = time.monotonic() + self.timeout
        while not self._released.wait(0.05):
            if stopping.is_set() or time.monotonic() > deadline:
                return False
        return True


def _default_mid_stream_error() -> dict[str, Any]:
    return {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@dataclass
class Reply:
    """What the fake sends for one request. Build with `Reply.text`, `Reply.message`,
    `Reply.tool_use`, `Reply.from_message`, `Reply.error`, `Reply.raw` or `Reply.sse`; every
    option below can be passed as a keyword to those builders.

    A message reply (`msg`) is streamed as SSE when the request asked for `"stream": true` (override
    with `stream`), else sent as JSON; `model=None` in the message echoes the request's model.
    Stream options count events from 0, pings included (`sse_events` shows the sequence):

    - chunk_chars / json_chunk_chars: size of text/thinking deltas and of partial_json pieces.
    - pings: send the `ping` after message_start.
    - delay_before_headers: seconds to wait before the status line (a slow model).
    - delay_between_events: seconds between two SSE events.
    - pause_before_event: event index (or the name of the first such event) at which the stream
      waits for `gate` (created if not given) to be released.
    - error_mid_stream: after this many events, send `event: error` with `mid_stream_error`
      (overloaded_error by default), end the response and close the connection.
    - drop_after_event: after this many events, close the connection without ending the
      chunked body (a network failure).
    - gzip: gzip the body (JSON, or SSE with a flush per event) if the request's
      accept-encoding allows it.
    - raw_sse: bytes sent as the SSE body instead of a message's events; split into events at
      blank lines, or given as a list of chunks sent exactly as listed.
    - extra_headers: added to (or replacing) the response headers.
    """

    status: int = 200
    msg: dict[str, Any] | None = None  # a (partial) Messages API message, see complete_message
    body: Any = None  # non-message reply: bytes as is, anything else as JSON
    content_type: str = "application/json"
    stream: bool | None = None
    chunk_chars: int = 8
    json_chunk_chars: int = 12
    pings: bool = True
    delay_before_headers: float = 0.0
    delay_between_events: float = 0.0
    pause_before_event: int | str | None = None
    gate: Gate | None = None
    error_mid_stream: int | None = None
    mid_stream_error: dict[str, Any] = field(default_factory=_default_mid_stream_error)
    drop_after_event: int | None = None
    gzip: bool = False
    raw_sse: bytes | list[bytes] | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pause_before_event is not None and self.gate is None:
            self.gate = Gate()

    # -- builders ------------------------------------------------------------------------------

    @classmethod
    def from_message(cls, message: Mapping[str, Any], **options: Any) -> Reply:
        """Send this (partial) message object; missing fields are filled by complete_message."""
        return cls(msg=dict(message), **options)

    @classmethod
    def message(
        cls,
        content_blocks: Sequence[Mapping[str, Any]],
        *,
        stop_reason: str | None = None,
        usage: Mapping[str, int] | None = None,
        model: str | None = None,
        **options: Any,
    ) -> Reply:
        """A message with these content blocks; stop_reason defaults to `tool_use` when a
        tool_use block is present, else `end_turn`; usage entries override the estimates."""
        msg: dict[str, Any] = {"content": [dict(b) for b in content_blocks], "model": model, "stop_reason": stop_reason}
        if usage:
            msg["usage"] = dict(usage)
        return cls(msg=msg, **options)

    @classmethod
    def text(
        cls,
        text: str,
        *,
        model: str | None = None,
        stop_reason: str = "end_turn",
        usage: Mapping[str, int] | None = None,
        **options: Any,
    ) -> Reply:
        return cls.message(
            [{"type": "text", "text": text}], model=model, stop_reason=stop_reason, usage=usage, **options
        )

    @classmethod
    def tool_use(
        cls,
        name: str,
        input: Mapping[str, Any],
        *,
        id: str | None = None,
        text: str | None = None,
        **options: Any,
    ) -> Reply:
        """A tool call (optionally preceded by a text block), stop_reason `tool_use`."""
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks.append({"type": "tool_use", "id": id or f"toolu_fake_{_hex()}", "name": name, "input": dict(input)})
        return cls.message(blocks, **options)

    @classmethod
    def error(cls, status: int, type: str | None = None, message: str | None = None, **options: Any) -> Reply:
        """An API error (always JSON, even for a streaming request, as the real API does before
        a stream starts). `type` defaults to the status's usual error type."""
        return cls(status=status, body=error_body(status, type, message), **options)

    @classmethod
    def raw(cls, body: Any, status: int = 200, content_type: str = "application/json", **options: Any) -> Reply:
        """Any body: bytes are sent as is, anything else as JSON."""
        return cls(status=status, body=body, content_type=content_type, **options)

    @classmethod
    def sse(cls, raw_sse: bytes | list[bytes], **options: Any) -> Reply:
        """An SSE response with exactly these bytes (see `raw_sse`)."""
        return cls(raw_sse=raw_sse, **options)


Responder = Callable[[ReceivedRequest], "Reply | None"]


# --------------------------------------------------------------------------------------------
# Claude Code
# --------------------------------------------------------------------------------------------


def example_for_schema(schema: Any, text: str = DEFAULT_TEXT) -> Any:
    """A small value that satisfies a (simple) JSON schema: required properties of objects,
    first enum/const value, `text` for strings, zero, false, empty arrays."""
    if not isinstance(schema, dict):
        return text
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0], text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        required = schema.get("required", list(props))
        return {name: example_for_schema(props.get(name, {}), text) for name in required}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return text


def text_reply_for(request: ReceivedRequest, text: str) -> Reply:
    """A text reply, or, when the request asks for structured output (`output_config.format`
    of type json_schema, as Claude Code's title generation does), JSON text matching it."""
    body = request.json_or_none()
    fmt = (body.get("output_config") or {}).get("format") if isinstance(body, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return Reply.text(json.dumps(example_for_schema(fmt.get("schema"), text)))
    return Reply.text(text)


def is_claude_code_main_request(request: ReceivedRequest) -> bool:
    """True for a Claude Code agent turn (its tool list offers Bash), False for side requests
    (title/topic generation, quota checks, summaries), which carry no tools."""
    body = request.json_or_none()
    if not request.is_messages or not isinstance(body, dict):
        return False
    tools = body.get("tools") or []
    return any(isinstance(t, dict) and t.get("name") == "Bash" for t in tools)


def _tool_result_text(block: Mapping[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def claude_code_tool_responder(
    command: str,
    *,
    description: str = "Run the check",
    side_text: str = "Running a check",
) -> Responder:
    """A responder that drives one real Claude Code agent turn through the Bash tool.

    - Agent turn whose last user message has no tool_result: a `Bash` tool_use with
      `{"command": command, "description": description}` (stop_reason tool_use).
    - Agent turn carrying the tool_result: "The command printed: <output>" (or "The command
      failed: <output>" when is_error is set), stop_reason end_turn.
    - Any other `/v1/messages` call (Claude Code's side requests have no tools): `side_text`,
      as JSON matching the schema when structured output is requested (the session title
      request asks for `{"title": string}`).
    Other paths fall through to the fake's defaults.
    """

    def respond(request: ReceivedRequest) -> Reply | None:
        if not request.is_messages:
            return None
        if not is_claude_code_main_request(request):
            return text_reply_for(request, side_text)
        results = request.tool_results()
        if not results:
            return Reply.tool_use("Bash", {"command": command, "description": description})
        result = results[-1]
        output = _tool_result_text(result).strip()
        verb = "failed" if result.get("is_error") else "printed"
        return Reply.text(f"The command {verb}: {output}")

    return respond


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _DropConnection(Exception):
    """Abandon the response: close the socket without finishing it."""


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def _split_sse(raw: bytes) -> list[bytes]:
    """Split an SSE body after each blank line (LF or CRLF line ends), keeping every byte."""
    chunks, start, i = [], 0, 0
    while i < len(raw):
        if raw.startswith(b"\n\n", i):
            end = i + 2
        elif raw.startswith(b"\r\n\r\n", i):
            end = i + 4
        else:
            i += 1
            continue
        chunks.append(raw[start:end])
        start = i = end
    if start < len(raw):
        chunks.append(raw[start:])
    return chunks


def _sse_chunk_name(chunk: bytes) -> str | None:
    for line in chunk.splitlines():
        if line.startswith(b"event:"):
            return line[6:].strip().decode("utf-8", "replace")
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has a length or is chunked
    # Headers and body go out in separate small writes; with Nagle on, a delayed ACK on the
    # peer stalls the second write ~40 ms (measured on loopback).
    disable_nagle_algorithm = True
    server_version = "fake-anthropic/1"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.upstream.verbose:
            sys.stderr.write(f"fake-upstream: {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- request -------------------------------------------------------------------------------

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(65537)
            if not line.endswith(b"\n"):
                raise _BadRequest(400, "truncated chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, f"bad chunk size {line!r}") from None
            if size == 0:
                break
            if len(body) + size > MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")
            data = self.rfile.read(size)
            if len(data) != size or self.rfile.read(2) != b"\r\n":
                raise _BadRequest(400, "truncated chunk")
            body += data
        while True:  # trailer section, ended by an empty line
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
        return bytes(body)

    def _read_body(self) -> tuple[bytes, bool]:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            return self._read_chunked(), True
        length = self.headers.get("Content-Length")
        if length is None:
            return b"", False
        try:
            n = int(length)
        except ValueError:
            raise _BadRequest(400, f"bad content-length {length!r}") from None
        if n < 0 or n > MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        data = self.rfile.read(n)
        if len(data) != n:
            raise _BadRequest(400, "truncated body")
        return data, False

    def _handle(self) -> None:
        up = self.server.upstream
        try:
            try:
                body, chunked = self._read_body()
            except _BadRequest as e:
                self.close_connection = True
                self._send_json(e.status, error_body(e.status, None, str(e)), Reply(), None)
                return
            items = tuple((k.lower(), v) for k, v in self.headers.items())
            headers: dict[str, str] = {}
            for k, v in items:
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            request = ReceivedRequest(
                method=self.command,
                path=self.path,
                headers=headers,
                header_items=items,
                body=body,
                http_version=self.request_version,
                chunked=chunked,
                tls=isinstance(self.connection, ssl.SSLSocket),
                received_at=time.monotonic(),
            )
            up.requests.append(request)
            self._send(up._choose_reply(request), request)
        except _DropConnection:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to answer

    # -- response ------------------------------------------------------------------------------

    def _start(self, status: int, reply: Reply, request_id: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers = {"request-id": request_id, "anthropic-organization-id": "fake-org", **headers, **reply.extra_headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()  # one write: status line and headers

    def _use_gzip(self, reply: Reply, request: ReceivedRequest | None) -> bool:
        return bool(reply.gzip and request and _accepts_gzip(request.headers.get("accept-encoding", "")))

    def _send_json(
        self, status: int, body: Any, reply: Reply, request: ReceivedRequest | None, request_id: str | None = None
    ) -> None:
        request_id = request_id or f"req_fake_{_hex()}"
        if isinstance(body, bytes):
            data = body
        else:
            if isinstance(body, dict) and body.get("type") == "error" and body.get("request_id") is None:
                body = dict(body, request_id=request_id)
            data = _dumps(body)
        headers = {"content-type": reply.content_type}
        if self._use_gzip(reply, request):
            data = gzip_module.compress(data)
            headers["content-encoding"] = "gzip"
            headers["vary"] = "accept-encoding"
        headers["content-length"] = str(len(data))
        self._start(status, reply, request_id, headers)
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send(self, reply: Reply, request: ReceivedRequest) -> None:
        stopping = self.server.upstream._stopping
        if reply.delay_before_headers:
            stopping.wait(reply.delay_before_headers)
        request_id = f"req_fake_{_hex()}"
        if reply.raw_sse is not None:
            raw = reply.raw_sse
            chunks = list(raw) if isinstance(raw, list) else _split_sse(raw)
            return self._send_sse(reply, request, request_id, chunks)
        if reply.msg is None:
            return self._send_json(
                reply.status, reply.body if reply.body is not None else {}, reply, request, request_id
            )
        message = complete_message(reply.msg, model=request.model, input_tokens=_estimate_tokens(len(request.body)))
        stream = reply.stream if reply.stream is not None else request.wants_stream
        if not stream:
            return self._send_json(reply.status, message, reply, request, request_id)
        events = sse_events(
            message, chunk_chars=reply.chunk_chars, json_chunk_chars=reply.json_chunk_chars, pings=reply.pings
        )
        self._send_sse(reply, request, request_id, [encode_sse_event(*e) for e in events])

    def _send_sse(self, reply: Reply, request: ReceivedRequest, request_id: str, chunks: list[bytes]) -> None:
        stopping = self.server.upstream._stopping
        compressor = zlib.compressobj(wbits=31) if self._use_gzip(reply, request) else None
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
        }
        if compressor:
            headers["content-encoding"] = "gzip"
            headers["vary"] = "accept-encoding"
        self._start(reply.status, reply, request_id, headers)

        def write(data: bytes, final: bool = False) -> None:
            if compressor:
                data = compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
            if data:  # an empty chunk would be read as the end of the body
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        pause = reply.pause_before_event
        if isinstance(pause, str):
            pause = next((i for i, c in enumerate(chunks) if _sse_chunk_name(c) == pause), None)

        for i in range(len(chunks) + 1):
            if i == reply.drop_after_event:
                raise _DropConnection()
            if i == reply.error_mid_stream:
                write(encode_sse_event("error", reply.mid_stream_error))
                write(b"", final=True)
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True
                return
            if i == len(chunks):
                break
            if i == pause and reply.gate is not None and not reply.gate._wait(stopping):
                raise _DropConnection()
            if i > 0 and reply.delay_between_events:
                stopping.wait(reply.delay_between_events)
            write(chunks[i])
        write(b"", final=True)
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], upstream: FakeUpstream, ssl_context: ssl.SSLContext | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.upstream = upstream
        self.ssl_context = ssl_context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take
        # seconds in a sandbox; the name is unused here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread, so a slow TLS handshake never blocks accept().
        sock: socket.socket = request
        if self.ssl_context is not None:
            try:
                sock.settimeout(10)
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                return
        with self._connections_lock:
            self._connections.add(sock)
        try:
            _Handler(sock, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._connections_lock:
                self._connections.discard(sock)
            if sock is not request:
                sock.close()

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeUpstream:
    """The fake API server. Use as a context manager, or call `start()` / `stop()`.

    tls=True serves HTTPS with a server certificate for `localhost` and 127.0.0.1 signed by a
    CA of its own (`ca_cert_path`), made in a temporary directory unless `cert_dir` (kept) or
    `tls_files` (reused, e.g. to share one CA between servers) is given.
    api_key: when set, requests whose `x-api-key` (or `Authorization: Bearer`) differs get a 401
    authentication_error, like the real API.
    """

    def __init__(
        self,
        tls: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cert_dir: str | Path | None = None,
        tls_files: TLSFiles | None = None,
        api_key: str | None = None,
        responder: Responder | None = None,
        verbose: bool = False,
    ) -> None:
        self.tls = tls
        self.host = host
        self.api_key = api_key
        self.responder: Responder | None = responder
        self.verbose = verbose
        self.requests = RequestLog()
        self.errors: list[BaseException] = []  # exceptions raised by `responder`
        self._requested_port = port
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._tls_files = tls_files
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._queue: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        if self._server is not None:
            raise RuntimeError("fake upstream already started")
        context = None
        if self.tls:
            if self._tls_files is None:
                directory = self._cert_dir
                if directory is None:
                    self._tmpdir = tempfile.TemporaryDirectory(prefix="fake-upstream-")
                    directory = Path(self._tmpdir.name)
                self._tls_files = write_tls_files(directory)
            context = server_ssl_context(self._tls_files)
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, drop open connections (paused streams give up), remove temp certs."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
            self._tls_files = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("fake upstream not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def ca_cert_path(self) -> str | None:
        """PEM of the CA that signed the server certificate (None without TLS)."""
        return str(self._tls_files.ca_cert) if self.tls and self._tls_files else None

    @property
    def tls_files(self) -> TLSFiles | None:
        return self._tls_files

    # -- scripting -----------------------------------------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies for the next `POST /v1/messages` requests, first in first out."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending_replies(self) -> int:
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget requests, queued replies, the responder and recorded errors."""
        with self._lock:
            self._queue.clear()
        self.requests.clear()
        self.responder = None
        self.errors.clear()

    def _authorised(self, request: ReceivedRequest) -> bool:
        if self.api_key is None:
            return True
        bearer = request.headers.get("authorization", "")
        return request.header_values("x-api-key") == [self.api_key] or bearer == f"Bearer {self.api_key}"

    def _choose_reply(self, request: ReceivedRequest) -> Reply:
        if not self._authorised(request):
            return Reply.error(401, "authentication_error", "invalid x-api-key")
        responder = self.responder
        if responder is not None:
            try:
                reply = responder(request)
            except Exception as e:  # a test bug: make it visible, to the client and the test
                self.errors.append(e)
                traceback.print_exc()
                return Reply.error(
                    500, "api_error", f"fake upstream responder raised {e!r}", extra_headers={"x-should-retry": "false"}
                )
            if reply is not None:
                return reply
        return self._default_reply(request)

    def _default_reply(self, request: ReceivedRequest) -> Reply:
        route, method = request.route, request.method
        if request.is_messages:
            with self._lock:
                if self._queue:
                    return self._queue.popleft()
            return text_reply_for(request, DEFAULT_TEXT)
        if method == "POST" and route == "/v1/messages/count_tokens":
            return Reply.raw({"input_tokens": _estimate_tokens(len(request.body))})
        if method == "GET" and route == "/v1/models":
            return Reply.raw(
                {"data": MODELS, "has_more": False, "first_id": MODELS[0]["id"], "last_id": MODELS[-1]["id"]}
            )
        if method == "GET" and route.startswith("/v1/models/"):
            model_id = route.removeprefix("/v1/models/")
            for model in MODELS:
                if model["id"] == model_id:
                    return Reply.raw(model)
            return Reply.error(404, "not_found_error", f"model: {model_id}")
        if route.startswith("/api/claude_code/"):
            return Reply.raw({})
        return Reply.error(404, "not_found_error", f"Not found: {method} {route}")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake Anthropic API upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a CA of its own")
    parser.add_argument("--cert-dir", help="write (and keep) the TLS files here")
    parser.add_argument(
        "--tool-command",
        help="drive Claude Code: answer agent turns with a Bash tool_use running this command, then quote its output",
    )
    parser.add_argument("--api-key", help="reject requests that do not carry this key (401)")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    up = FakeUpstream(
        tls=args.tls, host=args.host, port=args.port, cert_dir=args.cert_dir, api_key=args.api_key, verbose=args.verbose
    )
    if args.tool_command:
        up.responder = claude_code_tool_responder(args.tool_command)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with up:
        print(up.base_url, flush=True)
        if up.ca_cert_path:
            print(up.ca_cert_path, flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
