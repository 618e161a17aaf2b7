"""How fast the uploader moves the spool to S3 (the moto server on loopback), one put at a
time against `[recording] upload_concurrency` puts in flight, in one run.

    .venv/bin/python benchmarks/upload_throughput.py [--exchanges 200] [--concurrency 1,4,8,16] [--rtt-ms 20]

Each exchange is a Claude Code-shaped ~200 KB buffered request whose conversation grew by one
turn (a record and its new blobs), as in `recording_path.py`, spooled before the clock starts.
For each concurrency it uploads the same spooled exchanges (`Uploader.upload_pending`) into a
fresh prefix of an Object Lock bucket (every put carries its retention, as in production) and
prints objects per second and exchanges per second, their ratio to one put at a time (the
first level, measured in the same run), and `gatehouse verify`'s verdict on each prefix.

Between the uploader and moto sits the test suite's relay, which holds each answer back
`--rtt-ms` (default 20, about a PUT's round trip to S3 in the same region; 0 for bare
loopback). moto is a Python server on the same two cores, so with no delay the figures are
bound by its CPU, not by the uploader's waiting. Compare ratios from one run, not numbers
across runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "tests"))

from recording_path import built_records  # noqa: E402  (the script folder is on sys.path)

from gatehouse.recording.registry import Recording  # noqa: E402
from gatehouse.recording.signing import SigningKey  # noqa: E402
from gatehouse.recording.stores import open_store  # noqa: E402
from gatehouse.recording.verify import verify_store  # noqa: E402
from support.s3_server import CREDENTIALS, S3Server  # noqa: E402

BUCKET = "bench-uploads"


def upload(s3: S3Server, records: list, key: SigningKey, concurrency: int, prefix: str) -> tuple[float, int, bool]:
    """Spool `records`, then time uploading them all; (seconds, objects put, verify ok)."""
    store = open_store(
        f"s3://{BUCKET}/{prefix}",
        endpoint_url=s3.endpoint_url,
        object_lock_mode="GOVERNANCE",
        max_connections=concurrency,
    )
    with tempfile.TemporaryDirectory() as tmp:
        spool_dir = Path(tmp) / "spool"
        rec = Recording.open(
            spool_dir,
            store=store,
            key=key,
            retention_days=1,
            gateway_version="bench",
            policy_sha256=None,
            upload_concurrency=concurrency,
        )
        try:
            rec.spool.open()
            for r in records:
                rec.journal.append(r)
            rec.spool.close_segment()
            objects = len(rec.spool.spooled())
            t = time.perf_counter()
            rec.uploader.upload_pending()
            took = time.perf_counter() - t
            assert not rec.spool.has_pending()
        finally:
            Recording.forget(spool_dir)
    result = verify_store(store, trusted_keys={key.key_id: key.public_key})
    return took, objects, result.ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exchanges", type=int, default=200)
    ap.add_argument("--concurrency", default="1,4,8,16", help="comma-separated; the first is the baseline")
    ap.add_argument("--rtt-ms", type=float, default=20.0, help="delay of each answer from the S3 endpoint")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    os.environ.update(CREDENTIALS)
    records = built_records(args.exchanges)
    key = SigningKey.generate()
    with S3Server(delay=args.rtt_ms / 1000) as s3:
        s3.create_bucket(BUCKET, object_lock=True)
        upload(s3, records[:5], key, levels[0], "warm-up")  # moto's first requests are slow
        print(
            f"{args.exchanges} exchanges spooled, then uploaded to the moto server "
            f"({s3.endpoint_url}, answers delayed {args.rtt_ms:g} ms)"
        )
        print(f"{'concurrency':>11} {'seconds':>8} {'objects':>8} {'objects/s':>10} {'exch/s':>8} {'ratio':>6}  verify")
        base: float | None = None
        for level in levels:
            took, objects, ok = upload(s3, records, key, level, f"c{level}")
            rate = args.exchanges / took
            base = base or rate
            print(
                f"{level:11d} {took:8.2f} {objects:8d} {objects / took:10.1f} {rate:8.1f} {rate / base:5.2f}x  "
                f"{'ok' if ok else 'FAILED'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
