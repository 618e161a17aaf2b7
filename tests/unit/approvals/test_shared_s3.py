"""Two replicas sharing one S3 store (the real moto server): a request filed through one is
decided through the other and releases the first one's waiter; racing decisions and racing
grant claims are settled by S3's conditional writes."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gatehouse.approvals.config import ApprovalsPolicy
from gatehouse.approvals.service import ApprovalRefused, ApprovalService
from gatehouse.approvals.store import ApprovalStore
from gatehouse.recording.stores import open_store
from support.s3_server import S3Server


def replicas(s3: S3Server, n: int = 2, **kwargs) -> list[ApprovalService]:
    bucket = f"ap-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    return [
        ApprovalService(
            ApprovalStore(
                open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE"),
                retain_days=1,
            ),
            ApprovalsPolicy(approvers=("sre",)),
            **kwargs,
        )
        for _ in range(n)
    ]


def test_requested_through_one_replica_decided_through_the_other(s3: S3Server, file, people):
    holder, other = replicas(s3, poll_interval=0.25)
    req = file(holder)
    assert [s.request.id for s in other.pending(people.bob)] == [req.id]

    def approve() -> None:
        time.sleep(0.3)
        other.decide(req.id, people.bob, "approve", reason="", input_sha256=people.digest)

    async def main():
        threading.Thread(target=approve, daemon=True).start()
        start = time.monotonic()
        st = await holder.wait(req.id, 20.0)
        return time.monotonic() - start, st

    elapsed, st = asyncio.run(main())
    assert st.state == "approved" and st.decided_by[0]["subject"] == "bob"
    assert elapsed < 3.0
    # The grant is spent once, whichever replica the next call goes through.
    assert other.claim_call_grant(people.alice, "Bash", people.digest, "gx_2") is not None
    assert holder.claim_call_grant(people.alice, "Bash", people.digest, "gx_3") is None


def test_racing_decisions_and_claims_on_s3(s3: S3Server, file, people):
    a, b = replicas(s3)
    req = file(a)
    barrier = threading.Barrier(2)

    def decide(service, who, decision):
        barrier.wait()
        try:
            return service.decide(req.id, who, decision, reason="", input_sha256=people.digest)
        except ApprovalRefused as e:
            return e

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda x: decide(*x), [(a, people.bob, "approve"), (b, people.carol, "approve")]))
    assert sum(isinstance(r, ApprovalRefused) for r in results) == 1
    assert next(r for r in results if isinstance(r, ApprovalRefused)).status == 409

    claims = threading.Barrier(6)

    def claim(i):
        claims.wait()
        return (a, b)[i % 2].claim_call_grant(people.alice, "Bash", people.digest, f"gx_{i}")

    with ThreadPoolExecutor(6) as pool:
        got = [r for r in pool.map(claim, range(6)) if r is not None]
    assert len(got) == 1
