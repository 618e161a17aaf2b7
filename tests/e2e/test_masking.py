"""Masking, end to end through a real mitmdump, with the SDK, raw HTTP and Claude Code."""

from __future__ import annotations

import json
import ssl
import time

import httpx2 as httpx
import pytest

from support.fake_upstream import Reply, parse_sse
from support.harness import run_claude, sdk_client

pytestmark = pytest.mark.e2e
MODEL = "claude-sonnet-4-6"
# Synthetic credentials in real formats (see policies/rules/secrets.toml).
GITHUB_PAT = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"
AWS_KEY_ID = "AKIA" + "Q3EXAMPLE7Z2K4TB"


def raw_client(gw) -> httpx.Client:
    return httpx.Client(proxy=gw.proxy_url(), verify=ssl.create_default_context(cafile=gw.ca_path), timeout=60)


def post(gw, body: bytes | str, content_type: str = "application/json") -> httpx.Response:
    with raw_client(gw) as c:
        return c.post(
            "https://api.anthropic.com/v1/messages",
            content=body,
            headers={"content-type": content_type, "anthropic-version": "2023-06-01", "x-api-key": "x"},
        )


def test_secret_in_tool_result_never_reaches_upstream(gateway, upstream, tmp_path):
    """Claude Code reads a file holding a secret; the next request carries it masked."""
    from support.fake_upstream import claude_code_tool_responder

    work = tmp_path / "project"
    work.mkdir()
    (work / ".env").write_text(f"GITHUB_TOKEN={GITHUB_PAT}\nREGION=eu-west-1\n")
    upstream.responder = claude_code_tool_responder("cat .env")
    r = run_claude(gateway, work, "show me the env file", args=["--allowedTools", "Bash"])
    assert r.returncode == 0, r.stdout + r.stderr
    turns = upstream.requests.messages()
    assert any(t.tool_results() for t in turns)
    for t in turns:
        assert GITHUB_PAT.encode() not in t.body
    last = json.dumps(turns[-1].tool_results())
    assert "[MASKED:github-pat:" in last and "REGION=eu-west-1" in last


def test_secret_split_across_streamed_deltas_never_reaches_client(gateway, upstream):
    text = f"Your key is {AWS_KEY_ID} - rotate it."
    upstream.enqueue(Reply.text(text, chunk_chars=9))  # the key straddles several deltas
    chunks = []
    with sdk_client(gateway).messages.stream(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        for t in s.text_stream:
            chunks.append(t)
        final = s.get_final_message()
    got = "".join(chunks)
    assert AWS_KEY_ID not in got and AWS_KEY_ID[:12] not in got
    assert "[MASKED:aws-access-key-id:" in got
    assert got.startswith("Your key is ") and got.endswith(" - rotate it.")
    assert final.content[0].text == got


def test_secret_in_prompt_and_buffered_response(gateway, upstream):
    upstream.enqueue(Reply.text(f"Echo: {GITHUB_PAT}"))
    msg = sdk_client(gateway).messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": f"my token is {GITHUB_PAT}, keep it safe"}]
    )
    assert GITHUB_PAT not in msg.content[0].text and "[MASKED:github-pat:" in msg.content[0].text
    [req] = upstream.requests.messages()
    assert GITHUB_PAT.encode() not in req.body
    sent = req.json()["messages"][0]["content"]
    # Deterministic: the same secret masks to the same text in both directions.
    assert sent.split("[MASKED:")[1].split("]")[0] == msg.content[0].text.split("[MASKED:")[1].split("]")[0]


def test_thinking_and_signatures_pass_byte_for_byte(gateway, upstream):
    thinking = f"The user pasted {GITHUB_PAT}; I must not repeat it."
    signature = "EqQBCkYIARgCIkD" + "x" * 80
    blocks = [{"type": "thinking", "thinking": thinking, "signature": signature}, {"type": "text", "text": "Done."}]
    upstream.enqueue(Reply.message(blocks, chunk_chars=7))
    with sdk_client(gateway).messages.stream(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        final = s.get_final_message()
    assert final.content[0].thinking == thinking
    assert final.content[0].signature == signature
    # The client sends thinking back unchanged in the next request: it is not rewritten there either.
    upstream.enqueue(Reply.text("ok"))
    sdk_client(gateway).messages.create(
        model=MODEL,
        max_tokens=5,
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
            {"role": "user", "content": "go on"},
        ],
    )
    sent = upstream.requests.messages()[-1].json()["messages"][1]["content"][0]
    assert sent["thinking"] == thinking and sent["signature"] == signature


