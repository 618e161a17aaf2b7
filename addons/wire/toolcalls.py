"""The tool calls of a buffered Messages API response, and their replacement: the `tool_use`
blocks of a JSON message or of a whole SSE body, and the same response with chosen blocks
replaced (normally by a text block saying why the call was not run), still valid for the SDKs
and Claude Code: same indices, event order kept, `stop_reason` fixed. Pure: no mitmproxy import.

Only blocks of type ``tool_use`` are the client's to run; ``server_tool_use`` and
``mcp_tool_use`` already ran on Anthropic's side and are left alone.

`stop_reason`: ``tool_use`` becomes ``end_turn`` when no ``tool_use`` block is left (the client
would otherwise wait for a call that is not there); any other stop reason is kept.

A tool_use input that is not valid JSON (cut short by ``max_tokens``) is given to the judge as
its JSON text (a string), so that it is judged too: the SDKs parse such input partially and a
client could still act on it. The streaming pipeline (`gatehouse.wire.pipeline`) judges in the
same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gatehouse.wire.sse import SseParser, compact_json, encode_event

# (index, tool_use block) -> the block to send instead, or None to keep it.
Judge = Callable[[int, dict[str, Any]], "dict[str, Any] | None"]

TOOL_USE = "tool_use"
_TOOL_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
_BLOCK_EVENTS = frozenset({"content_block_start", "content_block_delta", "content_block_stop"})
_EOL = re.compile(rb"\r\n|\r|\n")


def _copy(value: Any) -> Any:
    return json.loads(compact_json(value))


def _fixed_stop_reason(stop_reason: Any, tool_uses_left: int) -> Any:
    return "end_turn" if stop_reason == TOOL_USE and tool_uses_left == 0 else stop_reason


# -- buffered JSON --------------------------------------------------------------------------


def _content(message: dict[str, Any]) -> list[Any]:
    content = message.get("content")
    if not isinstance(content, list):
        raise ValueError("the message has no content list")
    return content


def tool_use_blocks(message: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The ``tool_use`` blocks of a message, as (index in ``content``, a copy of the block).
    Raises ValueError when the message has no content list."""
    return [(i, _copy(b)) for i, b in enumerate(_content(message)) if isinstance(b, dict) and b.get("type") == TOOL_USE]


