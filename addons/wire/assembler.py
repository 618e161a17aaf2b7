"""The Messages API message that a stream of SSE events describes, built as the SDKs build it
(content blocks and their deltas, stop_reason, usage, an error event): what the recorder stores
of a streamed response. Pure: no mitmproxy import.
"""

from __future__ import annotations

import json
from typing import Any

from gatehouse.wire.sse import compact_json


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else compact_json(value)


class MessageAssembler:
    """Builds the Messages API message from its stream events, as the SDKs do."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self._json: dict[int, list[str]] = {}

    def feed(self, name: str, data: dict[str, Any]) -> None:
        t = data.get("type", name)
        if t == "message_start":
            msg = json.loads(compact_json(data.get("message") or {}))
            if not isinstance(msg, dict):
                msg = {}
            if not isinstance(msg.get("content"), list):
                msg["content"] = []
            self.message = msg
            return
        if t == "error":
            self.error = data.get("error") if isinstance(data.get("error"), dict) else data
            return
        msg = self.message
        if msg is None:
            return
        content: list[Any] = msg["content"]
        if t == "content_block_start":
            idx = data.get("index", len(content))
            if type(idx) is not int or not 0 <= idx < len(content) + 100_000:
                return
            block = json.loads(compact_json(data.get("content_block") or {}))
            while len(content) <= idx:
                content.append(None)
            content[idx] = block
        elif t == "content_block_delta":
            idx = data.get("index", -1)
            if type(idx) is not int or not (0 <= idx < len(content)) or not isinstance(content[idx], dict):
                return
            block = content[idx]
            delta = data.get("delta")
            if not isinstance(delta, dict):
                return
            dt = delta.get("type")
            if dt == "text_delta":
                block["text"] = _text(block.get("text")) + _text(delta.get("text"))
            elif dt == "input_json_delta":
                self._json.setdefault(idx, []).append(_text(delta.get("partial_json")))
            elif dt == "thinking_delta":
                block["thinking"] = _text(block.get("thinking")) + _text(delta.get("thinking"))
            elif dt == "signature_delta":
                block["signature"] = delta.get("signature", "")
            elif dt == "citations_delta":
                if not isinstance(block.get("citations"), list):
                    block["citations"] = []
                block["citations"].append(delta.get("citation"))
        elif t == "content_block_stop":
            idx = data.get("index", -1)
            if type(idx) is int:
                self._finish_json(idx)
        elif t == "message_delta":
            delta = data.get("delta")
            for k, v in delta.items() if isinstance(delta, dict) else ():
                msg[k] = v
            usage = data.get("usage")
            if isinstance(usage, dict):
                mu = msg.get("usage")
                if not isinstance(mu, dict):
                    mu = msg["usage"] = {}
                for k, v in usage.items():
                    if v is not None:
                        mu[k] = v

    def _finish_json(self, idx: int) -> None:
        parts = self._json.pop(idx, None)
        if parts is None or self.message is None:
            return
        content = self.message["content"]
        if not (0 <= idx < len(content)) or not isinstance(content[idx], dict):
            return
        raw = "".join(parts)
        if not raw.strip():
            return
        try:
            content[idx]["input"] = json.loads(raw)
        except (ValueError, RecursionError):
            # Kept as text: the recorder still shows what the model wrote.
            content[idx]["input"] = raw

    def result(self) -> dict[str, Any]:
        """The message so far (blocks still streaming included), with ``error`` if one came."""
        for idx in list(self._json):
            self._finish_json(idx)
        msg = json.loads(compact_json(self.message)) if self.message is not None else {}
        if self.error is not None:
            msg["error"] = self.error
        return msg


def assemble_message(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The Messages API message that a stream of events describes (content blocks,
    stop_reason, usage); an ``error`` event adds an ``error`` key."""
    asm = MessageAssembler()
    for name, data in events:
        asm.feed(name, data)
    return asm.result()
