"""The per-flow streaming pipeline that masks a Messages API SSE stream on its way to the client.

mitmproxy accepts one stream modifier per flow (`flow.response.stream`), so `SsePipeline`
is the single place where everything that must see a streamed response happens, in order:
parse (chunks split anywhere, even inside a UTF-8 character), mask text deltas (held only
where a secret could still be under way), hold each tool block until it is complete and mask
it, let a judge replace a tool_use block after masking (the hook for command rules), fix
`stop_reason` when no tool_use is left, scan every other event with the masker's generic walk (deny by default),
end a malformed stream, and re-assemble what the client received (for the recorder). Pure:
no mitmproxy import.

Contract with mitmproxy 12 (``proxy/layers/http/__init__.py``): the modifier is called with
each chunk from upstream and returns bytes or a list of bytes to send; at the end it is
called once with ``b""``. An empty bytes object sent mid-stream is written as the final
empty chunk of a chunked body and ends the response early, so while holding data the
pipeline returns ``[]``, never ``b""``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gatehouse.exchange import Finding
from gatehouse.masking.byte_identical import TOOL_BLOCK_TYPES
from gatehouse.masking.masker import Masker
from gatehouse.masking.text_stream import TextStream
from gatehouse.wire.assembler import MessageAssembler
from gatehouse.wire.sse import RawEvent, SseParser, compact_json, encode_event
from gatehouse.wire.toolcalls import Judge

log = logging.getLogger(__name__)

# Claude Code abandons a stream after ~180 s without a byte; Anthropic itself pings more
# often than this.
DEFAULT_PING_INTERVAL = 15.0


# Deltas whose payload passes byte-identical, and the only block type each may extend.
DELTA_BLOCK_TYPES = {"thinking_delta": "thinking", "signature_delta": "thinking", "compaction_delta": "compaction"}

# (index, masked tool_use block) -> the block to send instead, or None to send it as it is.
JudgeToolUse = Judge

MALFORMED_MESSAGE = (
    "The gateway ended a malformed stream (events out of order for the Messages API); "
    "the rest of the response was dropped."
)


class MalformedStream(Exception):
    """The upstream's events break the Messages API's order: the stream is ended."""


@dataclass
class _HeldTool:
    start: dict[str, Any]  # the content_block_start event's data
    parts: list[str]


class SsePipeline:
    """The stream modifier of one flow: masks a Messages API SSE stream on the fly.

    Deny by default: every event's JSON data goes through the masker's generic walk
    (`Masker.mask_document`: every string value and key, except its byte-identical list),
    with three exceptions:

    - text deltas of a text block go through a `TextStream` per block (released as soon as
      no secret can still begin in it, private-key hold, bounded hold that masks and swallows);
    - thinking and signature deltas pass byte-identical (the API checks them when they come
      back);
    - a tool block (tool_use, server/MCP tool use) is held from its start to its stop (its
      input may arrive in the start event, in deltas, or both), masked whole, and sent as
      start + one delta + stop. An input that is not valid JSON (cut by max_tokens) is masked
      as JSON text: its string escapes are decoded before scanning (`Masker.mask_json_text`).
      A ``tool_use`` block (not server or MCP tool use, which already ran on Anthropic's side)
      is given, masked, to `judge_tool_use` as ``(index, block)``, exactly once; a block it
      returns is sent instead, at the same index (a text block's text is masked as text).
      When it replaced tool_use blocks and none is left, message_delta's ``stop_reason``
      ``tool_use`` becomes ``end_turn``.

    `judge_tool_use` is a public attribute: the commands adapter sets it after the masking
    adapter created the pipeline, before the first chunk. It runs inside the stream modifier,
    so it must not block; an exception in it fails the stream closed, like any other.

    So message_start (the whole message), message_delta, error events (which first flush what
    is held, masked), citations, server-tool and MCP results, and unknown events are scanned.
    Events are sent under the name of their `type`.

    A malformed sequence (an event before message_start or after message_stop, a second
    message_start, a block event for an index that never started or already stopped, a
    second start for a live index) ends the stream: what is held is flushed (masked), an
    `error` event is sent, the rest is dropped, and the reason is in `errors`.

    While anything is held and nothing was sent for `ping_interval` seconds, a `ping` event
    is sent so that the client's idle watchdog does not fire. If the pipeline itself fails, it
    fails closed: it sends an `error` event and drops the rest of the stream rather than
    forward text it could not mask.
    """

    def __init__(
        self,
        masker: Masker,
        *,
        hold_back_chars: int | None = None,
        judge_tool_use: JudgeToolUse | None = None,
        clock: Callable[[], float] = time.monotonic,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        max_hold_chars: int | None = None,
    ) -> None:
        self.masker = masker
        self.hold_back_chars = hold_back_chars or masker.policy.hold_back_chars
        self.max_hold_chars = max_hold_chars
        self.judge_tool_use = judge_tool_use
        self.clock = clock
        self.ping_interval = ping_interval
        self.findings: list[Finding] = []
        self.errors: list[str] = []
        self.pings_sent = 0
        # tool_use blocks sent as they came (judged or not) and replaced by the judge
        self.tool_uses_kept = 0
        self.tool_uses_replaced = 0
        self.ended = False
        self._parser = SseParser()
        self._asm = MessageAssembler()
        self._texts: dict[int, TextStream] = {}
        self._tools: dict[int, _HeldTool] = {}
        self._live: dict[int, str] = {}  # index -> block type, between its start and its stop
        self._closed: set[int] = set()  # indexes whose block has stopped
        self._started = False  # message_start seen
        self._stopped = False  # message_stop seen
        self._failed = False
        self._last_out = clock()

    # -- mitmproxy's interface --------------------------------------------------------------

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        if not chunk:
            return self._end()
        if self._failed or self.ended:
            return []
        out = bytearray()
        try:
            for ev in self._parser.feed(chunk):
                self._on_event(ev, out)
        except MalformedStream as e:
            return self._malformed(str(e), out)
        except Exception as e:  # fail closed: never forward what could not be masked
            return self._fail(e)
        now = self.clock()
        if out:
            self._last_out = now
            return bytes(out)
        if self.holding and now - self._last_out >= self.ping_interval:
            self._last_out = now
            self.pings_sent += 1
            return self._emit("ping", {"type": "ping"})
        return []

    @property
    def holding(self) -> bool:
        """Whether data received is not yet sent (held text or tool blocks, a partial event)."""
        return bool(self._tools) or any(t.pending for t in self._texts.values()) or self._parser.pending_bytes > 0

    @property
    def assembled(self) -> dict[str, Any]:
        """The message as the client received it (after masking): what the recorder stores."""
        return self._asm.result()

    # -- internals --------------------------------------------------------------------------

    def _end(self) -> bytes:
        if self.ended:
            return b""
        self.ended = True
        if self._failed:
            return b""
        out = bytearray()
        try:
            for ev in self._parser.finish():
                self._on_event(ev, out)
            self._flush_all(out)
        except MalformedStream as e:
            res = self._malformed(str(e), out)
            return res if isinstance(res, bytes) else b"".join(res)
        except Exception as e:
            res = self._fail(e)
            return res if isinstance(res, bytes) else b"".join(res)
        return bytes(out)

    def _fail(self, exc: Exception) -> bytes:
        log.error("gatehouse: SSE masking failed (%s); the rest of the stream is dropped", type(exc).__name__)
        self.errors.append(f"masking pipeline failed: {type(exc).__name__}")
        self._failed = True
        self._texts.clear()
        self._tools.clear()
        return self._emit(
            "error",
            {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "The gateway could not inspect this response; it was cut short.",
                },
            },
        )

    def _malformed(self, reason: str, out: bytearray) -> bytes:
        """End a malformed stream: what was sent so far in this call, what is held (masked),
        then an error event; the rest is dropped."""
        log.warning("gatehouse: malformed event stream (%s); ended with an error event", reason)
        self.errors.append(f"malformed stream: {reason}")
        try:
            self._flush_all(out)
        except Exception as e:
            return self._fail(e)
        self._failed = True
        self._emit("error", {"type": "error", "error": {"type": "api_error", "message": MALFORMED_MESSAGE}}, out)
        return bytes(out)

    def _emit(self, name: str, data: dict[str, Any], out: bytearray | None = None) -> bytes:
        # The name is the (masked) data's type: the type as it arrived may hold a secret.
        t = data.get("type")
        if isinstance(t, str) and t:
            name = t
        self._asm.feed(name, data)
        b = encode_event(name, data)
        if out is not None:
            out += b
        return b

    def _walk(self, data: Any, where: str = "", *, block: bool = False) -> None:
        """The generic walk over an event's data, in place; `block`: `data` is a content block
        (where the byte-identical fields of its type apply)."""
        self.findings.extend(self.masker.mask_document(data, where, block=block))

    def _walk_shell(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        """A copy of `data` with its fields other than `key` walked (`key` is set to None, to
        be filled by the caller: it keeps its place)."""
        shell = {**data, key: None}
        self._walk(shell)
        return shell

    def _text_stream(self, idx: int) -> TextStream:
        kw = {} if self.max_hold_chars is None else {"max_hold_chars": self.max_hold_chars}
        return self.masker.text_stream(f"content[{idx}].text", self.hold_back_chars, **kw)

    def _release_text(self, idx: int, text: str, out: bytearray) -> None:
        if text:
            self._emit(
                "content_block_delta",
                {"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": text}},
                out,
            )

    def _flush_text(self, idx: int, out: bytearray) -> None:
        ts = self._texts.pop(idx, None)
        if ts is not None:
            self._release_text(idx, ts.flush(), out)
            self.findings.extend(ts.findings)

    def _flush_all(self, out: bytearray) -> None:
        for idx in sorted(self._texts):
            self._flush_text(idx, out)
        for idx in sorted(self._tools):
            self._emit_tool(idx, None, out)

    def _close_all(self, out: bytearray) -> None:
        """message_delta / message_stop: blocks still open are flushed and count as stopped."""
        self._flush_all(out)
        self._closed.update(self._live)
        self._live.clear()

    def _event_name(self, ev: RawEvent) -> str:
        """The `event:` name of an event whose data has no type, masked like any text."""
        name, found = self.masker.mask_text(ev.name or "message", "event")
        self.findings.extend(found)
        return name

    def _on_event(self, ev: RawEvent, out: bytearray) -> None:
        try:
            data = json.loads(ev.data)
        except (ValueError, RecursionError):
            # Not JSON: forwarded masked as (JSON) text, under its own name.
            if self._stopped:
                raise MalformedStream("an event after message_stop") from None
            masked, found = self.masker.mask_json_text(ev.data, "event")
            self.findings.extend(found)
            out += f"event: {self._event_name(ev)}\n".encode()
            out += "".join(f"data: {line}\n" for line in masked.split("\n")).encode("utf-8") + b"\n"
            return
        if not isinstance(data, dict):
            # JSON, not the API's shape: walked like any body, forwarded under its own name.
            if self._stopped:
                raise MalformedStream("an event after message_stop")
            data, found = self.masker.mask_json_value(data, "event")
            self.findings.extend(found)
            out += f"event: {self._event_name(ev)}\ndata: {compact_json(data)}\n\n".encode()
            return
        t = data.get("type")
        if not isinstance(t, str):
            t = self._event_name(ev)
        name = t
        if self._stopped:
            raise MalformedStream(f"{t} after message_stop")
        if t in ("content_block_start", "content_block_delta", "content_block_stop"):
            if not self._started:
                raise MalformedStream(f"{t} before message_start")
            if t == "content_block_start":
                self._on_block_start(name, data, out)
            elif t == "content_block_delta":
                self._on_block_delta(name, data, out)
            else:
                self._on_block_stop(name, data, out)
        elif t == "message_start":
            if self._started:
                raise MalformedStream("a second message_start")
            self._started = True
            msg = data.get("message")
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") in TOOL_BLOCK_TYPES for b in content
            ):
                # The SDKs take message_start's content as the message's first blocks: a tool
                # block there would reach the client unjudged. The API never sends one.
                raise MalformedStream("a tool block inside message_start")
            if isinstance(msg, (dict, list)):
                self._walk(msg)  # paths as in a buffered response: content[0].text...
                shell = self._walk_shell(data, "message")
                shell["message"] = msg
                data = shell
            else:
                self._walk(data)
            self._emit(name, data, out)
        elif t in ("message_delta", "message_stop"):
            if not self._started:
                raise MalformedStream(f"{t} before message_start")
            self._close_all(out)
            self._walk(data)
            if t == "message_delta":
                self._fix_stop_reason(data)
            if t == "message_stop":
                self._stopped = True
            self._emit(name, data, out)
        elif t == "error":
            self._close_all(out)  # the API sends nothing after an error
            self._walk(data)
            self._emit(name, data, out)
        else:  # ping, and event types this version does not know: scanned like any body
            self._walk(data)
            self._emit(name, data, out)

    def _fix_stop_reason(self, data: dict[str, Any]) -> None:
        """``tool_use`` -> ``end_turn`` when the judge replaced tool_use blocks and none is
        left: the client would otherwise wait for a call that is not there."""
        delta = data.get("delta")
        if (
            isinstance(delta, dict)
            and delta.get("stop_reason") == "tool_use"
            and self.tool_uses_replaced
            and not self.tool_uses_kept
        ):
            data["delta"] = {**delta, "stop_reason": "end_turn"}

    def _on_block_start(self, name: str, data: dict[str, Any], out: bytearray) -> None:
        idx = data.get("index")
        block = data.get("content_block")
        if type(idx) is not int or idx < 0 or not isinstance(block, dict):
            raise MalformedStream("a content_block_start without an index or a block")
        if idx in self._live:
            raise MalformedStream(f"a second content_block_start for live index {idx}")
        if idx in self._closed:
            raise MalformedStream(f"a content_block_start for index {idx}, which already stopped")
        bt = block.get("type")
        self._live[idx] = bt if isinstance(bt, str) else ""
        if bt in TOOL_BLOCK_TYPES:
            self._tools[idx] = _HeldTool(start=data, parts=[])
            return
        shell = self._walk_shell(data, "content_block")
        if bt == "text":
            initial = block.get("text")
            block = {**block, "text": ""}  # the initial text goes through the block's stream
            self._walk(block, f"content[{idx}]", block=True)
            shell["content_block"] = block
            ts = self._texts[idx] = self._text_stream(idx)
            self._emit(name, shell, out)
            self._release_text(idx, ts.push(initial if isinstance(initial, str) else compact_json(initial)), out)
            return
        # thinking, redacted_thinking, server-tool and MCP results, unknown blocks: the
        # generic walk (thinking, signatures and encrypted content stay byte-identical)
        self._walk(block, f"content[{idx}]", block=True)
        shell["content_block"] = block
        self._emit(name, shell, out)

    def _live_index(self, data: dict[str, Any], what: str) -> int:
        """The index of the block a delta or stop event is for; it must be live."""
        idx = data.get("index")
        if type(idx) is not int or idx not in self._live:
            state = "already stopped" if idx in self._closed else "never started"
            raise MalformedStream(f"a {what} for index {idx!r}, which {state}")
        return idx

    def _on_block_delta(self, name: str, data: dict[str, Any], out: bytearray) -> None:
        idx = self._live_index(data, "content_block_delta")
        delta = data.get("delta")
        dt = delta.get("type") if isinstance(delta, dict) else None
        if idx in self._tools:
            if dt == "input_json_delta":
                pj = delta.get("partial_json", "")
                self._tools[idx].parts.append(pj if isinstance(pj, str) else compact_json(pj))
            # nothing else belongs in a tool block; it is dropped with the hold
            return
        if dt == "text_delta" and idx in self._texts:
            text = delta.get("text", "")
            self._release_text(idx, self._texts[idx].push(text if isinstance(text, str) else compact_json(text)), out)
            # (other fields of a text delta, which the API does not send, are dropped)
            return
        # thinking and signature deltas (their text is on the byte-identical list: the API
        # checks them when they come back), citations, deltas of other blocks (compaction...),
        # unknown deltas: the generic walk. A byte-identical delta belongs to its own block
        # type only: a thinking_delta for a text block would carry text past the masker.
        owner = DELTA_BLOCK_TYPES.get(dt) if isinstance(dt, str) else None
        if owner is not None and self._live.get(idx) != owner:
            raise MalformedStream(f"a {dt} for index {idx}, a {self._live.get(idx) or 'unknown'} block")
        self._walk(data, f"content[{idx}]")
        self._emit(name, data, out)

    def _on_block_stop(self, name: str, data: dict[str, Any], out: bytearray) -> None:
        idx = self._live_index(data, "content_block_stop")
        del self._live[idx]
        self._closed.add(idx)
        if idx in self._tools:
            self._walk(data)
            self._emit_tool(idx, data, out)
            return
        if idx in self._texts:
            self._flush_text(idx, out)
        self._walk(data)
        self._emit(name, data, out)

    def _emit_tool(self, idx: int, stop: dict[str, Any] | None, out: bytearray) -> None:
        """Mask, judge and send a held tool block. `stop` is None when the stream ended (or
        failed) before the block's stop event: what arrived is still masked, judged and sent.

        The input is masked first, then a ``tool_use`` block is judged as the client would get
        it (masked), exactly once; server and MCP tool use ran on Anthropic's side and are not
        judged. An input that is not valid JSON (cut by max_tokens) is masked as JSON text, its
        string escapes decoded (`Masker.mask_json_text`), and judged as that text."""
        held = self._tools.pop(idx)
        start_block = dict(held.start.get("content_block") or {})
        shell = self._walk_shell(held.start, "content_block")
        raw = "".join(held.parts)
        where = f"content[{idx}].input"
        value: Any
        if raw.strip():
            try:
                value = json.loads(raw)
                valid = True
            except (ValueError, RecursionError):
                valid = False
        else:
            value, valid = start_block.get("input", {}), True
        if valid:
            value, found = self.masker.mask_value(value, where)
        else:
            value, found = self.masker.mask_json_text(raw, where)
        self.findings.extend(found)
        block = {**start_block, "input": {}}
        self._walk(block, f"content[{idx}]", block=True)
        block["input"] = value
        replacement = None
        if block.get("type") == "tool_use" and self.judge_tool_use is not None:
            replacement = self.judge_tool_use(idx, json.loads(compact_json(block)))
        if replacement is None:
            self._send_masked_tool(idx, shell, block, compact_json(value) if valid else value, out)
            sent_type = block.get("type")
        else:
            self._send_block(idx, shell, replacement, out)
            sent_type = replacement.get("type")
        if start_block.get("type") == "tool_use":
            if sent_type == "tool_use":
                self.tool_uses_kept += 1
            else:
                self.tool_uses_replaced += 1
        if stop is not None:
            self._emit("content_block_stop", stop, out)
        else:
            self._emit("content_block_stop", {"type": "content_block_stop", "index": idx}, out)

    def _send_masked_tool(
        self, idx: int, shell: dict[str, Any], block: dict[str, Any], partial: str, out: bytearray
    ) -> None:
        """Send a tool block masked already as start (input {}) + one input_json_delta carrying
        `partial`, the input's (masked) JSON text."""
        start = {**shell, "type": "content_block_start", "index": idx, "content_block": {**block, "input": {}}}
        self._emit("content_block_start", start, out)
        self._emit(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": idx,
                "delta": {"type": "input_json_delta", "partial_json": partial},
            },
            out,
        )

    def _send_block(self, idx: int, shell: dict[str, Any], block: dict[str, Any], out: bytearray) -> None:
        """Send a complete block, masked, as start + one delta (the stop is sent by the caller).
        `shell`: the start event, walked, whose content_block is to be filled."""
        block = dict(block)
        bt = block.get("type")
        start = {**shell, "type": "content_block_start", "index": idx}
        if bt in TOOL_BLOCK_TYPES:
            value = block.get("input", {})
            if isinstance(value, str):
                value, found = self.masker.mask_json_text(value, f"content[{idx}].input")
                self.findings.extend(found)
                partial = value
            else:
                value, found = self.masker.mask_value(value, f"content[{idx}].input")
                self.findings.extend(found)
                partial = compact_json(value)
            block["input"] = {}
            self._walk(block, f"content[{idx}]", block=True)
            self._emit("content_block_start", {**start, "content_block": block}, out)
            self._emit(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": idx,
                    "delta": {"type": "input_json_delta", "partial_json": partial},
                },
                out,
            )
        elif bt == "text":
            text, found = self.masker.mask_text(str(block.get("text", "")), f"content[{idx}].text")
            self.findings.extend(found)
            block["text"] = ""
            self._walk(block, f"content[{idx}]", block=True)
            self._emit("content_block_start", {**start, "content_block": block}, out)
            self._release_text(idx, text, out)
        else:
            self._walk(block, f"content[{idx}]", block=True)
            self._emit("content_block_start", {**start, "content_block": block}, out)


def mask_sse_body(masker: Masker, body: bytes, **kw: Any) -> tuple[bytes, SsePipeline]:
    """Mask a whole (buffered) SSE body with the same pipeline as a stream: one code path,
    so a buffered response is masked exactly as the streamed one would be."""
    pipe = SsePipeline(masker, **kw)
    first = pipe(body) if body else []
    out = first if isinstance(first, bytes) else b"".join(first)
    return out + pipe(b""), pipe