def replace_in_message(message: dict[str, Any], replacements: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """A new message with the block at each index of `replacements` replaced, and
    ``stop_reason`` ``tool_use`` turned into ``end_turn`` when no tool_use block is left.
    Raises ValueError for an index that does not hold a tool_use block."""
    out = _copy(message)
    content = _content(out)
    for idx, block in replacements.items():
        if not (type(idx) is int and 0 <= idx < len(content)) or not (
            isinstance(content[idx], dict) and content[idx].get("type") == TOOL_USE
        ):
            raise ValueError(f"no tool_use block at index {idx!r} to replace")
        content[idx] = _copy(block)
    if replacements:
        left = sum(1 for b in content if isinstance(b, dict) and b.get("type") == TOOL_USE)
        if "stop_reason" in out:
            out["stop_reason"] = _fixed_stop_reason(out["stop_reason"], left)
    return out


# -- buffered SSE ---------------------------------------------------------------------------


@dataclass
class _Event:
    raw: bytes  # the event's bytes as they came, its blank line included
    type: str | None  # None: no data (a comment, a blank line): passed through
    data: dict[str, Any] | None


@dataclass
class _Block:
    start: dict[str, Any]  # the content_block_start event's content_block
    parts: list[str]
    stopped: bool = False


def _events(body: bytes) -> list[_Event]:
    """The body cut into its events, each with its exact bytes (so that what is not rewritten
    goes out byte-identical), parsed with `SseParser` so that the cut agrees with the parse."""
    spans: list[tuple[int, int]] = []
    start = line_start = 0
    for m in _EOL.finditer(body):
        if m.start() == line_start:  # an empty line ends an event
            spans.append((start, m.end()))
            start = m.end()
        line_start = m.end()
    if start < len(body):
        spans.append((start, len(body)))
    out = []
    for n, (a, b) in enumerate(spans):
        parser = SseParser()
        raw = body[a:b]
        parsed = parser.feed(raw) + parser.finish()
        if not parsed:
            out.append(_Event(raw, None, None))
            continue
        ev = parsed[0]
        try:
            data = json.loads(ev.data)
        except (ValueError, RecursionError):
            raise ValueError(f"event {n + 1} ({ev.name or 'unnamed'}): data is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError(f"event {n + 1} ({ev.name or 'unnamed'}): data is not a JSON object")
        t = data.get("type")
        out.append(_Event(raw, t if isinstance(t, str) else ev.name or "message", data))
    return out


def _blocks(events: list[_Event]) -> dict[int, _Block]:
    """The tool blocks of a stream by index, checking the order the rewrite relies on:
    every block event has an integer index, a delta or stop belongs to a started, unstopped
    block, an index starts once. Raises ValueError otherwise."""
    started: set[int] = set()
    stopped: set[int] = set()
    tools: dict[int, _Block] = {}
    seen_start = False
    for ev in events:
        if ev.type is None or ev.data is None:
            continue
        if ev.type == "message_start":
            if seen_start:
                raise ValueError("a second message_start")
            seen_start = True
            msg = ev.data.get("message")
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") in _TOOL_TYPES for b in content):
                # The SDKs take message_start's content as the message's first blocks.
                raise ValueError("a tool block inside message_start")
            continue
        if ev.type not in _BLOCK_EVENTS:
            continue
        if not seen_start:
            raise ValueError(f"{ev.type} before message_start")
        idx = ev.data.get("index")
        if type(idx) is not int or idx < 0:
            raise ValueError(f"a {ev.type} without an index")
        if ev.type == "content_block_start":
            if idx in started:
                raise ValueError(f"a second content_block_start for index {idx}")
            block = ev.data.get("content_block")
            if not isinstance(block, dict):
                raise ValueError(f"a content_block_start without a block (index {idx})")
            started.add(idx)
            if block.get("type") == TOOL_USE:
                tools[idx] = _Block(block, [])
            continue
        if idx not in started or idx in stopped:
            raise ValueError(f"a {ev.type} for index {idx}, which {'stopped' if idx in stopped else 'never started'}")
        if ev.type == "content_block_stop":
            stopped.add(idx)
            if idx in tools:
                tools[idx].stopped = True
        elif idx in tools:
            delta = ev.data.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                pj = delta.get("partial_json", "")
                tools[idx].parts.append(pj if isinstance(pj, str) else compact_json(pj))
    return tools


def _tool_block(b: _Block) -> dict[str, Any]:
    raw = "".join(b.parts)
    block = _copy(b.start)
    if raw.strip():  # the deltas win over the start's input, as in the SDKs
        try:
            block["input"] = json.loads(raw)
        except (ValueError, RecursionError):
            block["input"] = raw  # cut short: judged as its text
    else:
        block.setdefault("input", {})
    return block


def sse_tool_uses(body: bytes) -> list[tuple[int, dict[str, Any]]]:
    """The ``tool_use`` blocks of a whole SSE body, as (index, block with its input
    assembled), in stream order. Raises ValueError for a body that is not a valid stream."""
    return [(idx, _tool_block(b)) for idx, b in _blocks(_events(body)).items()]


def block_events(idx: int, block: dict[str, Any]) -> list[bytes]:
    """The events that send a complete block at `idx`: a text block as start (text "") + one
    text_delta + stop; a tool block as start (input {}) + one input_json_delta + stop; any other
    block as start + stop."""
    block = _copy(block)
    bt = block.get("type")
    out = []
    if bt == "text":
        text = block.get("text", "")
        block["text"] = ""
        out.append(
            encode_event("content_block_start", {"type": "content_block_start", "index": idx, "content_block": block})
        )
        out.append(
            encode_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": idx,
                    "delta": {"type": "text_delta", "text": text if isinstance(text, str) else compact_json(text)},
                },
            )
        )
    elif bt in _TOOL_TYPES:
        value = block.get("input", {})
        block["input"] = {}
        out.append(
            encode_event("content_block_start", {"type": "content_block_start", "index": idx, "content_block": block})
        )
        out.append(
            encode_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": idx,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": value if isinstance(value, str) else compact_json(value),
                    },
                },
            )
        )
    else:
        out.append(
            encode_event("content_block_start", {"type": "content_block_start", "index": idx, "content_block": block})
        )
    out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": idx}))
    return out


def replace_in_sse(body: bytes, replacements: dict[int, dict[str, Any]]) -> bytes:
    """The same SSE body with each replaced tool_use block's start, deltas and stop replaced,
    at the same index and in the place of its start, by the replacement's events
    (`block_events`), and ``message_delta``'s ``delta.stop_reason`` fixed; every other event
    byte-identical. Raises ValueError for a body that is not a valid stream or an index that
    does not hold a tool_use block."""
    if not replacements:
        return body
    events = _events(body)
    tools = _blocks(events)
    for idx in replacements:
        if idx not in tools:
            raise ValueError(f"no tool_use block at index {idx!r} to replace")
    left = sum(1 for idx in tools if idx not in replacements) + sum(
        1 for b in replacements.values() if b.get("type") == TOOL_USE
    )
    out = bytearray()
    for ev in events:
        data = ev.data
        if ev.type in _BLOCK_EVENTS and data is not None and data.get("index") in replacements:
            if ev.type == "content_block_start":
                out += b"".join(block_events(data["index"], replacements[data["index"]]))
            continue  # its deltas and stop were sent with the replacement
        if ev.type == "message_delta" and data is not None:
            delta = data.get("delta")
            if isinstance(delta, dict) and "stop_reason" in delta:
                fixed = _fixed_stop_reason(delta["stop_reason"], left)
                if fixed != delta["stop_reason"]:
                    out += encode_event("message_delta", {**data, "delta": {**delta, "stop_reason": fixed}})
                    continue
        out += ev.raw
    return bytes(out)
