"""Server-sent events as the Messages API streams them: the event sequence for a message
(`sse_events`) and its bytes (`encode_sse`), and reference parsers for tests (`parse_sse`,
`assemble_message`)."""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping, Sequence
from typing import Any

from support.fake_upstream.messages import compact_json, complete_message


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
    return b"event: " + event.encode() + b"\ndata: " + compact_json(data) + b"\n\n"


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
