"""What a gateway under test recorded, read back as a user would: records from a store, the
`gatehouse verify` CLI, and the policy and environment of an S3 store on the moto server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gatehouse.recording.reader import iter_records
from gatehouse.recording.stores import open_store
from support.s3_server import CREDENTIALS, S3Server

GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")


def store_records(store_url: str, kinds=("exchange", "refusal"), **kw) -> list[dict]:
    return list(iter_records(open_store(store_url, **kw), kinds=list(kinds)))


def wait_records(store_url: str, n: int, timeout: float = 30, **kw) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            recs = store_records(store_url, **kw)
        except Exception:  # the store may be down in fault tests
            recs = []
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)


def verify(store: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GATEHOUSE, "verify", store, *args], capture_output=True, text=True, timeout=120, env=env or dict(os.environ)
    )


def s3_env(s3: S3Server) -> dict[str, str]:
    return dict(CREDENTIALS, AWS_ENDPOINT_URL_S3=s3.endpoint_url)


def s3_policy(s3: S3Server, bucket: str, extra: str = "") -> str:
    return (
        f'[recording]\nstore = "s3://{bucket}/gatehouse"\ns3_endpoint_url = "{s3.endpoint_url}"\n'
        f'object_lock_mode = "COMPLIANCE"\nretention_days = 1\n{extra}'
    )
