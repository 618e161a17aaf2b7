"""The tool calls of a buffered response and their replacement (gatehouse.wire.toolcalls): what
the SDK makes of the rewritten body (its own SSE decoder and accumulator), indices, event order,
stop_reason, and byte-identical passthrough of every other event."""

from __future__ import annotations

import json
import random
from typing import Any

import anthropic
import httpx2
import pytest

from gatehouse.wire.assembler import assemble_message
from gatehouse.wire.sse import encode_event, parse_sse
from gatehouse.wire.toolcalls import (
    block_events,
    replace_in_message,
    replace_in_sse,
    sse_tool_uses,
    tool_use_blocks,
)
from support.sse_events import encode, ending, ev, message_start, text_block, thinking_block, tool_block

NOTICE = {"type": "text", "text": "Gatehouse blocked this call: rule no-rm-rf."}


def sdk_stream(data: bytes) -> Any:
    """The anthropic SDK's own parse of an SSE body: its Stream decoder and accumulator."""
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=data)
    )
    client = anthropic.Anthropic(
        api_key="sk-test", max_retries=0, http_client=anthropic.DefaultHttpxClient(transport=transport)
    )
    with client.messages.stream(
        model="gatehouse-test-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return stream.get_final_message()


def sdk_json(doc: dict[str, Any]) -> Any:
    """The anthropic SDK's parse of a buffered JSON response."""
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=doc))
    client = anthropic.Anthropic(
        api_key="sk-test", max_retries=0, http_client=anthropic.DefaultHttpxClient(transport=transport)
    )
    return client.messages.create(
        model="gatehouse-test-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )


def two_calls(stop_reason: str = "tool_use") -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(1)
    return [
        message_start(),
        ev("ping"),
        *text_block(0, "Let me clean up.", rng),
        *tool_block(1, "Bash", {"command": "rm -rf /"}, rng),
        *tool_block(2, "Bash", {"command": "ls -la"}, rng),
        *ending(stop_reason),
    ]


def message(*blocks: dict[str, Any], stop_reason: str = "tool_use") -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "gatehouse-test-model",
        "content": list(blocks),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 5},
    }


