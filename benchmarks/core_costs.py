"""What the gateway's core costs per turn, in process, against a plain parse of the same bytes.

    .venv/bin/python benchmarks/core_costs.py [--turns 100] [--sizes 200,1000]

No proxy and no network: the pure functions a flow goes through, timed one by one, on a
Claude Code-shaped buffered request whose conversation grew by one turn (a unique ~8 KB tool
result, as `buffered_latency.py` sends), after a few turns of warm-up, with the quick-start
policy's masking rules and a recording to a local store in a temporary folder:

  parse      `requestjson.parse`: the strict parse with spans, the parts seen before taken from memory
  mask       `Masker.mask_spanned`: the wire's copy masked (parts seen before from memory)
  request    `build_request`: the record's request part (masked for the record, blobs)
  record     `build_record`: the record around it, with a short JSON response
  append     `Recording.append`: chained, signed, spooled with its `fdatasync`
             (of which `seal`: `seal_record`, linking and signing the record, printed apart)

against `json.loads` of the same body, the least any proxy that reads the body pays. Then a
streamed answer (163 events: text in 8-character deltas and a tool call) through `SsePipeline`,
against parsing its events and encoding them again (`parse_sse` + `encode_event`).

Also prints the characters the masker scanned per turn: a text the gateway saw before should
not be scanned again. Timings on a shared machine are noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from buffered_latency import with_new_turn  # noqa: E402  (the script folder is on sys.path)
from payloads import claude_code_request  # noqa: E402

from gatehouse.masking.masker import Masker, build_masker  # noqa: E402
from gatehouse.mitm import requestjson  # noqa: E402
from gatehouse.policy.loader import load_policy  # noqa: E402
from gatehouse.recording.chain import seal_record  # noqa: E402
from gatehouse.recording.records import (  # noqa: E402
    ExchangeInput,
    PartCache,
    RequestInput,
    ResponseInput,
    build_record,
    build_request,
)
from gatehouse.recording.registry import Recording  # noqa: E402
from gatehouse.recording.sessions import SessionTracker  # noqa: E402
from gatehouse.recording.signing import SigningKey  # noqa: E402
from gatehouse.recording.stores import LocalStore  # noqa: E402
from gatehouse.wire.pipeline import SsePipeline  # noqa: E402
from gatehouse.wire.sse import encode_event, parse_sse  # noqa: E402
from support.fake_upstream.sse import encode_sse, sse_events  # noqa: E402
from support.scanning import CountingScanner  # noqa: E402

HEADERS = [("content-type", "application/json"), ("anthropic-version", "2023-06-01"), ("user-agent", "bench")]
IDENTITY = {"sub": "bench", "issuer": "dev", "groups": ["developers"]}
RESPONSE = json.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Done. " * 50}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
).encode()
STAGES = ("parse", "mask", "request", "record", "append")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def one_turn(
    body: bytes, i: int, masker: Masker, counter: CountingScanner, rec: Recording, parts: PartCache, tracker: Any
) -> dict[str, float]:
    times: dict[str, float] = {}
    counter.scanned.clear()
    _, times["json.loads"] = timed(lambda: json.loads(body))
    parsed, times["parse"] = timed(lambda: requestjson.parse(body))
    assert parsed.spanned is not None
    _, times["mask"] = timed(lambda: masker.mask_spanned(parsed.spanned))
    # The recorder takes the parse masking left unchanged (nothing to mask in these turns).
    inp = RequestInput("POST", "https", "api.anthropic.com", 443, "/v1/messages", HEADERS, body)
    built, times["request"] = timed(
        lambda: build_request(
            inp, masker=masker, identity=IDENTITY, at=time.time(), tracker=tracker, cache=parts, parsed=parsed.spanned
        )
    )
    now = time.time()
    exchange = ExchangeInput(
        kind="exchange",
        exchange_id=f"gx_bench_{i}",
        request=inp,
        response=ResponseInput(200, [("content-type", "application/json")], RESPONSE),
        identity=IDENTITY,
        decisions=[{"layer": "access", "action": "allow"}],
        request_findings=[],
        response_findings=[],
        errors=[],
        request_at=now,
        first_byte_at=now,
        end_at=now,
    )
    record, times["record"] = timed(
        lambda: build_record(
            exchange,
            masker=masker,
            gateway_version="bench",
            policy_sha256=None,
            tracker=tracker,
            built_request=built,
            cache=parts,
        )
    )
    _, times["seal"] = timed(
        lambda: seal_record(record.body, chain_id="bench", seq=i + 1, prev=None, at=now, key=rec.journal.key)
    )
    _, times["append"] = timed(lambda: rec.append(record))
    times["scanned"] = sum(counter.scanned)
    return times


def turns(label: str, kb: int, n: int, warmup: int, masker: Masker, counter: CountingScanner, workdir: Path) -> None:
    base = claude_code_request(kb * 1000, stream=False)
    rng = random.Random(label)
    rec = Recording.open(
        workdir / f"spool-{kb}",
        store=LocalStore(workdir / f"store-{kb}"),
        key=SigningKey.generate(),
        retention_days=None,
        gateway_version="bench",
        policy_sha256=None,
    )
    parts = PartCache(masker, known=requestjson.KNOWN_PARTS)
    tracker = SessionTracker()
    try:
        rows = []
        for i in range(warmup + n):
            body = with_new_turn(base, rng, i)
            row = one_turn(body, i, masker, counter, rec, parts, tracker)
            if i >= warmup:
                rows.append(row)
    finally:
        rec.shutdown(timeout=10.0)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    core = sum(med[s] for s in STAGES)
    print(f"{label}: {len(body)} bytes, {len(base['messages']) + 2} messages, {n} turns (medians, ms)")
    print("  " + "  ".join(f"{s} {med[s] * 1000:.3f}" for s in STAGES))
    print(
        f"  core {core * 1000:.3f} ms (without append {(core - med['append']) * 1000:.3f}) vs json.loads "
        f"{med['json.loads'] * 1000:.3f} ms: {core / med['json.loads']:.2f}x "
        f"({(core - med['append']) / med['json.loads']:.2f}x without append); "
        f"characters scanned per turn {med['scanned']:.0f}"
    )
    print(f"  of append: seal {med['seal'] * 1000:.3f} ms (the record linked and signed, without the spool)")


def stream(masker: Masker, policy_hold_back: int, n: int) -> None:
    text = ("The config loader reads the TOML file, validates each section and returns a frozen policy. " * 14)[:1200]
    message = {
        "content": [
            {"type": "text", "text": text},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la src/ && cat README.md"}},
        ],
        "stop_reason": "tool_use",
    }
    events = sse_events(message)
    chunks = [encode_sse([e]) for e in events]  # one event per chunk, as the API writes them
    raw = b"".join(chunks)

    def pipeline() -> None:
        p = SsePipeline(masker, hold_back_chars=policy_hold_back)
        for c in chunks:
            p(c)
        p(b"")

    def baseline() -> None:
        for name, data in parse_sse(raw):
            encode_event(name, data)

    ts: dict[str, list[float]] = {"pipeline": [], "baseline": []}
    for i in range(n + 5):
        for name, fn in (("pipeline", pipeline), ("baseline", baseline))[:: 1 if i % 2 else -1]:
            _, dt = timed(fn)
            if i >= 5:
                ts[name].append(dt)
    p, b = statistics.median(ts["pipeline"]), statistics.median(ts["baseline"])
    print(f"stream: {len(events)} events, {len(raw)} bytes, {n} runs (medians)")
    print(
        f"  SsePipeline {p * 1000:.2f} ms ({p / len(events) * 1e6:.1f} µs per event) vs parse + encode "
        f"{b * 1000:.2f} ms: {p / b:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=100, help="measured turns per size (default 100)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--sizes", default="200,1000", help="request sizes in KB, comma-separated (default 200,1000)")
    args = ap.parse_args()
    policy = load_policy(REPO / "policies" / "quickstart.toml")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        masker = build_masker(policy.masking, workdir)
        if masker is None:
            raise SystemExit("the quick-start policy has masking off: nothing to measure")
        masker.scanner = counter = CountingScanner(masker.scanner)  # type: ignore[assignment]
        for kb in (int(k) for k in args.sizes.split(",")):
            turns(
                f"{kb // 1000} MB" if kb % 1000 == 0 else f"{kb} KB",
                kb,
                args.turns,
                args.warmup,
                masker,
                counter,
                workdir,
            )
        stream(masker, policy.masking.hold_back_chars, args.turns)


if __name__ == "__main__":
    main()
