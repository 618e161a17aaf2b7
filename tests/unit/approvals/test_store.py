"""The approvals' objects in a recording store: write-once, shared by every process on the store,
on a local folder and on S3 (the real moto server), with Object Lock retention."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatehouse.approvals.model import ApprovalRequest, Claim, Outcome, Vote, new_approval_id
from gatehouse.approvals.store import ApprovalStore
from gatehouse.recording.canonical import canonical_json
from gatehouse.recording.stores import LocalStore, NotFound, StoreError, open_store
from support.s3_server import S3Server

ALICE = {"issuer": "https://idp", "subject": "alice", "email": "alice@example.com", "groups": ["dev"]}
BOB = {"issuer": "https://idp", "subject": "bob", "groups": ["sre"]}


def request(approval_id: str, kind: str = "tool_call", digest: str = "a" * 64, tool: str = "Bash") -> ApprovalRequest:
    now = time.time()
    return ApprovalRequest(
        id=approval_id,
        kind=kind,
        requester=ALICE,
        session=None,
        exchange_id="gx_1",
        tool=tool,
        input={"command": "ls"},
        input_sha256=digest,
        rule="r",
        message="m",
        approvers=["sre"],
        approvals_required=1,
        mode="hold",
        created=now,
        expires=now + 300,
        grant_seconds=3600,
    )


def exercise(a: ApprovalStore, b: ApprovalStore) -> None:
    """Everything written through `a` is seen through `b`, and no object is written twice."""
    rid = new_approval_id(time.time())
    req = request(rid)
    assert a.put_request(req)
    assert not b.put_request(req)
    assert b.get_request(rid) == req
    assert rid in b.request_ids()
    assert b.call_ids(ALICE, "tool_call", "Bash", "a" * 64) == [rid]
    assert b.call_ids(ALICE, "tool_call", "Bash", "b" * 64) == []
    assert b.call_ids(BOB, "tool_call", "Bash", "a" * 64) == []

    vote = Vote(rid, "approve", BOB, "ok", "a" * 64, time.time())
    assert a.put_vote(vote)
    assert not b.put_vote(Vote(rid, "deny", BOB, "changed my mind", "a" * 64, time.time()))
    assert b.votes(rid) == [vote]
    assert b.get_vote(rid, BOB) == vote and b.get_vote(rid, ALICE) is None

    assert b.get_outcome(rid) is None
    first = Outcome(rid, "approved", time.time(), [BOB], "ok")
    assert b.put_outcome(first)
    assert not a.put_outcome(Outcome(rid, "denied", time.time(), [BOB], "no"))
    assert a.get_outcome(rid) == first

    assert a.get_claim(rid) is None
    claim = Claim(rid, "gx_2", ALICE, time.time())
    assert a.put_claim(claim)
    assert not b.put_claim(Claim(rid, "gx_3", ALICE, time.time()))
    assert b.get_claim(rid) == claim

    with pytest.raises(NotFound):
        b.get_request(new_approval_id(time.time()))


def test_local_store_objects_are_write_once_and_shared(tmp_path: Path) -> None:
    exercise(ApprovalStore(LocalStore(tmp_path)), ApprovalStore(LocalStore(tmp_path)))


def test_objects_are_canonical_json_under_the_approvals_prefix(tmp_path: Path) -> None:
    store = ApprovalStore(LocalStore(tmp_path))
    rid = new_approval_id(time.time())
    store.put_request(request(rid))
    keys = list(LocalStore(tmp_path).list(""))
    assert all(k.startswith("approvals/") for k in keys)
    assert f"approvals/requests/{rid}.json" in keys
    assert any(k.startswith("approvals/calls/") and k.endswith("/" + rid) for k in keys)
    raw = (tmp_path / "approvals" / "requests" / f"{rid}.json").read_bytes()
    assert raw == canonical_json(json.loads(raw))


def test_access_requests_are_indexed_by_target_alone(tmp_path: Path) -> None:
    store = ApprovalStore(LocalStore(tmp_path))
    rid = new_approval_id(time.time())
    store.put_request(request(rid, kind="access", tool="model claude-opus-4-1", digest="c" * 64))
    assert store.call_ids(ALICE, "access", "model claude-opus-4-1", "") == [rid]
    assert store.call_ids(ALICE, "access", "model claude-opus-4-1", "c" * 64) == [rid]
    assert store.call_ids(ALICE, "access", "model claude-haiku-4", "") == []


def test_call_ids_newest_first(tmp_path: Path) -> None:
    store = ApprovalStore(LocalStore(tmp_path))
    ids = [new_approval_id(1_700_000_000 + i) for i in range(3)]
    for i in ids:
        store.put_request(request(i))
    assert store.call_ids(ALICE, "tool_call", "Bash", "a" * 64) == ids[::-1]
    assert store.request_ids() == ids


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ga_xyz", "ga_" + "0" * 27 + "/", ""])
def test_ids_that_are_not_approval_ids_are_not_found(tmp_path: Path, bad: str) -> None:
    store = ApprovalStore(LocalStore(tmp_path))
    with pytest.raises(NotFound):
        store.get_request(bad)
    assert store.get_outcome(bad) is None


def test_a_damaged_object_is_a_store_error_naming_it(tmp_path: Path) -> None:
    store = ApprovalStore(LocalStore(tmp_path))
    rid = new_approval_id(time.time())
    LocalStore(tmp_path).put(f"approvals/requests/{rid}.json", b'{"id": 1}')
    with pytest.raises(StoreError, match=f"approvals/requests/{rid}.json"):
        store.get_request(rid)


# -- S3 ---------------------------------------------------------------------------------------------


def test_s3_objects_are_write_once_and_shared_between_store_objects(s3: S3Server) -> None:
    bucket = f"ap-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=False)
    a = ApprovalStore(open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url))
    b = ApprovalStore(open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url))
    exercise(a, b)
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("gh/approvals/") for k in keys)


def test_s3_object_lock_needs_a_retention(s3: S3Server) -> None:
    bucket = f"ap-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    locked = open_store(f"s3://{bucket}", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    with pytest.raises(StoreError, match="retention_days"):
        ApprovalStore(locked)


def test_s3_objects_carry_the_records_retention(s3: S3Server) -> None:
    bucket = f"ap-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    locked = open_store(f"s3://{bucket}", endpoint_url=s3.endpoint_url, object_lock_mode="GOVERNANCE")
    store = ApprovalStore(locked, retain_days=3)
    rid = new_approval_id(time.time())
    assert store.put_request(request(rid))
    assert store.put_vote(Vote(rid, "approve", BOB, "", "a" * 64, time.time()))
    for key in (f"approvals/requests/{rid}.json", next(locked.list(f"approvals/votes/{rid}/"))):
        r = locked.retention(key)
        assert r is not None and r.mode == "GOVERNANCE"
        assert r.until is not None
        assert abs(r.until - (datetime.now(UTC) + timedelta(days=3))) < timedelta(minutes=5)