def tool(i: int, command: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{i}", "name": "Bash", "input": {"command": command}}


# -- buffered JSON ----------------------------------------------------------------------------


def test_tool_use_blocks_of_a_message_only_tool_use():
    msg = message(
        {"type": "text", "text": "hi"},
        tool(1, "rm -rf /"),
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
        {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "t", "server_name": "s", "input": {}},
        tool(4, "ls"),
    )
    calls = tool_use_blocks(msg)
    assert [(i, b["input"]["command"]) for i, b in calls] == [(1, "rm -rf /"), (4, "ls")]
    calls[0][1]["input"]["command"] = "changed"  # a copy: the message is untouched
    assert msg["content"][1]["input"]["command"] == "rm -rf /"


def test_tool_use_blocks_refuses_a_message_without_content():
    with pytest.raises(ValueError, match="content"):
        tool_use_blocks({"type": "message", "content": "text"})


def test_replacing_the_only_call_ends_the_turn():
    msg = message({"type": "text", "text": "ok"}, tool(1, "rm -rf /"))
    out = replace_in_message(msg, {1: NOTICE})
    assert out["content"] == [{"type": "text", "text": "ok"}, NOTICE]
    assert out["stop_reason"] == "end_turn"
    assert msg["content"][1]["type"] == "tool_use" and msg["stop_reason"] == "tool_use"  # not mutated
    parsed = sdk_json(out)
    assert [b.type for b in parsed.content] == ["text", "text"] and parsed.stop_reason == "end_turn"


def test_replacing_one_of_two_calls_keeps_the_other_and_tool_use():
    out = replace_in_message(message(tool(0, "rm -rf /"), tool(1, "ls")), {0: NOTICE})
    assert out["content"][0] == NOTICE and out["content"][1] == tool(1, "ls")
    assert out["stop_reason"] == "tool_use"
    parsed = sdk_json(out)
    assert parsed.content[1].input == {"command": "ls"} and parsed.stop_reason == "tool_use"


@pytest.mark.parametrize("stop_reason", ["max_tokens", "end_turn", "pause_turn", None])
def test_other_stop_reasons_are_left_alone(stop_reason):
    out = replace_in_message(message(tool(0, "rm -rf /"), stop_reason=stop_reason), {0: NOTICE})
    assert out["stop_reason"] == stop_reason


def test_no_replacement_no_change():
    msg = message(tool(0, "ls"))
    assert replace_in_message(msg, {}) == msg


@pytest.mark.parametrize("idx", [0, 2, 5, -1])
def test_replacing_what_is_not_a_tool_use_is_refused(idx):
    msg = message(
        {"type": "text", "text": "a"},
        tool(1, "ls"),
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
    )
    with pytest.raises(ValueError, match="no tool_use block"):
        replace_in_message(msg, {idx: NOTICE})


# -- buffered SSE -----------------------------------------------------------------------------


def test_sse_tool_uses_assembles_inputs_in_order():
    calls = sse_tool_uses(encode(two_calls()))
    assert calls == [
        (1, {"type": "tool_use", "id": "toolu_0001", "name": "Bash", "input": {"command": "rm -rf /"}}),
        (2, {"type": "tool_use", "id": "toolu_0002", "name": "Bash", "input": {"command": "ls -la"}}),
    ]


def test_sse_tool_uses_input_in_the_start_event_and_not_server_tools():
    events = [
        message_start(),
        ev("content_block_start", index=0, content_block=tool(0, "whoami")),
        ev("content_block_stop", index=0),
        ev(
            "content_block_start",
            index=1,
            content_block={"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        ),
        ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '{"query": "x"}'}),
        ev("content_block_stop", index=1),
        *ending("tool_use"),
    ]
    assert sse_tool_uses(encode(events)) == [(0, tool(0, "whoami"))]


def test_sse_tool_use_cut_short_is_given_as_its_text():
    events = [
        message_start(),
        ev("content_block_start", index=0, content_block={"type": "tool_use", "id": "t", "name": "Bash", "input": {}}),
        ev("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": '{"command": "rm -r'}),
        ev("content_block_stop", index=0),
        *ending("max_tokens"),
    ]
    [(idx, block)] = sse_tool_uses(encode(events))
    assert idx == 0 and block["input"] == '{"command": "rm -r'


def test_replace_in_sse_one_of_two_what_the_sdk_sees():
    body = encode(two_calls())
    out = replace_in_sse(body, {1: NOTICE})
    msg = sdk_stream(out)
    assert [b.type for b in msg.content] == ["text", "text", "tool_use"]
    assert msg.content[0].text == "Let me clean up."
    assert msg.content[1].text == NOTICE["text"]
    assert msg.content[2].input == {"command": "ls -la"} and msg.content[2].id == "toolu_0002"
    assert msg.stop_reason == "tool_use"
    assembled = assemble_message(parse_sse(out))
    assert assembled["content"][1] == NOTICE and assembled["stop_reason"] == "tool_use"


def test_replace_in_sse_all_calls_ends_the_turn():
    body = encode(two_calls())
    out = replace_in_sse(body, {1: NOTICE, 2: {"type": "text", "text": "second"}})
    msg = sdk_stream(out)
    assert [b.type for b in msg.content] == ["text", "text", "text"]
    assert [b.text for b in msg.content[1:]] == [NOTICE["text"], "second"]
    assert msg.stop_reason == "end_turn"
    md = [d for n, d in parse_sse(out) if n == "message_delta"][0]
    assert md["delta"] == {"stop_reason": "end_turn", "stop_sequence": None} and md["usage"] == {"output_tokens": 321}


