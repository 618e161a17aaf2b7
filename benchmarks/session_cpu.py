"""Gateway CPU per exchange across a Claude Code-shaped session, against bare mitmdump.

    .venv/bin/python benchmarks/session_cpu.py [--turns 50] [--final-kb 1000] [--buffered] [--repeat 1]

Claude Code resends the whole conversation every turn. The session here does the same: turn 1
is the system prompt, the tools and a first message (~75 KB); every turn appends the agent's
next tool calls and their results, until the last turn's request is about `--final-kb` KB. Each
turn is sent to both paths (bare mitmdump, and the full gateway: identity with the dev issuer's
token, masking, recording to a local store; see `buffered_latency.py`), alternating, and the CPU
time the proxy process used for it is read from /proc before and after (after a pause, so that
the recorder's uploader has moved the record to the store).

Prints the CPU per exchange turn by turn, then the means of the first and last ten turns, their
ratio (growth), and the ratio gateway/bare. Issue 12's goal: the gateway's CPU per exchange
stays flat over the session (growth near bare mitmdump's, which only copies bytes).
`--repeat N` runs N sessions (each with its own session id) and keeps, per turn, the median.

CPU figures on a shared machine are noisy; compare the two paths from one run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from buffered_latency import Bench, cpu_seconds, post
from payloads import system_and_tools, turn

SETTLE_S = 0.25


def session_bodies(turns: int, final_bytes: int, stream: bool, seed: int = 11) -> list[bytes]:
    """The request bodies of one session: each the previous one's messages plus new turns."""
    rng = random.Random(seed)
    system, tools = system_and_tools(rng)
    head = {"model": "claude-sonnet-4-6", "max_tokens": 32000, "stream": stream, "system": system, "tools": tools}
    messages = [{"role": "user", "content": [{"type": "text", "text": "Fix the failing test in src/."}]}]
    first = len(json.dumps({**head, "messages": messages}))
    out: list[bytes] = []
    i = 0
    for k in range(turns):
        target = first + (final_bytes - first) * k / max(turns - 1, 1)
        while len(json.dumps({**head, "messages": messages})) < target:
            messages = messages + turn(rng, i)
            i += 1
        out.append(json.dumps({**head, "messages": messages}).encode())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=50)
    ap.add_argument("--final-kb", type=int, default=1000)
    ap.add_argument("--buffered", action="store_true", help='"stream": false (default: streamed, as Claude Code)')
    ap.add_argument("--repeat", type=int, default=1, help="sessions to run; per turn, the median is kept")
    args = ap.parse_args()
    stream = not args.buffered

    bodies = session_bodies(args.turns, args.final_kb * 1000, stream)
    print(
        f"session: {len(bodies)} turns, {len(bodies[0]) // 1000} KB -> {len(bodies[-1]) // 1000} KB, "
        f"stream={stream}, {args.repeat} session(s)"
    )
    cpu: dict[str, list[list[float]]] = {"bare": [[] for _ in bodies], "gateway": [[] for _ in bodies]}
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), stream_baseline=stream)
        try:
            paths = [bench.bare, bench.full]
            clients = {p.name: p.client() for p in paths}
            # Warm-up: TLS set-up and certificates, a first unrelated exchange.
            for p in paths:
                post(clients[p.name], p, bodies[0], stream, {"x-claude-code-session-id": str(uuid.uuid4())})
            time.sleep(SETTLE_S)
            for r in range(args.repeat):
                sid = {"x-claude-code-session-id": str(uuid.uuid4())}
                for k, body in enumerate(bodies):
                    order = paths if (k + r) % 2 == 0 else paths[::-1]
                    for p in order:
                        before = cpu_seconds(p.pid)
                        post(clients[p.name], p, body, stream, sid)
                        time.sleep(SETTLE_S)
                        cpu[p.name][k].append(cpu_seconds(p.pid) - before)
            for c in clients.values():
                c.close()
        finally:
            bench.close()

    per_turn = {name: [statistics.median(v) * 1000 for v in turns] for name, turns in cpu.items()}
    print(f"\n{'turn':>4s} {'KB':>6s} {'bare ms':>8s} {'gateway ms':>10s} {'ratio':>6s}")
    for k, body in enumerate(bodies):
        b, g = per_turn["bare"][k], per_turn["gateway"][k]
        print(f"{k + 1:4d} {len(body) // 1000:6d} {b:8.2f} {g:10.2f} {g / b if b else float('nan'):6.2f}")
    n = min(10, len(bodies) // 2)
    print()
    for name, vals in per_turn.items():
        first, last = statistics.mean(vals[:n]), statistics.mean(vals[-n:])
        total = sum(vals)
        print(
            f"{name:8s} CPU per exchange: first {n} turns {first:6.2f} ms, last {n} {last:6.2f} ms, "
            f"growth {last / first:.2f}x; session total {total:.0f} ms"
        )
    b, g = per_turn["bare"], per_turn["gateway"]
    print(
        f"gateway/bare: first {n} turns {statistics.mean(g[:n]) / statistics.mean(b[:n]):.2f}x, "
        f"last {n} {statistics.mean(g[-n:]) / statistics.mean(b[-n:]):.2f}x, session {sum(g) / sum(b):.2f}x; "
        f"gateway - bare, last {n} turns: {statistics.mean(g[-n:]) - statistics.mean(b[-n:]):.2f} ms per exchange"
    )


if __name__ == "__main__":
    main()
