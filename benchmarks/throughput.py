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
wake-up more than 5 ms late ("max ms*": the longest stall the process has had so far), from
one long step or from several shorter ones in a row (many flows at once).

`--attribute` also puts every single event-loop step over 5 ms down to a garbage collection
that took most of it, or to where the loop was during it, sampled every millisecond: the
gateway hook (the outermost frame in the gatehouse package, such as `mitm/masking.py:request`)
or mitmproxy; and whether the loop's thread was running or mostly waiting (for the GIL while
a worker thread holds it, or for a core). A gateway hook running is gateway code holding the
loop. It sets a 1 ms GIL switch interval in both processes so that the sampler can run, which
changes the timings a little.

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
import asyncio, asyncio.events, collections, gc, json, os, sys, threading, time
OUT = {out!r}
ATTRIBUTE = {attribute!r}
STALL_S = {stall_s!r}
stats = {{"stalls": 0, "max_ms": 0.0, "wakeups": 0, "where": {{}}, "gc_long": 0, "gc_max_ms": 0.0}}

# --attribute: a sampler thread notes every millisecond where the event loop's thread is, and
# every loop step longer than STALL_S is put down to a garbage collection that took most of it,
# or to where most of its samples were: the outermost frame in the gatehouse package (the hook
# that ran), else "mitmproxy"; each split by the loop thread's CPU time in the step into
# running and mostly waiting (for the GIL or a core). The switch interval is cut to 1 ms so
# that the sampler gets the GIL during a long step.
_samples = collections.deque(maxlen=100000)
_steps = collections.deque(maxlen=20000)
_gcs = collections.deque(maxlen=20000)  # (start, end, generation) of each garbage collection
_gc_started = [0.0]
_NOT_HOOKS = ("wrapper", "async_wrapper")
_loop_thread = None
_GH = None


def _where(frame):
    found = None
    while frame is not None:
        name = frame.f_code.co_filename
        # Neither fail_closed's wrappers nor the patches to mitmproxy's own functions name a hook.
        if name.startswith(_GH) and frame.f_code.co_name not in _NOT_HOOKS and not name.endswith("patches.py"):
            found = name[len(_GH):] + ":" + frame.f_code.co_name
        frame = frame.f_back
    return found or "mitmproxy"


def _gc_timer(phase, info):
    if phase == "start":
        _gc_started[0] = time.perf_counter()
        return
    end = time.perf_counter()
    _gcs.append((_gc_started[0], end, info["generation"]))
    took = end - _gc_started[0]
    if took > STALL_S:  # in any thread: one in a worker holds the GIL all along
        stats["gc_long"] += 1
        stats["gc_max_ms"] = max(stats["gc_max_ms"], took * 1000)


def _sample():
    while True:
        time.sleep(0.001)
        frame = sys._current_frames().get(_loop_thread)
        if frame is not None:
            _samples.append((time.perf_counter(), _where(frame)))


def _attribute_steps():
    # Steps, samples and collections all come in time order (one loop thread): what ended
    # before a step began is done with, so each is looked at about once. Indexing, not
    # iterating: the sampler appends meanwhile.
    while _steps:
        a, b, cpu = _steps.popleft()
        while _samples and _samples[0][0] < a:
            _samples.popleft()
        while _gcs and _gcs[0][1] < a:
            _gcs.popleft()
        seen = collections.Counter()
        i = 0
        while i < len(_samples) and _samples[i][0] <= b:
            seen[_samples[i][1]] += 1
            i += 1
        collected = []
        i = 0
        while i < len(_gcs) and _gcs[i][0] < b:
            s, e, g = _gcs[i]
            collected.append((min(b, e) - max(a, s), g))
            i += 1
        if collected and sum(d for d, _ in collected) > (b - a) / 2:
            where = f"garbage collection (gen {{max(g for _, g in collected)}})"
        elif not seen:
            where = "unsampled"
        else:
            # The loop thread's CPU time in the step says whether it ran, or mostly waited for
            # the GIL (held by a worker thread) or for a core (taken by other processes).
            where = seen.most_common(1)[0][0] + (" (running)" if cpu > (b - a) / 2 else " (mostly waiting)")
        stats["where"][where] = stats["where"].get(where, 0) + 1