def test_stream_is_not_buffered(gateway, upstream):
    """With the upstream paused mid-stream, the client already has the text that is safe to send
    (all but the hold-back window of 256 characters)."""
    before = "First part arrives now, before the pause. " * 15  # 630 characters, 16 deltas of 40
    reply = Reply.text(before + "Second part after the pause.", chunk_chars=40, pause_before_event=3 + 16)
    upstream.enqueue(reply)
    with sdk_client(gateway).messages.stream(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        it = iter(s.text_stream)
        received = next(it)
        assert reply.gate.wait_reached(10)
        while len(received) < len(before) - 256:
            received += next(it)  # would block forever if the gateway buffered the stream
        assert not reply.gate.released
        reply.gate.release()
        received += "".join(it)
    assert received == before + "Second part after the pause."


def test_long_tool_use_gets_pings(gateway, upstream):
    """A tool_use is held until complete; pings keep the client's idle watchdog quiet meanwhile."""
    long_input = {"command": "echo " + "x" * 900}
    upstream.enqueue(
        Reply.message(
            [{"type": "tool_use", "id": "toolu_long", "name": "Bash", "input": long_input}],
            stop_reason="tool_use",
            json_chunk_chars=12,
            delay_between_events=0.22,
            pings=False,
        )
    )
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    events = []
    with (
        raw_client(gateway) as c,
        c.stream(
            "POST", "https://api.anthropic.com/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
        ) as r,
    ):
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            events.append((time.monotonic(), chunk))
    parsed = parse_sse(buf)
    names = [n for n, _ in parsed]
    assert names.count("ping") >= 1, names
    start = next(d for n, d in parsed if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    joined = "".join(d["delta"]["partial_json"] for n, d in parsed if n == "content_block_delta")
    assert json.loads(joined) == long_input


@pytest.mark.parametrize(
    "body, content_type, status",
    [
        (b"{not json", "application/json", 400),
        (b'{"model": "m", "messages": "x"' + b"\xff\xfe", "application/json", 400),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
        (
            json.dumps({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode(),
            "text/plain",
            400,
        ),
    ],
)
def test_bad_request_bodies(gateway, upstream, body, content_type, status):
    r = post(gateway, body, content_type)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    # The gateway keeps serving other flows.
    assert (
        sdk_client(gateway)
        .messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "still up"}])
        .content
    )


def test_twenty_megabyte_body_is_masked(gateway, upstream):
    filler = ("log line without secrets 0123456789\n" * 560_000)[: 20 * 1024 * 1024]
    body = {
        "model": MODEL,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": filler + f"\nGITHUB_TOKEN={GITHUB_PAT}\n"}],
    }
    r = post(gateway, json.dumps(body))
    assert r.status_code == 200, r.text[:500]
    [req] = upstream.requests.messages()
    assert len(req.body) > 20_000_000
    assert GITHUB_PAT.encode() not in req.body and b"[MASKED:github-pat:" in req.body


def test_secret_in_the_url_is_masked_upstream_and_in_the_log(gateway, upstream):
    with raw_client(gateway) as c:
        r = c.get(f"https://api.anthropic.com/v1/models?note={GITHUB_PAT}", headers={"anthropic-version": "2023-06-01"})
        refused = c.get(f"https://api.anthropic.com/v1/files/{GITHUB_PAT}")
    assert r.status_code == 200 and refused.status_code == 403
    [req] = [x for x in upstream.requests if x.path.startswith("/v1/models")]
    assert GITHUB_PAT not in req.path and "[MASKED:github-pat:" in req.path
    gateway.stop()
    log = gateway.log()
    assert "/v1/models" in log and "/v1/files/" in log
    assert GITHUB_PAT[4:20] not in log
