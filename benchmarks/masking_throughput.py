"""Masking throughput and accuracy, measured against detect-secrets in the same run.

    .venv/bin/python benchmarks/masking_throughput.py [--size-mb 1] [--repeat 7]

Prints:
- masking a ~1 MB Claude Code-shaped /v1/messages request (system prompt, tool definitions,
  many turns with code, logs and diffs as tool results) with the full built-in pack:
  `Masker.mask_request` on the parsed body, the whole request path (JSON parse, mask,
  re-serialise), and the bare text scan; target >= 50 MB/s on one core;
- detect-secrets (default plugins) over the same text, and the throughput ratio;
- recall and false-positive rate of both on the labelled corpus (tests/fixtures/corpus);
- the streaming pipeline: a streamed response in small text deltas.

detect-secrets is a benchmark-only dependency: `.venv/bin/pip install detect-secrets`.
Without it, its figures are skipped.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatehouse.masking.config import parse_masking  # noqa: E402
from gatehouse.masking.masker import Masker  # noqa: E402
from gatehouse.wire.pipeline import SsePipeline  # noqa: E402
from gatehouse.wire.sse import encode_event  # noqa: E402

CORPUS = REPO / "tests" / "fixtures" / "corpus" / "secrets-dev.jsonl"

# Secrets the generated conversation leaks, as a developer's session does now and then.
# Built from pieces so that this file does not itself look like it holds credentials.
LEAKS = [
    "AWS_ACCESS_KEY_ID=" + "AKIA" + "QX7PZ2LMN4RT5VWY",
    "aws_secret_access_key = " + "kuvqdt7s8Stqcbnr3yBd" + "GBLEPH1qhT61qtc4xatw",
    "DATABASE_URL=postgres://app:" + "may8T76FLKjy1j8rcK" + "@db.internal:5432/orders",
    "GITHUB_TOKEN=" + "ghp_" + "DZeV7G5IfQHeVVEqZe2qpUWnoVPDF2yeE6Rs",
]


# ----------------------------------------------------------------------------------------
# A Claude Code-shaped request
# ----------------------------------------------------------------------------------------


def _ident(rng: random.Random) -> str:
    return rng.choice(
        [
            "user",
            "order",
            "invoice",
            "session",
            "payload",
            "cache",
            "item",
            "client",
            "config",
            "result",
            "handler",
            "request",
            "response",
            "token",
            "account",
            "report",
        ]
    ) + rng.choice(["", "_id", "_map", "_list", "_count", "_info", "_data", "s"])


def _code_file(rng: random.Random, lines: int) -> str:
    out = [
        '"""Module docstring: services for the orders API."""',
        "",
        "from __future__ import annotations",
        "",
        "import json",
        "import logging",
        "from dataclasses import dataclass",
        "",
        "log = logging.getLogger(__name__)",
        "",
    ]
    while len(out) < lines:
        name = _ident(rng)
        out += [
            "@dataclass",
            f"class {name.title().replace('_', '')}:",
            f"    {_ident(rng)}: str",
            f"    {_ident(rng)}: int = {rng.randint(0, 999)}",
            "",
            f"    def load_{name}(self, {_ident(rng)}: dict[str, object]) -> list[str]:",
            f'        """Return the {name} entries that match the filter."""',
            f"        out = [k for k, v in self.{_ident(rng)}.items() if v is not None]",
            f"        if len(out) > {rng.randint(2, 90)}:",
            f"            log.warning('too many %s: %d', {name!r}, len(out))",
            "        token = self.session.headers.get('Authorization')",
            "        return sorted(out)",
            "",
        ]
    return "\n".join(out[:lines])


def _log_lines(rng: random.Random, lines: int) -> str:
    out = []
    for _ in range(lines):
        kind = rng.random()
        ts = f"2026-11-02T10:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z"
        if kind < 0.4:
            rid = "".join(rng.choices("0123456789abcdef", k=32))
            out.append(
                f"{ts} INFO  http request_id={rid} method=POST path=/v1/orders status=200 "
                f"duration_ms={rng.randint(1, 900)} bytes={rng.randint(100, 99999)}"
            )
        elif kind < 0.6:
            out.append(f"{ts} DEBUG cache hit key=orders:{rng.randint(1, 10**6)} ttl={rng.randint(1, 3600)}s")
        elif kind < 0.75:
            out.append(
                f"tests/test_{_ident(rng)}.py::test_{_ident(rng)}_{rng.randint(1, 99)} "
                f"{rng.choice(['PASSED', 'PASSED', 'FAILED', 'SKIPPED'])} [{rng.randint(1, 100)}%]"
            )
        elif kind < 0.85:
            out.append(
                f"{ts} WARN  retrying upstream call attempt={rng.randint(1, 5)} error='connection reset by peer'"
            )
        else:
            sha = "".join(rng.choices("0123456789abcdef", k=40))
            out.append(f"commit {sha} Author: Dev <dev@example.com> fix flaky test in {_ident(rng)}")
    return "\n".join(out)


def _diff(rng: random.Random, hunks: int) -> str:
    out = ["diff --git a/app/orders.py b/app/orders.py", "--- a/app/orders.py", "+++ b/app/orders.py"]
    for _ in range(hunks):
        a = rng.randint(1, 900)
        out.append(f"@@ -{a},7 +{a},8 @@ def handle(self, request):")
        for _ in range(6):
            out.append(rng.choice(["-", "+", " "]) + f"        {_ident(rng)} = self.{_ident(rng)}({_ident(rng)})")
    return "\n".join(out)


def _prose(rng: random.Random, words: int) -> str:
    vocab = (
        "the a to of and in that is for it with as on be this by are or from not at which code test "
        "function request api token key secret password configure deploy service error retry cache"
    ).split()
    return " ".join(rng.choice(vocab) for _ in range(words)).capitalize() + "."


def claude_code_request(size_bytes: int = 1_000_000, seed: int = 7, leaks: bool = True) -> dict[str, Any]:
    """A /v1/messages body shaped like Claude Code's: big system prompt and tool list, then
    turns of prompts, assistant text with tool calls, and tool results (code, logs, diffs)."""
    rng = random.Random(seed)
    tools = []
    for name in [
        "Bash",
        "Read",
        "Edit",
        "Write",
        "Glob",
        "Grep",
        "WebFetch",
        "WebSearch",
        "NotebookEdit",
        "Task",
        "TodoWrite",
        "ExitPlanMode",
        "BashOutput",
        "KillShell",
        "SlashCommand",
        "mcp__github__create_issue",
        "mcp__github__search_code",
    ]:
        tools.append(
            {
                "name": name,
                "description": _prose(rng, 450),
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "description": _prose(rng, 40)},
                        "file_path": {"type": "string", "description": _prose(rng, 25)},
                        "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
                    },
                    "required": ["command"],
                    "additionalProperties": False,
                },
            }
        )
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": True,
        "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "s" * 36})},
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "text",
                "text": "\n\n".join(_prose(rng, 120) for _ in range(22)),
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "tools": tools,
        "messages": [],
    }
    msgs: list[dict[str, Any]] = body["messages"]
    msgs.append({"role": "user", "content": [{"type": "text", "text": _prose(rng, 60)}]})
    leak_at = {5: 0, 17: 1, 29: 2, 41: 3} if leaks else {}
    turn = 0
    while len(json.dumps(body)) < size_bytes:
        tid = "toolu_" + "".join(rng.choices(string.ascii_letters + string.digits, k=24))
        tool = rng.choice(["Read", "Bash", "Bash", "Grep", "Edit"])
        inp: dict[str, Any]
        if tool == "Read":
            inp = {"file_path": f"/home/dev/app/{_ident(rng)}.py"}
            result = _code_file(rng, rng.randint(80, 260))
        elif tool == "Bash":
            inp = {
                "command": rng.choice(["pytest -q tests/", "git log -n 30", "tail -n 200 logs/app.log", "git diff"]),
                "description": _prose(rng, 8),
            }
            result = (
                _diff(rng, rng.randint(5, 20))
                if inp["command"] == "git diff"
                else _log_lines(rng, rng.randint(40, 200))
            )
        elif tool == "Grep":
            inp = {"pattern": _ident(rng), "path": "app/"}
            result = "\n".join(
                f"app/{_ident(rng)}.py:{rng.randint(1, 900)}:    {_ident(rng)} = {_ident(rng)}()"
                for _ in range(rng.randint(10, 60))
            )
        else:
            inp = {
                "file_path": f"/home/dev/app/{_ident(rng)}.py",
                "old_string": _code_file(rng, 6),
                "new_string": _code_file(rng, 7),
            }
            result = "The file has been updated."
        if turn in leak_at:
            result = result + "\n" + LEAKS[leak_at[turn]] + "\n"
        assistant: list[dict[str, Any]] = []
        if rng.random() < 0.3:
            assistant.append(
                {
                    "type": "thinking",
                    "thinking": _prose(rng, 80),
                    "signature": "".join(rng.choices(string.ascii_letters + string.digits + "+/", k=400)),
                }
            )
        assistant.append({"type": "text", "text": _prose(rng, rng.randint(10, 60))})
        assistant.append({"type": "tool_use", "id": tid, "name": tool, "input": inp})
        msgs.append({"role": "assistant", "content": assistant})
        msgs.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tid, "content": result},
                    *([{"type": "text", "text": _prose(rng, 30)}] if rng.random() < 0.2 else []),
                ],
            }
        )
        turn += 1
    return body


def maskable_text(masker: Masker, body: dict[str, Any]) -> str:
    """The texts `mask_request` scans, joined by newlines (what detect-secrets gets too)."""
    texts: list[str] = []

    class Collect:  # a scanner stand-in that records what it is asked to scan
        rules = masker.policy.rules

        def scan(self, text: str, pos: int = 0) -> list[Any]:
            texts.append(text)
            return []

    probe = Masker(masker.policy, b"x" * 32)
    probe.scanner = Collect()  # type: ignore[assignment]
    probe.mask_request(json.loads(json.dumps(body)))
    return "\n".join(texts)


# ----------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------


def timeit(fn: Callable[[], Any], repeat: int, setup: Callable[[], Any] | None = None) -> tuple[float, float]:
    """(best, median) seconds of `repeat` runs; `setup()`'s result is passed to `fn` untimed."""
    times = []
    for _ in range(repeat):
        arg = setup() if setup else None
        t = time.perf_counter()
        fn(arg) if setup else fn()  # type: ignore[call-arg]
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def survives(secret: str, out: str) -> bool:
    if len(secret) <= 12:
        return secret in out
    return any(secret[i : i + 12] in out for i in range(len(secret) - 11))


