"""The streaming pipeline's judge hook (`SsePipeline.judge_tool_use`): called after masking,
exactly once per tool_use block (never for server or MCP tool use), its replacement sent at the
same index in a valid stream, stop_reason fixed, whatever the chunking; and the same result as
masking a buffered body and rewriting it with `gatehouse.wire.toolcalls`."""

from __future__ import annotations

import json
import random
from itertools import pairwise
from typing import Any

import anthropic
import httpx2

from gatehouse.wire import toolcalls
from gatehouse.wire.assembler import assemble_message
from gatehouse.wire.pipeline import SsePipeline, mask_sse_body
from gatehouse.wire.sse import parse_sse
from support.secrets import fake_secret
from support.sse_events import encode, ending, ev, message_start, text_block, tool_block

BLOCKED = "Gatehouse blocked this call."


def aws(seed: int = 1) -> str:
    return fake_secret("aws-access-key-id", random.Random(seed))


def run(pipe: SsePipeline, data: bytes, cuts: list[int] | range) -> bytes:
    """Feed `data` split at `cuts`, then the end signal; what the client receives."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    returned = [pipe(data[a:b]) for a, b in pairwise(bounds) if b > a]
    assert all(r != b"" for r in returned)  # never the early end of a chunked body
    return b"".join(r if isinstance(r, bytes) else b"".join(r) for r in returned) + pipe(b"")


def sdk_message(data: bytes) -> Any:
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


class Recorder:
    """A judge that blocks commands containing `needle` and remembers every call."""

    def __init__(self, needle: str = "rm -rf") -> None:
        self.needle = needle
        self.calls: list[tuple[int, dict[str, Any]]] = []

    def __call__(self, index: int, block: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append((index, block))
        if self.needle in json.dumps(block["input"]):
            return {"type": "text", "text": BLOCKED}
        return None


def stream(*commands: str, stop_reason: str = "tool_use", seed: int = 1) -> bytes:
    rng = random.Random(seed)
    events = [message_start(), *text_block(0, "Running it.", rng)]
    for i, c in enumerate(commands, start=1):
        events += tool_block(i, "Bash", {"command": c}, rng)
    return encode([*events, *ending(stop_reason)])


def test_the_judge_sees_the_masked_input(masker):
    s = aws()
    judge = Recorder(needle="never")
    pipe = SsePipeline(masker, judge_tool_use=judge)
    out = run(pipe, stream(f"export AWS_ACCESS_KEY_ID={s}"), [40, 300])
    [(index, block)] = judge.calls
    assert index == 1 and block["type"] == "tool_use" and block["name"] == "Bash" and block["id"] == "toolu_0001"
    assert s not in json.dumps(block) and "[MASKED:aws-access-key-id:" in block["input"]["command"]
    # sent as judged, not masked a second time: one finding, the client's input is the judge's
    assert [f.where for f in pipe.findings] == ["content[1].input.command"]
    assert assemble_message(parse_sse(out))["content"][1]["input"] == block["input"]
    assert s not in out.decode()


def test_a_replacement_is_sent_at_the_same_index_in_a_valid_stream(masker):
    judge = Recorder()
    pipe = SsePipeline(masker, judge_tool_use=judge)
    out = run(pipe, stream("rm -rf /", "ls"), range(0, 5000, 23))
    got = parse_sse(out)
    at1 = [(n, d) for n, d in got if d.get("index") == 1]
    assert at1 == [
        (
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": BLOCKED}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]
    starts = [d["index"] for n, d in got if n == "content_block_start"]
    assert starts == [0, 1, 2]
    msg = sdk_message(out)
    assert [b.type for b in msg.content] == ["text", "text", "tool_use"]
    assert msg.content[1].text == BLOCKED and msg.content[2].input == {"command": "ls"}
    assert msg.stop_reason == "tool_use"  # a tool_use is left
    assert pipe.tool_uses_replaced == 1 and pipe.tool_uses_kept == 1


def test_stop_reason_becomes_end_turn_when_no_tool_use_is_left(masker):
    pipe = SsePipeline(masker, judge_tool_use=Recorder())
    out = run(pipe, stream("rm -rf /", "rm -rf ~"), [100])
    assert sdk_message(out).stop_reason == "end_turn"
    md = [d for n, d in parse_sse(out) if n == "message_delta"]
    assert md[0]["delta"]["stop_reason"] == "end_turn" and md[0]["usage"] == {"output_tokens": 321}
    assert pipe.assembled["stop_reason"] == "end_turn"  # what the recorder stores is what was sent
    assert [b["type"] for b in pipe.assembled["content"]] == ["text", "text", "text"]


def test_stop_reason_untouched_without_replacement_or_when_not_tool_use(masker):
    pipe = SsePipeline(masker, judge_tool_use=Recorder())
    assert run(pipe, stream("ls"), [])
    assert pipe.assembled["stop_reason"] == "tool_use"
    pipe = SsePipeline(masker, judge_tool_use=Recorder())
    run(pipe, stream("rm -rf /", stop_reason="max_tokens"), [])
    assert pipe.assembled["stop_reason"] == "max_tokens"
    pipe = SsePipeline(masker)  # no judge: nothing replaced
    run(pipe, stream("rm -rf /"), [])
    assert pipe.assembled["stop_reason"] == "tool_use"


def test_judged_exactly_once_per_tool_use_at_every_byte_boundary(masker):
    data = stream("rm -rf /", "ls", seed=2)
    whole_judge = Recorder()
    whole = run(SsePipeline(masker, judge_tool_use=whole_judge), data, [])
    assert [i for i, _ in whole_judge.calls] == [1, 2]
    for step in (1, 2, 3, 7):
        judge = Recorder()
        out = run(SsePipeline(masker, judge_tool_use=judge), data, range(0, len(data), step))
        assert out == whole, step
        assert judge.calls == whole_judge.calls, step


def test_server_and_mcp_tool_use_are_not_judged(masker):
    judge = Recorder(needle="")  # would replace anything it sees
    events = [
        message_start(),
        ev(
            "content_block_start",
            index=0,
            content_block={"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        ),
        ev("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": '{"query": "rm -rf"}'}),
        ev("content_block_stop", index=0),
        ev(
            "content_block_start",
            index=1,
            content_block={"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "q", "server_name": "s", "input": {}},
        ),
        ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '{"a": 1}'}),
        ev("content_block_stop", index=1),
        *ending("end_turn"),
    ]
    pipe = SsePipeline(masker, judge_tool_use=judge)
    out = run(pipe, encode(events), [50])
    assert judge.calls == []
    msg = assemble_message(parse_sse(out))
    assert [b["type"] for b in msg["content"]] == ["server_tool_use", "mcp_tool_use"]
    assert msg["content"][0]["input"] == {"query": "rm -rf"}
    assert pipe.tool_uses_kept == 0 and pipe.tool_uses_replaced == 0


def test_the_judge_can_be_set_after_the_pipeline_is_made(masker):
    pipe = SsePipeline(masker)
    judge = Recorder()
    pipe.judge_tool_use = judge  # as the commands adapter does in responseheaders
    out = run(pipe, stream("rm -rf /"), [])
    assert len(judge.calls) == 1 and sdk_message(out).content[1].text == BLOCKED


def test_a_cut_short_input_is_judged_as_its_masked_text(masker):
    s = aws(2)
    partial = '{"command": "rm -rf / ' + s
    events = [
        message_start(),
        ev("content_block_start", index=0, content_block={"type": "tool_use", "id": "t", "name": "Bash", "input": {}}),
        ev("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": partial}),
        ev("content_block_stop", index=0),
        *ending("max_tokens"),
    ]
    judge = Recorder()
    pipe = SsePipeline(masker, judge_tool_use=judge)
    out = run(pipe, encode(events), [])
    [(_, block)] = judge.calls
    assert isinstance(block["input"], str) and block["input"].startswith('{"command": "rm -rf / [MASKED:')
    assert s not in out.decode() and "rm -rf" not in out.decode()


def test_a_block_the_stream_never_stopped_is_judged_too(masker):
    rng = random.Random(4)
    events = [message_start(), *tool_block(0, "Bash", {"command": "rm -rf /"}, rng)[:-1]]  # then the end
    judge = Recorder()
    pipe = SsePipeline(masker, judge_tool_use=judge)
    out = run(pipe, encode(events), [30])
    assert len(judge.calls) == 1 and "rm -rf" not in out.decode()
    assert [n for n, _ in parse_sse(out)][-3:] == ["content_block_start", "content_block_delta", "content_block_stop"]


def test_a_replacement_text_is_masked(masker):
    s = aws(3)
    pipe = SsePipeline(masker, judge_tool_use=lambda i, b: {"type": "text", "text": f"no: {s}"})
    out = run(pipe, stream("ls"), [])
    assert s not in out.decode() and "[MASKED:aws-access-key-id:" in out.decode()


def test_a_failing_judge_fails_the_stream_closed(masker):
    def judge(index, block):
        raise RuntimeError("boom")

    pipe = SsePipeline(masker, judge_tool_use=judge)
    out = run(pipe, stream("rm -rf /"), [])
    got = parse_sse(out)
    assert got[-1][0] == "error" and pipe.errors
    assert "rm -rf" not in out.decode()


def test_a_tool_block_inside_message_start_ends_the_stream(masker):
    block = {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": "rm -rf /"}}
    judge = Recorder()
    out, pipe = mask_sse_body(
        masker, encode([message_start(content=[block]), *ending("tool_use")]), judge_tool_use=judge
    )
    assert [n for n, _ in parse_sse(out)] == ["error"] and pipe.errors and "rm -rf" not in out.decode()


def test_streamed_judging_equals_buffered_masking_then_rewriting(masker):
    s = aws(5)
    data = stream(f"rm -rf /tmp/{s}", f"echo {s}", seed=6)
    streamed = run(SsePipeline(masker, judge_tool_use=Recorder()), data, range(0, len(data), 41))
    masked, _ = mask_sse_body(masker, data)
    judge = Recorder()
    replacements = {}
    for idx, block in toolcalls.sse_tool_uses(masked):
        if (repl := judge(idx, block)) is not None:
            replacements[idx] = repl
    buffered = toolcalls.replace_in_sse(masked, replacements)
    assert sdk_message(streamed).model_dump() == sdk_message(buffered).model_dump()
    assert assemble_message(parse_sse(streamed)) == assemble_message(parse_sse(buffered))


def test_an_input_that_is_a_json_string_stays_json(masker):
    events = [
        message_start(),
        ev("content_block_start", index=0, content_block={"type": "tool_use", "id": "t", "name": "X", "input": {}}),
        ev("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": '"just text"'}),
        ev("content_block_stop", index=0),
        *ending("tool_use"),
    ]
    judge = Recorder()
    out = run(SsePipeline(masker, judge_tool_use=judge), encode(events), [])
    assert judge.calls[0][1]["input"] == "just text"
    sent = [d for n, d in parse_sse(out) if n == "content_block_delta"][0]["delta"]["partial_json"]
    assert json.loads(sent) == "just text"