def test_replace_in_sse_event_order_and_byte_identical_rest():
    events = two_calls()
    body = encode(events)
    out = replace_in_sse(body, {1: NOTICE})
    got = parse_sse(out)
    # the replaced block: start (text ""), one text_delta, stop, where its start was
    i = next(k for k, (n, d) in enumerate(got) if n == "content_block_start" and d["index"] == 1)
    assert got[i : i + 3] == [
        (
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": NOTICE["text"]}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]
    # everything else is the original events' bytes, in their order
    expected = b""
    for n, d in events:
        if d.get("index") != 1:
            expected += encode_event(n, d)
        elif n == "content_block_start":
            expected += b"".join(block_events(1, NOTICE))
    assert out == expected


def test_replace_in_sse_keeps_crlf_comments_and_unknown_events_byte_identical():
    rng = random.Random(2)
    head = encode([message_start(), *thinking_block(0, "hmm", "c2ln", rng)], newline="\r\n")
    comment = b": keepalive\r\n\r\n"
    future = b'event: future\r\ndata: {"type":"future","x":1}\r\n\r\n'
    call = encode(tool_block(1, "Bash", {"command": "rm -rf /"}, rng), newline="\r\n")
    tail = encode(ending("tool_use"))
    out = replace_in_sse(head + comment + future + call + tail, {1: NOTICE})
    assert out.startswith(head + comment + future + b"".join(block_events(1, NOTICE)))
    assert out.endswith(encode([ending("tool_use")[1]]))
    msg = sdk_stream(out)
    assert [b.type for b in msg.content] == ["thinking", "text"] and msg.stop_reason == "end_turn"
    assert msg.content[0].signature == "c2ln"


def test_replace_in_sse_without_replacements_is_the_body():
    body = encode(two_calls())
    assert replace_in_sse(body, {}) is body


def test_replace_in_sse_a_block_that_never_stopped():
    rng = random.Random(3)
    events = [
        message_start(),
        *tool_block(0, "Bash", {"command": "rm -rf /"}, rng)[:-1],
        ev("error", error={"type": "overloaded_error", "message": "Overloaded"}),
    ]
    body = encode(events)
    [(idx, block)] = sse_tool_uses(body)
    assert idx == 0 and block["input"] == {"command": "rm -rf /"}
    got = parse_sse(replace_in_sse(body, {0: NOTICE}))
    assert [n for n, _ in got] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "error",
    ]
    assert "rm -rf" not in json.dumps(got)


def test_replace_in_sse_refuses_an_index_without_a_tool_use():
    body = encode(two_calls())
    for idx in (0, 3, 99):
        with pytest.raises(ValueError, match="no tool_use block"):
            replace_in_sse(body, {idx: NOTICE})


BAD_STREAMS = {
    "not JSON": b"event: message_start\ndata: {nope\n\n",
    "not an object": b"event: message_start\ndata: [1]\n\n",
    "block before message_start": encode([ev("content_block_start", index=0, content_block=tool(0, "ls"))]),
    "second message_start": encode([message_start(), message_start()]),
    "delta for an unknown index": encode(
        [message_start(), ev("content_block_delta", index=4, delta={"type": "input_json_delta", "partial_json": "{}"})]
    ),
    "delta after stop": encode(
        [
            message_start(),
            ev("content_block_start", index=0, content_block=tool(0, "ls")),
            ev("content_block_stop", index=0),
            ev("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": "{}"}),
        ]
    ),
    "second start for an index": encode(
        [
            message_start(),
            ev("content_block_start", index=0, content_block=tool(0, "ls")),
            ev("content_block_start", index=0, content_block=tool(0, "rm -rf /")),
        ]
    ),
    "no index": encode([message_start(), ev("content_block_start", content_block=tool(0, "ls"))]),
    "start without a block": encode([message_start(), ev("content_block_start", index=0)]),
    "tool_use inside message_start": encode([message_start(content=[tool(0, "rm -rf /")])]),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_a_body_that_is_not_a_valid_stream_is_refused(case):
    with pytest.raises(ValueError):
        sse_tool_uses(BAD_STREAMS[case])
    with pytest.raises(ValueError):
        replace_in_sse(BAD_STREAMS[case], {0: NOTICE})


def test_block_events_for_other_replacement_types():
    got = parse_sse(b"".join(block_events(3, tool(3, "ls"))))
    assert [n for n, _ in got] == ["content_block_start", "content_block_delta", "content_block_stop"]
    assert got[0][1]["content_block"]["input"] == {} and json.loads(got[1][1]["delta"]["partial_json"]) == {
        "command": "ls"
    }
    got = parse_sse(b"".join(block_events(2, {"type": "redacted_thinking", "data": "x"})))
    assert [n for n, _ in got] == ["content_block_start", "content_block_stop"]
