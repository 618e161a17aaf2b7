"""Delay of streamed text through the gateway, against bare mitmdump, measured in one run.

    .venv/bin/python benchmarks/stream_delay.py [--runs 8] [--chars 1200] [--pace-ms 10] [--delta-chars 4]
                                                [--first-byte-requests 40]

A pacing upstream (in this process, TLS, TCP_NODELAY) streams an assistant answer at a model's
pace: `--delta-chars` characters of text per `text_delta` event every `--pace-ms` ms, and notes
when it wrote each delta. The same answer is fetched, alternating, three ways:

  bare     client -> mitmdump (only `flow.response.stream = True` in responseheaders) -> upstream
  unmasked client -> the Gatehouse stack with masking off ([masking] packs = []) -> upstream
  gateway  client -> the full Gatehouse stack (masking and recording on) -> upstream

For each delta, its delay is the time it became whole at the client minus the time the upstream
wrote it. The script prints, per path, the median and p90 of that delay, the delay of the first
visible text, and the time to first byte of those answers (request sent -> response headers,
and -> first SSE event).

Time to first byte is then measured on its own, `--first-byte-requests` short streamed answers
per path (three deltas, at once), alternating: each on the client's kept-alive connection, and
each on a new connection (a new client: CONNECT, TLS with the proxy, and the proxy's connection
upstream, as a client pays after an idle pause; Node's and httpx's keep-alive drop idle
connections after 4 and 5 s).

Last, the gateway's differences over bare mitmdump: the figures issue 12 asks for (median extra
delay <= 20 ms, first visible text <= 20 ms, first byte <= 2 ms). gateway - unmasked is what
masking adds; unmasked - bare is the rest of the stack (identity, recording).

Timings on a shared machine are noisy: compare the differences from one run, not absolute
numbers across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socketserver
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from percentiles import percentile  # noqa: E402  (the script folder is on sys.path)
from proxy_overhead import start_bare_mitmdump, start_gateways  # noqa: E402

from support.harness import Gateway  # noqa: E402
from support.tls_certs import TLSFiles, server_ssl_context, write_tls_files  # noqa: E402

# ----------------------------------------------------------------------------------------
# The answer the model "writes"
# ----------------------------------------------------------------------------------------


def answer_text(chars: int, seed: int = 12) -> str:
    """An assistant answer as Claude Code shows them: prose, a list, a code block, a command."""
    rng = random.Random(seed)
    words = (
        "the function reads the config file and returns a mapping of each section to its values "
        "so that callers never parse it twice you can run the tests again after this change "
        "because the cache is now keyed by path instead of name which also fixes the stale entry"
    ).split()
    ident = ["config", "path", "items", "result", "client", "session", "cache", "handler", "retries"]

    def sentence() -> str:
        s = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16)))
        return s[0].upper() + s[1:] + rng.choice([".", ".", ",", ":"]) + " "

    parts: list[str] = []
    while sum(map(len, parts)) < chars:
        kind = rng.random()
        if kind < 0.55:
            parts.append("".join(sentence() for _ in range(rng.randint(1, 3))) + "\n\n")
        elif kind < 0.75:
            parts.append("".join(f"- `{rng.choice(ident)}`: {sentence().strip()}\n" for _ in range(3)) + "\n")
        elif kind < 0.92:
            lines = [f"def load_{rng.choice(ident)}(path: str, retries: int = {rng.randint(1, 5)}) -> dict:"]
            lines += [
                f"    {rng.choice(ident)} = {rng.choice(ident)}.get('{rng.choice(ident)}', {rng.randint(0, 99)})"
                for _ in range(rng.randint(2, 5))
            ]
            lines.append(f"    return {{'{rng.choice(ident)}': {rng.choice(ident)}}}")
            parts.append("```python\n" + "\n".join(lines) + "\n```\n\n")
        else:
            parts.append(
                f"Run `pytest tests/unit -q -k {rng.choice(ident)}` and see https://docs.example.com/guide.\n\n"
            )
    return "".join(parts)[:chars]


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# ----------------------------------------------------------------------------------------
# The pacing upstream
# ----------------------------------------------------------------------------------------


@dataclass
class Pacing:
    text: str
    delta_chars: int
    pace: float  # seconds between two text deltas
    # One list per answered request, in order: the perf_counter() time each text delta was written.
    writes: list[list[float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pieces(self) -> list[str]:
        return [self.text[i : i + self.delta_chars] for i in range(0, len(self.text), self.delta_chars)]


class PacingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # each delta is its own small write: no 40 ms Nagle stall
    server: PacingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length", 0)))

    def do_POST(self) -> None:
        body = json.loads(self._read_body())
        p = self.server.pacing
        # The first-byte rounds ask for a short answer (a small max_tokens): its first deltas, at once.
        short = body.get("max_tokens") == SHORT_REQUEST_TOKENS
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", "req_bench")
        self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        message = {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        }
        write(sse("message_start", {"type": "message_start", "message": message}))
        write(
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
        )
        times: list[float] = []
        t0 = time.perf_counter() + p.pace
        for i, piece in enumerate(p.pieces[:SHORT_DELTAS] if short else p.pieces):
            # An absolute schedule: a late wake-up does not push every later delta back.
            wait = t0 + i * p.pace - time.perf_counter()
            if wait > 0 and not short:
                time.sleep(wait)
            ev = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            data = sse("content_block_delta", ev)
            times.append(time.perf_counter())
            write(data)
        write(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        write(
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(p.pieces)},
                },
            )
        )
        write(sse("message_stop", {"type": "message_stop"}))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        if not short:
            with p.lock:
                p.writes.append(times)


class PacingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, pacing: Pacing, tls: TLSFiles) -> None:
        self.pacing = pacing
        self.ssl_context = server_ssl_context(tls)
        super().__init__(("127.0.0.1", 0), PacingHandler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no reverse DNS lookup
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            sock = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            request.close()
            return
        try:
            PacingHandler(sock, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()


# ----------------------------------------------------------------------------------------
# Proxies and the client
# ----------------------------------------------------------------------------------------


@dataclass
class Run:
    headers: float  # request sent -> response headers (s)
    first_event: float  # request sent -> first SSE event whole
    delays: list[float]  # per upstream delta: whole at the client - written by the upstream (s)
    text: str


REQUEST = json.dumps(
    {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": True,
        "messages": [{"role": "user", "content": "Explain how the config loader works."}],
    }
).encode()
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "caller"}
SHORT_REQUEST_TOKENS = 16
SHORT_REQUEST = json.dumps({**json.loads(REQUEST), "max_tokens": SHORT_REQUEST_TOKENS}).encode()
SHORT_DELTAS = 3


@contextlib.contextmanager
def streamed_post(client: httpx.Client, url: str, body: bytes) -> Iterator[tuple[httpx.Response, float, float]]:
    """POST `body`: (the response, when the request was sent, when its headers arrived); a
    status other than 200 ends the benchmark."""
    t_send = time.perf_counter()
    with client.stream("POST", url, content=body, headers=HEADERS) as r:
        t_headers = time.perf_counter()
        if r.status_code != 200:
            raise SystemExit(f"{url}: HTTP {r.status_code}: {r.read()[:300]!r}")
        yield r, t_send, t_headers


def fetch(client: httpx.Client, url: str, pacing: Pacing) -> Run:
    arrivals: list[tuple[int, float]] = []  # (text length so far, time it arrived)
    text = ""
    buf = b""
    first_event = None
    with streamed_post(client, url, REQUEST) as (r, t_send, t_headers):
        for chunk in r.iter_raw():
            now = time.perf_counter()
            buf += chunk
            while b"\n\n" in buf:
                raw, buf = buf.split(b"\n\n", 1)
                if first_event is None:
                    first_event = now
                data = next((ln[5:].strip() for ln in raw.split(b"\n") if ln.startswith(b"data:")), None)
                if data is None:
                    continue
                ev = json.loads(data)
                if ev.get("type") == "content_block_delta" and ev["delta"].get("type") == "text_delta":
                    text += ev["delta"]["text"]
                    arrivals.append((len(text), now))
    with pacing.lock:
        writes = pacing.writes[-1]
    # Delta i (upstream) is whole once the client holds len(pieces[:i+1]) characters.
    delays = []
    ends = []
    n = 0
    for piece in pacing.pieces:
        n += len(piece)
        ends.append(n)
    j = 0
    for i, end in enumerate(ends):
        while j < len(arrivals) and arrivals[j][0] < end:
            j += 1
        if j == len(arrivals):
            break  # the answer was cut short (should not happen)
        delays.append(arrivals[j][1] - writes[i])
    return Run(t_headers - t_send, (first_event or t_headers) - t_send, delays, text)


def first_byte(client: httpx.Client, url: str) -> float:
    """Request sent -> response headers of a short streamed answer (read to its end)."""
    with streamed_post(client, url, SHORT_REQUEST) as (r, t_send, t_headers):
        for _chunk in r.iter_raw():
            pass
    return t_headers - t_send


def first_byte_summary(name: str, warm: list[float], cold: list[float]) -> dict[str, float]:
    out = {"warm": statistics.median(warm), "cold": statistics.median(cold)}
    print(
        f"{name:8s} first byte (request sent -> headers): kept-alive connection median {out['warm'] * 1e3:6.2f} ms "
        f"p90 {percentile(warm, 0.9) * 1e3:6.2f} ms | new connection median {out['cold'] * 1e3:6.2f} ms "
        f"p90 {percentile(cold, 0.9) * 1e3:6.2f} ms ({len(warm)} each)"
    )
    return out


def summarize(name: str, runs: list[Run]) -> dict[str, float]:
    delays = [d for r in runs for d in r.delays]
    out = {
        "median": statistics.median(delays),
        "p90": percentile(delays, 0.90),
        "p99": percentile(delays, 0.99),
        "first": statistics.median(r.delays[0] for r in runs),
        "headers": statistics.median(r.headers for r in runs),
        "first_event": statistics.median(r.first_event for r in runs),
    }
    print(
        f"{name:8s} text delay median {out['median'] * 1e3:7.2f} ms  p90 {out['p90'] * 1e3:7.2f} ms  "
        f"p99 {out['p99'] * 1e3:7.2f} ms | first text {out['first'] * 1e3:7.2f} ms | "
        f"first byte: headers {out['headers'] * 1e3:6.2f} ms, first event {out['first_event'] * 1e3:6.2f} ms "
        f"({len(runs)} answers, {len(delays)} deltas)"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=8, help="answers per path (alternating)")
    ap.add_argument("--chars", type=int, default=1200, help="characters of text per answer")
    ap.add_argument("--pace-ms", type=float, default=10.0)
    ap.add_argument("--delta-chars", type=int, default=4)
    ap.add_argument(
        "--first-byte-requests",
        type=int,
        default=40,
        help="short answers per path for first byte (each connection kind)",
    )
    ap.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra mitmdump argument for both Gatehouse stacks (repeat it), e.g. --gateway-arg=-s --gateway-arg=$PWD/benchmarks/hook_times.py (an absolute path)",
    )
    args = ap.parse_args()

    pacing = Pacing(answer_text(args.chars), args.delta_chars, args.pace_ms / 1000)
    print(
        f"answer: {len(pacing.text)} characters in {len(pacing.pieces)} deltas of {args.delta_chars}, "
        f"one every {args.pace_ms:g} ms; {args.runs} answers per path, alternating"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tls = write_tls_files(tmp / "certs")
        server = PacingServer(pacing, tls)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        base_url = f"https://127.0.0.1:{server.server_port}"
        bare_proc, bare_port, bare_ca = start_bare_mitmdump(tmp, tls.ca_cert, stream=True)
        gateways: dict[str, Gateway] = {}
        try:
            gateways = start_gateways(tmp, base_url, str(tls.ca_cert), args.gateway_arg)
            # Where each path is: (proxy URL, the CA it presents, the URL to ask).
            targets = {"bare": (f"http://127.0.0.1:{bare_port}", str(bare_ca), f"{base_url}/v1/messages")}
            for name, gw in gateways.items():
                targets[name] = (gw.proxy_url(), gw.ca_path, "https://api.anthropic.com/v1/messages")

            def new_client(name: str) -> httpx.Client:
                proxy, ca, _url = targets[name]
                # Connections are kept between rounds (httpx drops idle ones after 5 s by default,
                # and a round of the other paths takes longer): the rounds on a new connection
                # below are the ones that pay for connecting.
                return httpx.Client(
                    proxy=proxy,
                    verify=ssl.create_default_context(cafile=ca),
                    timeout=60,
                    limits=httpx.Limits(keepalive_expiry=600),
                )

            paths = {name: (new_client(name), targets[name][2]) for name in targets}
            runs: dict[str, list[Run]] = {name: [] for name in paths}
            for name, (client, url) in paths.items():  # warm-up: connections, certificates
                try:
                    fetch(client, url, pacing)
                except httpx.HTTPError as e:
                    log = gateways[name].log()[-2000:] if name in gateways else ""
                    raise SystemExit(f"{name}: {e!r}\n{log}") from e
            for _ in range(args.runs):
                for name, (client, url) in paths.items():
                    run = fetch(client, url, pacing)
                    if run.text != pacing.text:
                        raise SystemExit(f"{name}: the text arrived changed ({len(run.text)} characters)")
                    runs[name].append(run)
            warm: dict[str, list[float]] = {name: [] for name in paths}
            cold: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.first_byte_requests):
                for name, (client, url) in paths.items():
                    warm[name].append(first_byte(client, url))
                    with new_client(name) as fresh:
                        cold[name].append(first_byte(fresh, url))
            for client, _ in paths.values():
                client.close()
        finally:
            for gw in gateways.values():
                gw.stop()
            bare_proc.terminate()
            bare_proc.wait(10)
            server.shutdown()
    b = summarize("bare", runs["bare"])
    u = summarize("unmasked", runs["unmasked"])
    g = summarize("gateway", runs["gateway"])
    ms = lambda k: (g[k] - b[k]) * 1e3
    print(
        f"gateway - bare: text delay median {ms('median'):+.2f} ms (goal <= 20), p90 {ms('p90'):+.2f} ms, "
        f"first visible text {ms('first'):+.2f} ms (goal <= 20)"
    )
    fb = {name: first_byte_summary(name, warm[name], cold[name]) for name in warm}
    fbd = lambda a, b, k: (fb[a][k] - fb[b][k]) * 1e3
    print(
        f"gateway - bare: time to first byte {fbd('gateway', 'bare', 'warm'):+.2f} ms on a kept-alive connection "
        f"(goal <= 2), {fbd('gateway', 'bare', 'cold'):+.2f} ms on a new one (connecting through the proxy included)"
    )
    print(
        f"masking adds (gateway - unmasked): text delay median {(g['median'] - u['median']) * 1e3:+.2f} ms, "
        f"first byte {fbd('gateway', 'unmasked', 'warm'):+.2f} ms; the rest of the stack (unmasked - bare): "
        f"text delay median {(u['median'] - b['median']) * 1e3:+.2f} ms, first byte {fbd('unmasked', 'bare', 'warm'):+.2f} ms"
    )


if __name__ == "__main__":
    main()