def score(rows: list[dict[str, Any]], mask: Callable[[str], str]) -> tuple[float, float, int, int]:
    masked = total = fp = negatives = 0
    for r in rows:
        out = mask(r["text"])
        if r["kind"] == "negative":
            negatives += 1
            fp += out != r["text"]
        else:
            for s in r["secrets"]:
                total += 1
                masked += not survives(s, out)
    return masked / max(total, 1), fp / max(negatives, 1), total, negatives


def detect_secrets_tools() -> Any:
    try:
        from detect_secrets.core.scan import scan_file
        from detect_secrets.settings import default_settings
    except ImportError:
        return None
    return scan_file, default_settings


def ds_scan_text(tools: Any, text: str, folder: Path) -> list[tuple[int, str]]:
    """detect-secrets' default plugins over `text` as a file: (line number, secret value)."""
    scan_file, default_settings = tools
    path = folder / "conversation.txt"
    path.write_text(text)
    with default_settings():
        return [(s.line_number, s.secret_value or "") for s in scan_file(str(path))]


def ds_mask(tools: Any, text: str, folder: Path) -> str:
    lines = text.split("\n")
    for n, value in ds_scan_text(tools, text, folder):
        if value and 0 < n <= len(lines):
            lines[n - 1] = lines[n - 1].replace(value, "[MASKED]")
    return "\n".join(lines)


