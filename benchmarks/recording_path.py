"""The recording write path per exchange: the spool append a response waits for, and the
uploader's copy into a local store, against one durable write of the same bytes.

    .venv/bin/python benchmarks/recording_path.py [--exchanges 200] [--threads 1,8,32]

Each exchange is a Claude Code-shaped ~200 KB buffered request whose conversation grew by one
turn (a record and its new blobs; the system prompt and tools are in the store already),
built before the clock starts (building and masking are not measured here).

  baseline  one ``write`` + ``fdatasync`` per exchange of the bytes the spool wrote for it, on
            one append-only file, each thread on its own (no group commit): issue 12's "one
            durable write"
  spool     `Journal.append` (seal, sign, write the frames, wait for the group commit)
  uploader  `Uploader.upload_pending` into a `LocalStore` after the appends (batches made
            durable together: one ``syncfs`` before the names and one after), per exchange;
            against the same upload with an fsync per file and per directory (the store's way on
            a system without ``syncfs``), on a spool and store of their own

At 1, 8 and 32 concurrent appenders it prints the median and p99 latency of baseline and spool,
their ratio, exchanges per second, fdatasync/fsync/syncfs calls per exchange of each phase and
the process CPU per exchange of the spool and the uploader (sealing and signing are serial: a chain); then
`gatehouse verify`'s verdict on the store. Set BENCH_DIR to measure on another file system.

Timings on a shared machine are noisy: compare ratios from one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from payloads import claude_code_request
from percentiles import percentile

from gatehouse.common import durable
from gatehouse.recording.records import BuiltRecord, ExchangeInput, RequestInput, ResponseInput, build_record
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.stores import LocalStore
from gatehouse.recording.verify import verify_store

RESPONSE = json.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
).encode()


class SyncCounter:
    """Counts os.fsync / os.fdatasync calls and the local store's syncfs (`FileSystemSync`), in
    every thread, while installed. It swaps module globals: safe here because no uploader
    thread runs (uploads are driven by `upload_pending` in this thread)."""

    def __init__(self) -> None:
        self.counts = {"fdatasync": 0, "fsync": 0, "syncfs": 0}
        self._lock = threading.Lock()
        self._real = (os.fsync, os.fdatasync, durable._SYNCFS)

    def __enter__(self) -> SyncCounter:
        real_fsync, real_fdatasync, real_syncfs = self._real

        def fsync(fd: int) -> None:
            with self._lock:
                self.counts["fsync"] += 1
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            with self._lock:
                self.counts["fdatasync"] += 1
            real_fdatasync(fd)

        def syncfs(fd: int) -> int:
            with self._lock:
                self.counts["syncfs"] += 1
            assert real_syncfs is not None
            return real_syncfs(fd)

        os.fsync, os.fdatasync = fsync, fdatasync
        if real_syncfs is not None:
            durable._SYNCFS = syncfs
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync, os.fdatasync, durable._SYNCFS = self._real

    def per(self, n: int) -> str:
        return ", ".join(f"{k} {v / n:.2f}" for k, v in self.counts.items())


def built_records(n: int) -> list[BuiltRecord]:
    base = claude_code_request(200_000, stream=False)
    out = []
    for i in range(n):
        body = copy.deepcopy(base)
        body["messages"].append({"role": "assistant", "content": [{"type": "text", "text": f"turn {i} " * 200}]})
        body["messages"].append({"role": "user", "content": [{"type": "text", "text": f"next {i} " * 1000}]})
        req = RequestInput(
            "POST",
            "https",
            "api.anthropic.com",
            443,
            "/v1/messages",
            [("content-type", "application/json")],
            json.dumps(body).encode(),
        )
        inp = ExchangeInput(
            "exchange",
            f"gx_{i}",
            req,
            ResponseInput(200, [("content-type", "application/json")], RESPONSE),
            request_at=time.time(),
            end_at=time.time(),
        )
        out.append(build_record(inp, masker=None, gateway_version="bench", policy_sha256=None))
    return out


def timed(threads: int, jobs: list, fn) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    lat: list[float] = []
    lock = threading.Lock()

    def one(job) -> None:  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        fn(job)
        dt = time.perf_counter() - t
        with lock:
            lat.append(dt)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, jobs))
    return sorted(lat), time.perf_counter() - t0


def upload_fsync_per_file(records: list[BuiltRecord], key: SigningKey) -> tuple[float, float, SyncCounter]:
    """The uploader's wall and CPU seconds for `records` (spooled first, untimed) into a local
    store that fsyncs each file and directory, as it does without syncfs."""
    real_syncfs = durable._SYNCFS
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        d = Path(tmp)
        rec = Recording.open(
            d / "spool",
            store=LocalStore(d / "store"),
            key=key,
            retention_days=None,
            gateway_version="bench",
            policy_sha256=None,
        )
        try:
            rec.spool.open()
            rec.append(records[0])
            rec.uploader.upload_pending()
            for r in records[1:]:
                rec.journal.append(r)
            durable._SYNCFS = None
            with SyncCounter() as syncs:
                t = time.perf_counter()
                cpu = time.process_time()
                rec.uploader.upload_pending()
                return time.perf_counter() - t, time.process_time() - cpu, syncs
        finally:
            durable._SYNCFS = real_syncfs
            assert rec.shutdown()
            Recording.forget(d / "spool")


def run(n: int, threads: int, key: SigningKey) -> None:
    records = built_records(n + 1)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        d = Path(tmp)
        store = LocalStore(d / "store")
        rec = Recording.open(
            d / "spool", store=store, key=key, retention_days=None, gateway_version="bench", policy_sha256=None
        )
        try:
            rec.spool.open()
            rec.append(records[0])
            rec.uploader.upload_pending()  # warm: the system prompt and tools are in the store
            before = sum(p.stat().st_size for p in (d / "spool/segments").iterdir())
            with SyncCounter() as spool_syncs:
                cpu = time.process_time()
                spool_lat, spool_wall = timed(threads, records[1:], rec.journal.append)
                spool_cpu = time.process_time() - cpu
            written = sum(p.stat().st_size for p in (d / "spool/segments").iterdir()) - before
            with SyncCounter() as upload_syncs:
                t = time.perf_counter()
                cpu = time.process_time()
                rec.uploader.upload_pending()
                upload_cpu = time.process_time() - cpu
                upload_s = time.perf_counter() - t
            assert rec.shutdown()
        finally:
            Recording.forget(d / "spool")
        result = verify_store(store, trusted_keys={key.key_id: key.public_key})

        # The baseline: the same bytes per exchange, each its own write + fdatasync.
        chunk = os.urandom(max(1, written // n))
        fd = os.open(d / "baseline", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:

            def durable_write(_: int) -> None:
                os.write(fd, chunk)
                os.fdatasync(fd)

            with SyncCounter() as base_syncs:
                base_lat, base_wall = timed(threads, list(range(n)), durable_write)
        finally:
            os.close(fd)

    ms = 1e3
    print(f"\n{threads} concurrent appender(s), {n} exchanges, {len(chunk) / 1e3:.1f} kB spooled per exchange")
    print(
        f"  baseline  median {statistics.median(base_lat) * ms:7.2f} ms  p99 {percentile(base_lat, 0.99) * ms:7.2f} ms  "
        f"{n / base_wall:7.0f}/s   ({base_syncs.per(n)} per exchange)"
    )
    print(
        f"  spool     median {statistics.median(spool_lat) * ms:7.2f} ms  p99 {percentile(spool_lat, 0.99) * ms:7.2f} ms  "
        f"{n / spool_wall:7.0f}/s   ({spool_syncs.per(n)} per exchange; "
        f"process CPU {spool_cpu / n * ms:.2f} ms per exchange)"
    )
    print(
        f"  ratio spool/baseline: median {statistics.median(spool_lat) / statistics.median(base_lat):.2f}x, "
        f"p99 {percentile(spool_lat, 0.99) / percentile(base_lat, 0.99):.2f}x, throughput {(n / spool_wall) / (n / base_wall):.2f}x"
    )
    print(
        f"  uploader  {upload_s / n * ms:7.2f} ms per exchange into the local store ({upload_syncs.per(n)} per exchange; "
        f"process CPU {upload_cpu / n * ms:.2f} ms per exchange)"
    )
    if durable._SYNCFS is not None:
        per_file_s, per_file_cpu, per_file_syncs = upload_fsync_per_file(records, key)
        print(
            f"  uploader, fsync per file {per_file_s / n * ms:7.2f} ms per exchange ({per_file_syncs.per(n)} per "
            f"exchange; process CPU {per_file_cpu / n * ms:.2f} ms per exchange)"
        )
        print(
            f"  ratio uploader/fsync per file: wall {upload_s / per_file_s:.2f}x, CPU {upload_cpu / per_file_cpu:.2f}x"
        )
    print(f"  verify: {'ok' if result.ok else 'FAILED'} ({result.records} records, {result.blobs} blobs)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exchanges", type=int, default=200)
    ap.add_argument("--threads", default="1,8,32", help="comma-separated concurrency levels")
    args = ap.parse_args()
    key = SigningKey.generate()
    for threads in (int(t) for t in args.threads.split(",")):
        run(args.exchanges, threads, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
