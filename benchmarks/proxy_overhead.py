"""Latency the gateway adds, against bare mitmdump and a direct connection, measured in one run.

The same fake upstream (TLS, separate process) answers the same ~200 KB Claude Code-shaped
request three ways:
  direct   client -> upstream
  bare     client -> mitmdump (no addons; with --stream, it streams the answer) -> upstream
  unmasked client -> the Gatehouse stack with masking off ([masking] packs = []) -> upstream
  gateway  client -> the full Gatehouse stack (masking and recording on) -> upstream
and the script prints median and p99 latency of each, and the ratio gateway/bare. The
difference gateway - unmasked is what masking adds; unmasked - bare is mostly the recorder
(spool fsync included) plus access and credential checks.

    .venv/bin/python benchmarks/proxy_overhead.py [--requests 200] [--stream]

Timings on a shared machine are noisy: compare ratios from one run, not absolute numbers
across runs.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from payloads import claude_code_request  # noqa: E402  (the script folder is on sys.path)
from percentiles import percentile  # noqa: E402

from support.harness import GATEWAY_KEY, Gateway, free_port, mitmdump_bin, write_policy  # noqa: E402

# The streamed baseline: mitmdump streams the response instead of buffering it
# (../shared/DESIGN.md, "Facts measured on this machine").
STREAM_SCRIPT = "def responseheaders(flow):\n    flow.response.stream = True\n"


def start_upstream(cert_dir: Path) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "support.fake_upstream", "--port", str(port), "--tls", "--cert-dir", str(cert_dir)],
        cwd=REPO / "tests",
        stdout=subprocess.PIPE,
        text=True,
    )
    base_url = proc.stdout.readline().strip()
    ca = proc.stdout.readline().strip()
    return proc, base_url, ca


def start_bare_mitmdump(
    workdir: Path, upstream_ca: str | Path, *, name: str = "bare", stream: bool = False, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen, int, Path]:
    """The baseline: mitmdump with no addons of ours (with `stream`, only
    ``flow.response.stream = True`` in `responseheaders`, else it buffers the answer), trusting
    the fake upstream's CA. Returns once it accepts connections: (process, port, its CA file)."""
    port = free_port()
    confdir = workdir / f"{name}-mitmproxy"
    args = [mitmdump_bin(), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port)]
    args += ["--set", f"confdir={confdir}", "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
    if stream:
        script = workdir / f"{name}_stream.py"
        script.write_text(STREAM_SCRIPT)
        args += ["-s", str(script)]
    proc = subprocess.Popen([*args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ca = confdir / "mitmproxy-ca-cert.pem"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name}: mitmdump exited with {proc.returncode} at start")
        if ca.exists():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return proc, port, ca
            except OSError:
                pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"{name}: mitmdump did not start listening on port {port} within 30 s")


# The two Gatehouse stacks the overhead benchmarks compare with bare mitmdump: masking off (the
# rest of the stack) and the full stack.
STACKS = (("unmasked", "[masking]\npacks = []\n"), ("gateway", ""))


def start_gateways(workdir: Path, upstream: str, upstream_ca: str, extra_args: list[str]) -> dict[str, Gateway]:
    """Start `STACKS` in folders of `workdir`, in front of `upstream`. If one fails to start,
    those started are stopped before the error goes on (they would outlive the run)."""
    gateways: dict[str, Gateway] = {}
    try:
        for name, policy in STACKS:
            stack_dir = workdir / name
            stack_dir.mkdir()
            gateways[name] = gw = Gateway(
                policy_path=write_policy(stack_dir, policy),
                workdir=stack_dir,
                upstream=upstream,
                upstream_ca=upstream_ca,
                extra_args=["-q", *extra_args],
                env={"ANTHROPIC_API_KEY": GATEWAY_KEY},
            )
            gw.start()
    except BaseException:
        for gw in gateways.values():
            gw.stop()
        raise
    return gateways


def measure(client: httpx.Client, url: str, body: bytes, n: int, stream: bool) -> list[float]:
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "caller"}
    times = []
    for i in range(n + 5):
        t0 = time.perf_counter()
        if stream:
            with client.stream("POST", url, content=body, headers=headers) as r:
                for _ in r.iter_bytes():
                    pass
                status = r.status_code
        else:
            r = client.post(url, content=body, headers=headers)
            status = r.status_code
        dt = time.perf_counter() - t0
        if status != 200:
            raise SystemExit(f"{url}: HTTP {status}")
        if i >= 5:  # warm-up: connection set-up, certificate generation
            times.append(dt)
    return times


def summarize(name: str, times: list[float]) -> dict[str, float]:
    med = statistics.median(times)
    p99 = percentile(times, 0.99)
    print(f"{name:8s} median {med * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms   (n={len(times)})")
    return {"median": med, "p99": p99}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--stream", action="store_true", help="ask for SSE responses")
    args = ap.parse_args()

    body_doc = claude_code_request(target_bytes=200_000, stream=args.stream)
    body = json.dumps(body_doc).encode()
    print(f"payload: {len(body)} bytes, {len(body_doc['messages'])} messages, stream={args.stream}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        up_proc, base_url, up_ca = start_upstream(tmp / "certs")
        bare_proc, bare_port, bare_ca = start_bare_mitmdump(tmp, up_ca, stream=args.stream)
        gateways: dict[str, Gateway] = {}
        try:
            gateways = start_gateways(tmp, base_url, up_ca, [])
            results = {}
            up_ctx = ssl.create_default_context(cafile=up_ca)
            with httpx.Client(verify=up_ctx, timeout=60) as c:
                results["direct"] = summarize(
                    "direct", measure(c, f"{base_url}/v1/messages", body, args.requests, args.stream)
                )
            bare_ctx = ssl.create_default_context(cafile=str(bare_ca))
            with httpx.Client(proxy=f"http://127.0.0.1:{bare_port}", verify=bare_ctx, timeout=60) as c:
                results["bare"] = summarize(
                    "bare", measure(c, f"{base_url}/v1/messages", body, args.requests, args.stream)
                )
            for name, gw in gateways.items():
                gw_ctx = ssl.create_default_context(cafile=gw.ca_path)
                with httpx.Client(proxy=gw.proxy_url(), verify=gw_ctx, timeout=60) as c:
                    results[name] = summarize(
                        name, measure(c, "https://api.anthropic.com/v1/messages", body, args.requests, args.stream)
                    )
        finally:
            for gw in gateways.values():
                gw.stop()
            bare_proc.terminate()
            up_proc.terminate()
            bare_proc.wait(10)
            up_proc.wait(10)
    g, b, d = results["gateway"], results["bare"], results["direct"]
    print(f"ratio gateway/bare: median {g['median'] / b['median']:.2f}x, p99 {g['p99'] / b['p99']:.2f}x")
    print(f"added by the gateway over bare mitmdump: median {(g['median'] - b['median']) * 1000:.2f} ms")
    u = results["unmasked"]
    print(f"masking adds (gateway - unmasked): median {(g['median'] - u['median']) * 1000:.2f} ms")
    print(f"recorder, access, credentials add (unmasked - bare): median {(u['median'] - b['median']) * 1000:.2f} ms")
    print(f"ratio bare/direct: median {b['median'] / d['median']:.2f}x")


if __name__ == "__main__":
    main()
