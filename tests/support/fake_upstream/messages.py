"""The Messages API's objects as the real API returns them: the model list, the error shape, a
full message object from a partial one (ids, stop reason, plausible token counts), and the
compact JSON the API writes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_TEXT = "Hello from the fake upstream."

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


def random_hex(n: int = 24) -> str:
    return uuid.uuid4().hex[:n]


def compact_json(obj: Any) -> bytes:
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


def estimate_tokens(text_len: int) -> int:
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
        "output_tokens": estimate_tokens(sum(_block_output_len(b) for b in content)),
    }
    usage.update(message.get("usage") or {})
    out = dict(message)
    out.update(
        id=message.get("id") or f"msg_fake_{random_hex()}",
        type="message",
        role="assistant",
        model=message.get("model") or model or DEFAULT_MODEL,
        content=content,
        stop_reason=message.get("stop_reason") or ("tool_use" if has_tool else "end_turn"),
        stop_sequence=message.get("stop_sequence"),
        usage=usage,
    )
    return out