def streamed_response(text_chars: int, seed: int = 3) -> bytes:
    rng = random.Random(seed)
    text = _code_file(rng, 10_000)[:text_chars]
    events = [
        encode_event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bench",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 1, "output_tokens": 1},
                },
            },
        ),
        encode_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    i = 0
    while i < len(text):
        n = rng.randint(2, 8)  # tokens are a few characters
        events.append(
            encode_event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[i : i + n]}},
            )
        )
        i += n
    events += [
        encode_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        encode_event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 999}},
        ),
        encode_event("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(events)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-detect-secrets", action="store_true")
    args = ap.parse_args()

    policy = parse_masking(None)
    masker = Masker(policy, b"benchmark-fingerprint-key-000000")
    body = claude_code_request(int(args.size_mb * 1_000_000))
    raw = json.dumps(body).encode()
    mb = len(raw) / 1e6
    text = maskable_text(masker, body)
    print(
        f"request: {mb:.2f} MB JSON, {len(body['messages'])} messages, {len(body['tools'])} tools; "
        f"{len(text) / 1e6:.2f} MB of maskable text; rules: {len(policy.rules)} (built-in pack)"
    )

    found = masker.mask_request(json.loads(raw))
    print(f"secrets masked in it: {len(found)} ({', '.join(sorted({f.rule for f in found}))})")

    best, med = timeit(lambda b: masker.mask_request(b), args.repeat, setup=lambda: json.loads(raw))
    print(
        f"mask_request (parsed body):      {best * 1e3:7.1f} ms best, {med * 1e3:7.1f} ms median  "
        f"-> {mb / best:6.0f} MB/s (target >= 50)"
    )

    def whole() -> bytes:
        b = json.loads(raw)
        return json.dumps(b, ensure_ascii=False, separators=(",", ":")).encode() if masker.mask_request(b) else raw

    best_e2e, med_e2e = timeit(whole, args.repeat)
    print(
        f"request path (parse+mask+dump):  {best_e2e * 1e3:7.1f} ms best, {med_e2e * 1e3:7.1f} ms median  "
        f"-> {mb / best_e2e:6.0f} MB/s"
    )

    tmb = len(text.encode()) / 1e6
    best_t, _ = timeit(lambda: masker.mask_text(text), args.repeat)
    print(
        f"mask_text (one joined text):     {best_t * 1e3:7.1f} ms best                    -> {tmb / best_t:6.0f} MB/s"
    )

    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()] if CORPUS.exists() else []
    if rows:
        recall, fpr, n, neg = score(rows, lambda t: masker.mask_text(t)[0])
        print(f"gatehouse on corpus: recall {recall:.4f} ({n} secrets), false positives {fpr:.4f} ({neg} negatives)")
    else:
        print(f"corpus not found at {CORPUS}: accuracy figures skipped")

    tools = None if args.no_detect_secrets else detect_secrets_tools()
    if tools is None:
        print("detect-secrets: not installed (.venv/bin/pip install detect-secrets); comparison skipped")
    else:
        with tempfile.TemporaryDirectory() as d:
            folder = Path(d)
            ds_best, _ = timeit(lambda: ds_scan_text(tools, text, folder), max(1, min(3, args.repeat)))
            print(
                f"detect-secrets (default plugins) on the same text: {ds_best * 1e3:7.0f} ms -> {tmb / ds_best:6.2f} MB/s"
            )
            # Same text: detect-secrets scans only it; the request path also parses and re-serialises JSON.
            print(
                f"throughput ratio gatehouse/detect-secrets on the same text: mask_text {ds_best / best_t:.0f}x, "
                f"whole request path {ds_best / best_e2e:.0f}x"
            )
            if rows:
                recall_d, fpr_d, _, _ = score(rows, lambda t: ds_mask(tools, t, folder))
                print(f"detect-secrets on corpus: recall {recall_d:.4f}, false positives {fpr_d:.4f}")

    sse = streamed_response(200_000)
    smb = len(sse) / 1e6

    def stream() -> None:
        pipe = SsePipeline(masker)
        for i in range(0, len(sse), 1400):  # TCP-segment-sized chunks
            pipe(sse[i : i + 1400])
        pipe(b"")

    s_best, _ = timeit(stream, max(1, args.repeat // 2))
    deltas = sse.count(b"text_delta")
    print(
        f"streaming pipeline: {smb:.2f} MB of SSE, {deltas} text deltas in {s_best * 1e3:.0f} ms "
        f"-> {smb / s_best:.1f} MB/s, {s_best / deltas * 1e6:.0f} us per delta"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
