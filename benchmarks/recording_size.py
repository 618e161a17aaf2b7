"""Bytes stored for a 50-turn Claude Code-shaped session: Gatehouse's store vs a mitmproxy flow dump.

Every Claude Code turn resends the whole conversation with a ~75 KB system prompt and tool
list, so the traffic grows with the square of the number of turns. Gatehouse stores the
system prompt, the tool list and each message once (content-addressed blobs) and small
records that reference them; mitmproxy's own dump (`mitmproxy.io.FlowWriter`) stores every
request and response body as it was.

The session is synthetic but shaped like Claude Code's: a system prompt of text blocks and
~17 tool definitions (~75 KB together), user turns that are mostly tool results of varied
size (file reads are large), assistant turns with text and a tool_use, `cache_control` on
the newest message (so that message's bytes change on the next turn, as they do), and SSE
response bodies on the wire. Both sides get exactly the same request and response bodies.

    .venv/bin/python benchmarks/recording_size.py [--turns 50] [--seed 1]

Prints the sizes and the ratio store/dump; exits 1 when the ratio is above the 0.1 target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mitmproxy import http, io
from mitmproxy.test import tflow, tutils

from gatehouse.recording.journal import Journal
from gatehouse.recording.records import ExchangeInput, RequestInput, ResponseInput, build_record
from gatehouse.recording.sessions import SessionTracker
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.spool import Spool
from gatehouse.recording.stores import LocalStore
from gatehouse.recording.uploader import Uploader

TARGET = 0.1
WORDS = (
    "the a file function test error value return import class config build run check path module "
    "request response token stream record store chain hash gateway policy session message tool user "
    "assistant system model output input result line code change update fix add remove"
).split()


def text(rng: random.Random, n_chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < n_chars:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_chars]


def system_and_tools(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system = [
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
        {"type": "text", "text": text(rng, 15_000), "cache_control": {"type": "ephemeral"}},
    ]
    names = [
        "Task",
        "Bash",
        "Glob",
        "Grep",
        "LS",
        "ExitPlanMode",
        "Read",
        "Edit",
        "MultiEdit",
        "Write",
        "NotebookEdit",
        "WebFetch",
        "TodoWrite",
        "WebSearch",
        "BashOutput",
        "KillShell",
        "SlashCommand",
    ]
    tools = []
    for name in names:
        props = {f"param_{i}": {"type": "string", "description": text(rng, 300)} for i in range(4)}
        tools.append(
            {
                "name": name,
                "description": text(rng, 2_400),
                "input_schema": {
                    "type": "object",
                    "properties": props,
                    "required": ["param_0"],
                    "additionalProperties": False,
                    "$schema": "http://json-schema.org/draft-07/schema#",
                },
            }
        )
    return system, tools


def sse(message: dict[str, Any]) -> bytes:
    def ev(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    start = {k: v for k, v in message.items() if k != "content"}
    start.update(
        content=[], stop_reason=None, usage={"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}
    )
    parts = [ev("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            parts.append(
                ev(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                )
            )
            t = block["text"]
            for j in range(0, len(t), 40):  # ~40 characters per delta, as the API sends
                parts.append(
                    ev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "text_delta", "text": t[j : j + 40]},
                        },
                    )
                )
        else:
            parts.append(
                ev(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": {**block, "input": {}}},
                )
            )
            js = json.dumps(block["input"])
            for j in range(0, len(js), 40):
                parts.append(
                    ev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": js[j : j + 40]},
                        },
                    )
                )
        parts.append(ev("content_block_stop", {"type": "content_block_stop", "index": i}))
    parts.append(
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
    )
    parts.append(ev("message_stop", {"type": "message_stop"}))
    return "".join(parts).encode()


def session(
    turns: int, seed: int
) -> list[tuple[list[tuple[str, str]], bytes, list[tuple[str, str]], bytes, dict[str, Any]]]:
    """(request headers, request body, response headers, SSE body, message) per turn."""
    rng = random.Random(seed)
    system, tools = system_and_tools(rng)
    convo: list[dict[str, Any]] = []
    out = []
    tool_id = None
    for turn in range(turns):
        if tool_id is None:
            user: dict[str, Any] = {"role": "user", "content": [{"type": "text", "text": text(rng, 300)}]}
        else:
            size = rng.choice([200, 600, 1_500, 4_000, 12_000])  # command output ... a file read
            user = {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_id, "content": text(rng, size), "is_error": False}
                ],
            }
        # Claude Code marks the newest message for prompt caching; the mark moves on next turn.
        marked = json.loads(json.dumps(user))
        marked["content"][-1]["cache_control"] = {"type": "ephemeral"}
        body = {
            "model": "claude-sonnet-4-5-20250929",
            "max_tokens": 32000,
            "stream": True,
            "system": system,
            "tools": tools,
            "messages": convo + [marked],
            "metadata": {
                "user_id": json.dumps(
                    {"device_id": "d" * 64, "account_uuid": "acc-uuid", "session_id": "6f1c0d2e-session"}
                )
            },
            "temperature": 1,
        }
        convo.append(user)
        tool_id = f"toolu_{turn:04d}{rng.getrandbits(48):012x}"
        message = {
            "id": f"msg_{turn:04d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [
                {"type": "text", "text": text(rng, rng.randint(100, 800))},
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": rng.choice(["Bash", "Read", "Edit", "Grep"]),
                    "input": {"command": text(rng, rng.randint(30, 300))},
                },
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 20_000 + 900 * turn,
                "output_tokens": 300,
                "cache_read_input_tokens": 19_000 + 800 * turn,
                "cache_creation_input_tokens": 900,
            },
        }
        convo.append({"role": "assistant", "content": message["content"]})
        req_headers = [
            ("content-type", "application/json"),
            ("user-agent", "claude-cli/2.0.14 (external, cli)"),
            ("x-app", "cli"),
            ("anthropic-version", "2023-06-01"),
            (
                "anthropic-beta",
                "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
            ),
            ("x-claude-code-session-id", "6f1c0d2e-session"),
            ("x-stainless-lang", "js"),
            ("x-stainless-package-version", "0.60.0"),
            ("x-stainless-retry-count", "0"),
            ("x-api-key", "sk-ant-api03-" + "x" * 95),
            ("accept", "application/json"),
        ]
        resp_headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("request-id", f"req_{turn:024d}"),
            ("anthropic-ratelimit-input-tokens-remaining", "400000"),
            ("anthropic-organization-id", "org-uuid"),
            ("cache-control", "no-cache"),
        ]
        out.append((req_headers, json.dumps(body).encode(), resp_headers, sse(message), message))
    return out


def masker_or_none() -> Any:
    try:
        from gatehouse.masking.config import parse_masking
        from gatehouse.masking.masker import Masker
    except ImportError:
        return None
    return Masker(parse_masking(None), b"benchmark-fingerprint-key-000000")


def tree_size(root: Path) -> tuple[int, int, int]:
    """(logical bytes, allocated bytes, files)."""
    logical = allocated = files = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            logical += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return logical, allocated, files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    traffic = session(args.turns, args.seed)
    wire = sum(len(req) + len(resp) for _, req, _, resp, _ in traffic)

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        # -- mitmproxy's own dump of the same traffic ----------------------------------------
        dump = tmpdir / "flows.mitm"
        with open(dump, "wb") as fo:
            writer = io.FlowWriter(fo)
            for i, (rh, rb, sh, sb, _) in enumerate(traffic):
                req = tutils.treq(
                    method=b"POST",
                    scheme=b"https",
                    host="api.anthropic.com",
                    port=443,
                    path=b"/v1/messages?beta=true",
                    headers=http.Headers([(k.encode(), v.encode()) for k, v in rh]),
                    content=rb,
                    timestamp_start=1000.0 + i,
                    timestamp_end=1000.1 + i,
                )
                resp = tutils.tresp(
                    headers=http.Headers([(k.encode(), v.encode()) for k, v in sh]),
                    content=sb,
                    timestamp_start=1001.0 + i,
                    timestamp_end=1005.0 + i,
                )
                writer.add(tflow.tflow(req=req, resp=resp))
        dump_bytes = dump.stat().st_size

        # -- Gatehouse: records + blobs through the real write path --------------------------
        store = LocalStore(tmpdir / "store")
        sp = Spool(tmpdir / "spool")
        journal = Journal(
            sp, SigningKey.generate(), gateway_version="bench", policy_sha256="0" * 64, retention_days=None
        )
        uploader = Uploader(sp, store, retention_days=None, journal=journal)
        masker = masker_or_none()
        tracker = SessionTracker()
        t0 = time.perf_counter()
        for i, (rh, rb, sh, sb, _) in enumerate(traffic):
            inp = ExchangeInput(
                kind="exchange",
                exchange_id=f"gx_{i:04d}",
                request=RequestInput("POST", "https", "api.anthropic.com", 443, "/v1/messages?beta=true", rh, rb),
                response=ResponseInput(200, sh, sb),
                identity={
                    "issuer": "https://idp.example",
                    "subject": "alice",
                    "email": "alice@example.com",
                    "groups": ["eng"],
                    "token_id": "jti",
                },
                decisions=[{"stage": "access", "action": "allow", "reason": "group eng", "at": 1000.0 + i}],
                request_at=1000.0 + i,
                first_byte_at=1001.0 + i,
                end_at=1005.0 + i,
            )
            built = build_record(inp, masker=masker, gateway_version="bench", policy_sha256="0" * 64, tracker=tracker)
            journal.append(built)
        journal.checkpoint()
        uploader.upload_pending()
        elapsed = time.perf_counter() - t0
        logical, allocated, files = tree_size(tmpdir / "store")
        rec_bytes = tree_size(tmpdir / "store" / "records")[0]
        blob_bytes = tree_size(tmpdir / "store" / "blobs")[0]

    ratio = logical / dump_bytes
    print(
        f"session: {args.turns} turns, {wire / 1e6:.2f} MB of request+response bodies on the wire "
        f"(first request {len(traffic[0][1]) / 1e3:.1f} kB, last {len(traffic[-1][1]) / 1e3:.1f} kB)"
    )
    print(f"mitmproxy flow dump (FlowWriter): {dump_bytes:>12,} bytes")
    print(
        f"gatehouse store:                  {logical:>12,} bytes in {files} files "
        f"(records {rec_bytes:,}, blobs {blob_bytes:,}; {allocated:,} bytes allocated on this file system)"
    )
    print(
        f"masking: {'on (built-in rules)' if masker else 'off (masker not available)'}; "
        f"build+sign+spool+upload: {elapsed / args.turns * 1000:.1f} ms per exchange"
    )
    print(f"ratio store/dump: {ratio:.4f} (target <= {TARGET}); allocated/dump: {allocated / dump_bytes:.4f}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
