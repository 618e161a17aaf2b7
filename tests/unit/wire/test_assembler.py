"""The assembler: the Messages API message a stream of events describes, as the SDKs build it."""

from __future__ import annotations

import random

from gatehouse.wire.assembler import MessageAssembler, assemble_message
from support.sse_events import ending, ev, message_start, text_block, thinking_block, tool_block


def test_assemble_message():
    rng = random.Random(1)
    events = [
        message_start(),
        *thinking_block(0, "hmm", "c2lnbmF0dXJl", rng),
        *text_block(1, "Hello world", rng),
        *tool_block(2, "Bash", {"command": "ls -la"}, rng),
        ev("content_block_delta", index=1, delta={"type": "citations_delta", "citation": {"cited_text": "x"}}),
        *ending("tool_use"),
    ]
    msg = assemble_message(events)
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use"]
    assert msg["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": "c2lnbmF0dXJl"}
    assert msg["content"][1]["text"] == "Hello world" and msg["content"][1]["citations"] == [{"cited_text": "x"}]
    assert msg["content"][2]["input"] == {"command": "ls -la"}
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {"input_tokens": 12, "output_tokens": 321}
    assert "error" not in msg
    err = assemble_message([message_start(), ev("error", error={"type": "overloaded_error", "message": "busy"})])
    assert err["error"] == {"type": "overloaded_error", "message": "busy"}
    asm = MessageAssembler()
    for n, d in [
        message_start(),
        *tool_block(0, "X", {}, rng)[:1],
        ev("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": '{"a": '}),
    ]:
        asm.feed(n, d)
    assert asm.result()["content"][0]["input"] == '{"a": '  # an unfinished input is kept as text
