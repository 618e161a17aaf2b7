"""Buffered latency of the full gateway against bare mitmdump, measured in one run, alternating.

    .venv/bin/python benchmarks/buffered_latency.py [--requests 100]

Two Claude Code-shaped, buffered (``"stream": false``) requests, each sent `--requests` times
to both paths in turn (the order alternates every round):

  200 KB   a ~200 KB request (system prompt, tools, a few turns)
  1 MB     a late-session request: ~1 MB, the conversation of many earlier turns resent

Every round's body ends with a new user message of its own (a unique ~8 KB tool result), as a
real next turn does: a gateway that remembers what it saw before still has the new turn to do.

  bare     client -> mitmdump (no addons) -> upstream
  gateway  client -> the full Gatehouse stack (identity with the dev issuer's token, masking,
           recording to a local store) -> upstream

The fake upstream (TLS, its own process) answers every request. Prints, per size, the median
and p99 of both and the ratios gateway/bare (issue 12's goal: median <= 1.25x, p99 <= 1.5x).

This module also holds the helpers the other issue-12 benchmarks share (`session_cpu.py`,
`throughput.py`): the two paths, process CPU time, unique turns.

Timings on a shared machine are noisy: compare ratios from one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from payloads import claude_code_request  # noqa: E402  (the script folder is on sys.path)
from percentiles import percentile  # noqa: E402
from proxy_overhead import start_bare_mitmdump, start_upstream  # noqa: E402

from support.harness import GATEWAY_KEY, Gateway, stop_process  # noqa: E402
from support.rawwire import DEV_POLICY, gatehouse_token  # noqa: E402

HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "caller"}
GATEWAY_URL = "https://api.anthropic.com/v1/messages"


@dataclass
class Path_:
    """One way through to the upstream: its process, proxy URL, CA and the URL to post to."""

    name: str
    pid: int
    proxy: str
    ca: str
    url: str

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(proxy=self.proxy, verify=ssl.create_default_context(cafile=self.ca), timeout=timeout)

    def async_client(self, timeout: float = 120) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        ctx = ssl.create_default_context(cafile=self.ca)
        return httpx.AsyncClient(proxy=self.proxy, verify=ctx, timeout=timeout, limits=limits)


class Bench:
    """The fake upstream, bare mitmdump and the full gateway, started in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        stream_baseline: bool = False,
        gateway_args: list[str] | None = None,
        bare_args: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self._procs: list[subprocess.Popen] = []
        self.gateway: Gateway | None = None
        try:
            up, self.upstream, self.upstream_ca = start_upstream(workdir / "certs")
            self._procs.append(up)
            self.bare = self._start_bare(stream_baseline, bare_args or [])
            self.full = self._start_gateway(gateway_args or [])
        except BaseException:
            self.close()  # what did start must not outlive the run (the upstream holds our stderr open)
            raise

    def _start_bare(self, stream: bool, extra: list[str], name: str = "bare") -> Path_:
        proc, port, ca = start_bare_mitmdump(self.workdir, self.upstream_ca, name=name, stream=stream, extra=extra)
        self._procs.append(proc)
        return Path_(name, proc.pid, f"http://127.0.0.1:{port}", str(ca), f"{self.upstream}/v1/messages")

    def start_bare(self, stream: bool, extra: list[str], name: str) -> Path_:
        """Another bare mitmdump (e.g. the streamed baseline next to the buffered one)."""
        return self._start_bare(stream, extra, name)

    def _start_gateway(self, extra: list[str]) -> Path_:
        workdir = self.workdir / "gateway"
        workdir.mkdir()
        state = workdir / "state"
        policy = workdir / "policy.toml"
        policy.write_text(DEV_POLICY.format(state=state) + f'\n[recording]\nstore = "{workdir / "store"}"\n')
        token = gatehouse_token(policy, "--sub", "bench", "--groups", "developers")
        gw = Gateway(
            policy_path=policy,
            workdir=workdir,
            upstream=self.upstream,
            upstream_ca=self.upstream_ca,
            extra_args=["-q", *extra],
            env={"ANTHROPIC_API_KEY": GATEWAY_KEY},
        ).start()
        self.gateway = gw
        assert gw.proc is not None
        return Path_("gateway", gw.proc.pid, gw.proxy_url(token), gw.ca_path, GATEWAY_URL)

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for p in reversed(self._procs):
            stop_process(p)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process's threads have used so far, in seconds, at
    nanosecond resolution (the sum of /proc/PID/task/*/schedstat; /proc/PID/stat counts in
    10 ms ticks, too coarse for one exchange). A thread that has exited is no longer counted:
    mitmdump's worker threads live as long as the process."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def new_turn(rng: random.Random, i: int, chars: int = 8000) -> list[dict[str, Any]]:
    """A next turn nobody has seen: the assistant's tool call and its (unique) result."""
    tool_id = f"toolu_new_{i:06d}_{rng.getrandbits(32):08x}"
    alphabet = "abcdefghijklmnopqrstuvwxyz      \n"
    result = "".join(rng.choice(alphabet) for _ in range(chars))
    return [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": f"Checking step {i}."},
                {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": f"cat out/{i}.txt"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": result}]},
    ]


def with_new_turn(base: dict[str, Any], rng: random.Random, i: int) -> bytes:
    body = dict(base)
    body["messages"] = base["messages"] + new_turn(rng, i)
    return json.dumps(body).encode()


def post(client: httpx.Client, p: Path_, body: bytes, stream: bool = False, headers: dict | None = None) -> float:
    h = {**HEADERS, **(headers or {})}
    t0 = time.perf_counter()
    if stream:
        with client.stream("POST", p.url, content=body, headers=h) as r:
            for _ in r.iter_bytes():
                pass
    else:
        r = client.post(p.url, content=body, headers=h)
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise SystemExit(f"{p.name}: HTTP {r.status_code}: {r.read()[:300]!r}")
    return dt


def stats(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), percentile(times, 0.99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100, help="per size and path (default 100)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra mitmdump argument for the gateway (repeat it), e.g. --gateway-arg=-s --gateway-arg=$PWD/benchmarks/hook_times.py (an absolute path)",
    )
    ap.add_argument("--sizes", default="200,1000", help="request sizes in KB, comma-separated (default 200,1000)")
    args = ap.parse_args()

    sizes = {
        (f"{kb // 1000} MB" if kb % 1000 == 0 else f"{kb} KB"): claude_code_request(kb * 1000, stream=False)
        for kb in (int(k) for k in args.sizes.split(","))
    }
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), gateway_args=args.gateway_arg)
        try:
            paths = [bench.bare, bench.full]
            clients = {p.name: p.client() for p in paths}
            results: dict[str, dict[str, list[float]]] = {}
            for label, base in sizes.items():
                rng = random.Random(label)
                times: dict[str, list[float]] = {p.name: [] for p in paths}
                for i in range(args.requests + args.warmup):
                    body = with_new_turn(base, rng, i)
                    order = paths if i % 2 == 0 else paths[::-1]
                    for p in order:
                        dt = post(clients[p.name], p, body)
                        if i >= args.warmup:
                            times[p.name].append(dt)
                results[label] = times
                print(
                    f"{label}: {len(body)} bytes, {len(base['messages']) + 2} messages, "
                    f"{args.requests} requests per path"
                )
            for c in clients.values():
                c.close()
        finally:
            bench.close()
    print()
    print(f"{'size':8s} {'path':8s} {'median ms':>10s} {'p99 ms':>10s}")
    for label, times in results.items():
        for name, ts in times.items():
            med, p99 = stats(ts)
            print(f"{label:8s} {name:8s} {med * 1000:10.2f} {p99 * 1000:10.2f}")
    print()
    for label, times in results.items():
        bm, bp = stats(times["bare"])
        gm, gp = stats(times["gateway"])
        print(
            f"{label}: gateway/bare median {gm / bm:.2f}x (+{(gm - bm) * 1000:.1f} ms), p99 {gp / bp:.2f}x"
            "   (goal: <= 1.25x, p99 <= 1.5x)"
        )


if __name__ == "__main__":
    main()
