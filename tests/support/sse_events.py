"""Building Messages API event streams for tests: blocks cut into random deltas, and SSE bytes."""

from __future__ import annotations

import json
import random
from typing import Any

from gatehouse.wire.sse import encode_event


def ev(name: str, **data: Any) -> tuple[str, dict[str, Any]]:
    return name, {"type": name, **data}


def message_start(**extra: Any) -> tuple[str, dict[str, Any]]:
    return ev(
        "message_start",
        message={
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "gatehouse-test-model",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
            **extra,
        },
    )


def text_block(idx: int, text: str, rng: random.Random, max_piece: int = 9) -> list[tuple[str, dict[str, Any]]]:
    out = [ev("content_block_start", index=idx, content_block={"type": "text", "text": ""})]
    i = 0
    while i < len(text):
        n = rng.randint(1, max_piece)
        out.append(ev("content_block_delta", index=idx, delta={"type": "text_delta", "text": text[i : i + n]}))
        i += n
    out.append(ev("content_block_stop", index=idx))
    return out


def tool_block(idx: int, name: str, inp: dict[str, Any], rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    js = json.dumps(inp, ensure_ascii=False)
    out = [
        ev(
            "content_block_start",
            index=idx,
            content_block={"type": "tool_use", "id": f"toolu_{idx:04d}", "name": name, "input": {}},
        ),
        ev("content_block_delta", index=idx, delta={"type": "input_json_delta", "partial_json": ""}),
    ]
    i = 0
    while i < len(js):
        n = rng.randint(1, 15)
        out.append(
            ev("content_block_delta", index=idx, delta={"type": "input_json_delta", "partial_json": js[i : i + n]})
        )
        i += n
    out.append(ev("content_block_stop", index=idx))
    return out


def thinking_block(idx: int, text: str, signature: str, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    out = [ev("content_block_start", index=idx, content_block={"type": "thinking", "thinking": "", "signature": ""})]
    for i in range(0, len(text), 11):
        out.append(ev("content_block_delta", index=idx, delta={"type": "thinking_delta", "thinking": text[i : i + 11]}))
    out.append(ev("content_block_delta", index=idx, delta={"type": "signature_delta", "signature": signature}))
    out.append(ev("content_block_stop", index=idx))
    return out


def ending(stop_reason: str = "end_turn") -> list[tuple[str, dict[str, Any]]]:
    return [
        ev("message_delta", delta={"stop_reason": stop_reason, "stop_sequence": None}, usage={"output_tokens": 321}),
        ev("message_stop"),
    ]


def encode(events: list[tuple[str, dict[str, Any]]], newline: str = "\n") -> bytes:
    raw = b"".join(encode_event(n, d) for n, d in events)
    return raw.replace(b"\n", newline.encode()) if newline != "\n" else raw
