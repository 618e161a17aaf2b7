"""Throughput and CPU per exchange at 1, 8 and 32 concurrent clients, against bare mitmdump,
buffered and streamed, with the event-loop stalls of each, measured in one run.

    .venv/bin/python benchmarks/throughput.py [--kb 200] [--requests 64] [--clients 1,8,32] [--attribute]

Each client posts Claude Code-shaped requests (`--kb` KB, each ending with a turn of its own)
back to back, `--requests` per client count (at least 4 per client), to:

  bare     mitmdump with no addons (buffered), or with `flow.response.stream = True` set in
           `responseheaders` (streamed): ../shared/DESIGN.md, "Facts measured on this machine"
  gateway  the full Gatehouse stack: identity (dev issuer's token), masking, recording to a
           local store

in rounds that alternate the paths. For each it prints exchanges per second, the proxy
process's CPU per exchange (/proc, all threads), and the event loop's stalls: a probe loaded
into both processes (`-s`) wakes every millisecond and notes how late it woke; a stall is a
wake-up more than 5 ms late ("max ms*": the longest stall the process has had so far). Stalls in the gateway that bare mitmdump does not have come from
gateway code. `--attribute` also runs both loops in asyncio debug mode (slower), which names
the callback or task step of every stall above 5 ms; the names seen most are printed.

Timings on a shared machine are noisy: compare ratios from one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from buffered_latency import HEADERS, Bench, Path_, cpu_seconds, with_new_turn
from payloads import claude_code_request

STALL_MS = 5.0

PROBE = """
import asyncio, json, logging, re, time
OUT = {out!r}
DEBUG = {debug!r}
stats = {{"stalls": 0, "max_ms": 0.0, "wakeups": 0, "slow": {{}}}}

class _Slow(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if "took" not in msg:
            return
        m = re.search(r"coro=<([^>( ]+)", msg) or re.search(r"<(?:Handle|TimerHandle) ([^ (>]+)", msg)
        name = m.group(1) if m else msg[:80]
        stats["slow"][name] = stats["slow"].get(name, 0) + 1

class GhStallProbe:
    def running(self):
        loop = asyncio.get_running_loop()
        if DEBUG:
            loop.set_debug(True)
            loop.slow_callback_duration = {stall_s!r}
            logging.getLogger("asyncio").addHandler(_Slow())
        loop.create_task(self.tick())

    async def tick(self):
        last_write = time.monotonic()
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.001)
            late = (time.monotonic() - t0 - 0.001) * 1000
            stats["wakeups"] += 1
            if late > {stall_ms!r}:
                stats["stalls"] += 1
                stats["max_ms"] = max(stats["max_ms"], late)
            if t0 - last_write > 0.25:
                last_write = t0
                with open(OUT + ".tmp", "w") as f:
                    json.dump(stats, f)
                import os
                os.replace(OUT + ".tmp", OUT)