def _install():
    global _loop_thread, _GH
    import gatehouse
    _GH = os.path.dirname(gatehouse.__file__) + os.sep
    _loop_thread = threading.get_ident()
    sys.setswitchinterval(0.001)
    run = asyncio.events.Handle._run

    def timed(handle):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return run(handle)
        finally:
            t1 = time.perf_counter()
            if t1 - t0 > STALL_S:
                _steps.append((t0, t1, time.thread_time() - c0))

    asyncio.events.Handle._run = timed
    gc.callbacks.append(_gc_timer)
    threading.Thread(target=_sample, daemon=True).start()


class GhStallProbe:
    def running(self):
        if ATTRIBUTE:
            _install()
        asyncio.get_running_loop().create_task(self.tick())

    async def tick(self):
        last_write = time.monotonic()
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.001)
            late = (time.monotonic() - t0 - 0.001) * 1000
            stats["wakeups"] += 1
            if late > STALL_S * 1000:
                stats["stalls"] += 1
                stats["max_ms"] = max(stats["max_ms"], late)
            if t0 - last_write > 0.25:
                last_write = t0
                if ATTRIBUTE:
                    _attribute_steps()
                with open(OUT + ".tmp", "w") as f:
                    json.dump(stats, f)
                os.replace(OUT + ".tmp", OUT)

addons = [GhStallProbe()]
"""


def probe_script(workdir: Path, name: str, attribute: bool) -> tuple[list[str], Path]:
    out = workdir / f"stalls-{name}.json"
    script = workdir / f"probe_{name}.py"
    script.write_text(PROBE.format(out=str(out), attribute=attribute, stall_s=STALL_MS / 1000))
    return ["-s", str(script)], out


def read_stalls(path: Path) -> dict:
    time.sleep(0.4)  # the probe writes every 250 ms
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"stalls": 0, "max_ms": 0.0, "wakeups": 0, "where": {}, "gc_long": 0, "gc_max_ms": 0.0}


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
    ap.add_argument("--attribute", action="store_true", help="name where the loop was in each long step")
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
                            acc = results.setdefault(
                                key,
                                {
                                    "n": 0,
                                    "wall": 0.0,
                                    "cpu": 0.0,
                                    "stalls": 0,
                                    "max": 0.0,
                                    "where": Counter(),
                                    "gc_long": 0,
                                },
                            )
                            acc["n"] += total
                            acc["wall"] += wall
                            acc["cpu"] += cpu
                            acc["stalls"] += after["stalls"] - before_stalls["stalls"]
                            acc["max"] = max(
                                acc["max"], after["max_ms"] if after["stalls"] > before_stalls["stalls"] else 0
                            )
                            acc["where"] += Counter(after["where"]) - Counter(before_stalls["where"])
                            acc["gc_long"] += after["gc_long"] - before_stalls["gc_long"]
                            acc["gc_max"] = after["gc_max_ms"]
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
        print(f"\nevent-loop steps over {STALL_MS:.0f} ms, by where the loop was (most of the step's samples):")
        for (name, stream, c), a in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
            mode = "streamed" if stream else "buffered"
            top = ", ".join(f"{k} x{v}" for k, v in a["where"].most_common(6)) or "none"
            print(f"  {mode:9s} {c:3d} {name:8s} {top}")
        print(f"\ngarbage collections over {STALL_MS:.0f} ms, in any thread (longest so far):")
        for (name, stream, c), a in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
            mode = "streamed" if stream else "buffered"
            print(f"  {mode:9s} {c:3d} {name:8s} {a['gc_long']:5d} ({a['gc_max']:.1f} ms)")


if __name__ == "__main__":
    main()
