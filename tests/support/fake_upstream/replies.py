"""Scripting what the fake answers: `Reply` (a message, an error or raw bytes, with the stream's
timing and failures) and its builders, `Gate` (a barrier a stream waits at), and the `Responder`
type of a test's own reply chooser."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from support.fake_upstream.messages import error_body, random_hex
from support.fake_upstream.received import ReceivedRequest


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

    def hold(self, stopping: threading.Event) -> bool:
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
        blocks.append(
            {"type": "tool_use", "id": id or f"toolu_fake_{random_hex()}", "name": name, "input": dict(input)}
        )
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