addons = [GhStallProbe()]
"""


def probe_script(workdir: Path, name: str, debug: bool) -> tuple[list[str], Path]:
    out = workdir / f"stalls-{name}.json"
    script = workdir / f"probe_{name}.py"
    script.write_text(PROBE.format(out=str(out), debug=debug, stall_s=STALL_MS / 1000, stall_ms=STALL_MS))
    return ["-s", str(script)], out


def read_stalls(path: Path) -> dict:
    time.sleep(0.4)  # the probe writes every 250 ms
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"stalls": 0, "max_ms": 0.0, "wakeups": 0, "slow": {}}


async def run_clients(p: Path_, bodies: list[bytes], clients: int, total: int, stream: bool) -> float:
    """`total` exchanges by `clients` concurrent clients; returns the wall time."""
    next_i = 0

    async def worker(client) -> None:
        nonlocal next_i
        while next_i < total:
            i = next_i
            next_i += 1
            body = bodies[i % len(bodies)]
            if stream:
                async with client.stream("POST", p.url, content=body, headers=HEADERS) as r:
                    async for _ in r.aiter_bytes():
                        pass
            else:
                r = await client.post(p.url, content=body, headers=HEADERS)
            if r.status_code != 200:
                raise SystemExit(f"{p.name}: HTTP {r.status_code}")

    async with p.async_client() as client:
        # Warm-up: one connection per client.
        await asyncio.gather(*(client.post(p.url, content=bodies[0], headers=HEADERS) for _ in range(clients)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kb", type=int, default=200)
    ap.add_argument("--requests", type=int, default=64, help="exchanges per client count, path and mode")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    ap.add_argument("--attribute", action="store_true", help="asyncio debug mode: name what stalls")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]

    rng = random.Random(5)
    bodies = {}
    for stream in (False, True):
        base = claude_code_request(args.kb * 1000, stream=stream)
        bodies[stream] = [with_new_turn(base, rng, i) for i in range(max(args.requests, 4 * max(counts)))]
    print(f"payload: ~{len(bodies[False][0]) // 1000} KB, {len(bodies[False])} distinct bodies; clients {counts}")

    results: dict[tuple[str, bool, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gw_args, gw_out = probe_script(work, "gateway", args.attribute)
        bare_args, bare_out = probe_script(work, "bare", args.attribute)
        sbare_args, sbare_out = probe_script(work, "bare-stream", args.attribute)
        bench = Bench(work, gateway_args=gw_args, bare_args=bare_args)
        try:
            sbare = bench.start_bare(True, sbare_args, "bare-stream")
            outs = {"bare": bare_out, "bare-stream": sbare_out, "gateway": gw_out}
            for stream in (False, True):
                base = sbare if stream else bench.bare
                for c in counts:
                    total = max(args.requests, 4 * c)
                    for r in range(args.rounds):
                        order = [base, bench.full] if r % 2 == 0 else [bench.full, base]
                        for p in order:
                            before_stalls = read_stalls(outs[p.name])
                            cpu0 = cpu_seconds(p.pid)
                            wall = asyncio.run(run_clients(p, bodies[stream], c, total, stream))
                            cpu = cpu_seconds(p.pid) - cpu0
                            after = read_stalls(outs[p.name])
                            key = ("bare" if p is base else "gateway", stream, c)
                            acc = results.setdefault(key, {"n": 0, "wall": 0.0, "cpu": 0.0, "stalls": 0, "max": 0.0})
                            acc["n"] += total
                            acc["wall"] += wall
                            acc["cpu"] += cpu
                            acc["stalls"] += after["stalls"] - before_stalls["stalls"]
                            acc["max"] = max(
                                acc["max"], after["max_ms"] if after["stalls"] > before_stalls["stalls"] else 0
                            )
            slow = {name: read_stalls(out).get("slow", {}) for name, out in outs.items()}
        finally:
            bench.close()

    print(
        f"\n{'mode':9s} {'clients':>7s} {'path':8s} {'exch/s':>8s} {'CPU ms/exch':>12s} {'stalls>5ms':>10s} {'max ms*':>7s}"
    )
    for (name, stream, c), a in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        mode = "streamed" if stream else "buffered"
        print(
            f"{mode:9s} {c:7d} {name:8s} {a['n'] / a['wall']:8.1f} {a['cpu'] / a['n'] * 1000:12.2f} "
            f"{a['stalls']:10d} {a['max']:7.1f}"
        )
    print()
    for stream in (False, True):
        for c in counts:
            b, g = results[("bare", stream, c)], results[("gateway", stream, c)]
            mode = "streamed" if stream else "buffered"
            print(
                f"{mode:9s} {c:3d} clients: gateway/bare throughput {(g['n'] / g['wall']) / (b['n'] / b['wall']):.2f}x, "
                f"CPU per exchange {(g['cpu'] / g['n']) / (b['cpu'] / b['n']):.2f}x, "
                f"stalls > {STALL_MS:.0f} ms: gateway {g['stalls']} (max {g['max']:.1f} ms), bare {b['stalls']}"
            )
    if args.attribute:
        for name, counter in slow.items():
            top = Counter(counter).most_common(8)
            print(
                f"\nslow callbacks (> {STALL_MS:.0f} ms) in {name}: "
                + (", ".join(f"{k} x{v}" for k, v in top) or "none")
            )


if __name__ == "__main__":
    main()
