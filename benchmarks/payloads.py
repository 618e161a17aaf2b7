"""Claude Code-shaped request bodies for benchmarks: a long system prompt, tool definitions,
and turns of code and logs read by tools. Deterministic for a given size."""

from __future__ import annotations

import json
import random

TOOLS = ["Bash", "Read", "Edit", "Write", "Glob", "Grep", "WebFetch", "Task", "TodoWrite", "NotebookEdit"]


def _prose(rng: random.Random, words: int) -> str:
    vocab = (
        "the agent must read files before editing them and prefer small focused changes that keep "
        "tests green while explaining each step to the user clearly and concisely"
    ).split()
    return " ".join(rng.choice(vocab) for _ in range(words))


def _code(rng: random.Random, lines: int) -> str:
    out = []
    for i in range(lines):
        name = f"handler_{rng.randrange(10_000)}"
        out.append(f"    def {name}(self, request, retries={rng.randrange(5)}):  # line {i}")
        out.append(f"        return self.client.post('/v1/items/{rng.randrange(999)}', json={{'id': {i}}})")
    return "\n".join(out)


def _log(rng: random.Random, lines: int) -> str:
    levels = ["INFO", "DEBUG", "WARN", "ERROR"]
    return "\n".join(
        f"2026-11-28T12:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z {rng.choice(levels)} "
        f"worker-{rng.randrange(8)} request_id=req_{rng.getrandbits(64):016x} took {rng.randrange(900)}ms"
        for _ in range(lines)
    )


def system_and_tools(rng: random.Random) -> tuple[list[dict], list[dict]]:
    system = [
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
        {"type": "text", "text": _prose(rng, 4000)},
    ]
    tools = [
        {
            "name": t,
            "description": _prose(rng, 600),
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}, "file_path": {"type": "string"}},
            },
        }
        for t in TOOLS
    ]
    return system, tools


def turn(rng: random.Random, i: int) -> list[dict]:
    """One agent turn: the assistant calls a tool, the user message carries its result."""
    tool_id = f"toolu_{i:04d}{rng.getrandbits(48):012x}"
    kind = rng.choice(["code", "log"])
    result = _code(rng, 60) if kind == "code" else _log(rng, 80)
    return [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": _prose(rng, 40)},
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": "Bash" if kind == "log" else "Read",
                    "input": {"command": f"tail -n 80 logs/app-{i}.log"}
                    if kind == "log"
                    else {"file_path": f"src/mod_{i}.py"},
                },
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": result}]},
    ]


def claude_code_request(
    target_bytes: int = 200_000, *, stream: bool = True, seed: int = 7, model: str = "claude-sonnet-4-6"
) -> dict:
    """A request body of about `target_bytes` (at least the system prompt and tools, ~75 KB)."""
    rng = random.Random(seed)
    system, tools = system_and_tools(rng)
    messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": "Fix the failing test in src/."}]}]
    body = {
        "model": model,
        "max_tokens": 32000,
        "stream": stream,
        "system": system,
        "tools": tools,
        "messages": messages,
        "metadata": {"user_id": json.dumps({"session_id": "bench-session"})},
    }
    i = 0
    while len(json.dumps(body)) < target_bytes:
        messages.extend(turn(rng, i))
        i += 1
    messages.append({"role": "user", "content": [{"type": "text", "text": "Continue."}]})
    return body
