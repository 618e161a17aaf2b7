"""The write path: spool durability, chain linking across runs, the uploader's retries, faults."""

from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest

from gatehouse.recording import records
from gatehouse.recording.records import BuiltRecord, SigningKey
from gatehouse.recording.spool import Journal, Recording, Spool, SpoolError, SpoolLocked, Uploader
from gatehouse.recording.stores import LocalStore, StoreError, open_store
from gatehouse.recording.verify import verify_store
from support.s3_server import S3Server


def built(i: int, shared: str = "the system prompt " * 100) -> BuiltRecord:
    """A record body with a shared blob (system prompt) and one of its own (a message)."""
    blobs = {}
    refs = []
    for value in (shared, {"role": "user", "content": f"message {i}"}):
        data = records.canonical_json(value)
        hx = records.sha256_ref(data)[7:]
        blobs[hx] = data
        refs.append("sha256:" + hx)
    body = {"kind": "exchange", "exchange_id": f"gx_{i}", "request": {"system": refs[0], "messages": refs[1:]},
            "response": None}
    return BuiltRecord(body, blobs)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def recordings() -> Iterator[list[Path]]:
    """Spool dirs opened through the registry, forgotten at the end."""
    opened: list[Path] = []
    yield opened
    for p in opened:
        Recording.forget(p)


def open_recording(path: Path, store: Any, key: SigningKey, opened: list[Path], **kw: Any) -> Recording:
    kw.setdefault("retention_days", None)
    rec = Recording.open(path, store=store, key=key, gateway_version="t", policy_sha256="p", **kw)
    opened.append(path)
    return rec


def test_append_is_durable_before_upload_and_upload_empties_the_spool(tmp_path: Path, key: SigningKey,
                                                                      recordings: list[Path]) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.spool.open()  # no uploader started: everything stays spooled
    a = rec.append(built(1))
    assert (a.seq, a.chain) == (1, rec.journal.chain_id)
    outbox = sorted(p.relative_to(tmp_path / "spool/outbox").as_posix() for p in (tmp_path / "spool/outbox").rglob("*.json"))
    assert outbox == [records.record_key(a.chain, 0), records.record_key(a.chain, 1)]
    assert len(list((tmp_path / "spool/blobs").rglob("*.json"))) == 2
    head = json.loads((tmp_path / "spool/head.json").read_text())
    assert head == {"chain": a.chain, "seq": 1, "hash": a.hash}
    assert list(store.list("")) == []

    rec.uploader.start()
    rec.append(built(2))
    assert rec.uploader.flush(10)
    assert rec.spool.pending() == [] and not list((tmp_path / "spool/blobs").rglob("*.json"))
    assert rec.shutdown()
    result = verify_store(store, trusted_keys={key.key_id: key.public_key})
    assert result.ok, result.problems
    assert (result.records, result.blobs, result.checkpoints) == (3, 3, 1)


def test_a_blob_reused_by_later_records_is_spooled_and_stored_once(tmp_path: Path, key: SigningKey,
                                                                   recordings: list[Path]) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.start()
    writes: list[str] = []
    original = rec.spool.put_blob

    def counting(hx: str, data: bytes) -> None:
        if not rec.spool.has_blob(hx) and hx not in rec.spool.uploaded:
            writes.append(hx)
        original(hx, data)

    rec.spool.put_blob = counting  # type: ignore[method-assign]
    for i in range(5):
        rec.append(built(i))
        assert rec.uploader.flush(10)
    assert len(writes) == 6  # the shared blob once, plus one message each
    assert len([k for k in store.list("blobs/")]) == 6


def test_restart_resumes_the_spool_and_links_the_new_chain_to_the_old(tmp_path: Path, key: SigningKey,
                                                                      recordings: list[Path]) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.spool.open()
    for i in range(3):
        rec.append(built(i))
    first_chain, first_head = rec.journal.chain_id, rec.journal.head
    # A crash: no shutdown, no checkpoint, nothing uploaded; the process (and its lock) is gone.
    Recording.forget(tmp_path / "spool")

    rec2 = open_recording(tmp_path / "spool", store, key, recordings)
    rec2.start()
    rec2.append(built(10))
    assert rec2.uploader.flush(10)
    assert rec2.journal.chain_id != first_chain
    start = json.loads(store.get(records.record_key(rec2.journal.chain_id, 0)))
    assert start["kind"] == "start"
    assert start["previous"] == {"chain": first_chain, "seq": 3, "hash": first_head}
    # Both chains made it to the store: the old one resumed from the spool.
    assert len(list(store.list(f"records/{first_chain}/"))) == 4
    rec2.shutdown()
    assert verify_store(store, trusted_keys={key.key_id: key.public_key}).ok


def test_one_gateway_process_per_spool(tmp_path: Path) -> None:
    a = Spool(tmp_path / "spool")
    a.open()
    with pytest.raises(SpoolLocked, match="in use by another gateway process"):
        Spool(tmp_path / "spool").open()
    a.close()
    Spool(tmp_path / "spool").open()


def test_registry_reuses_the_running_uploader(tmp_path: Path, key: SigningKey, recordings: list[Path]) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.start()
    thread = rec.uploader._thread
    again = open_recording(tmp_path / "spool", store, key, recordings)
    again.start()
    assert again is rec and rec.uploader._thread is thread
    assert [t.name for t in threading.enumerate()].count("gatehouse-uploader") >= 1
    names = [t for t in threading.enumerate() if t.name == "gatehouse-uploader" and t is thread]
    assert len(names) == 1


def test_unusable_spool_raises_spool_error_and_recovers(tmp_path: Path, key: SigningKey) -> None:
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=None)
    journal.append(built(0))
    shutil.rmtree(tmp_path / "spool")
    (tmp_path / "spool").write_text("not a directory any more")
    with pytest.raises(SpoolError):
        sp.probe()
    with pytest.raises(SpoolError):
        journal.append(built(1))
    (tmp_path / "spool").unlink()
    sp.probe()
    a = journal.append(built(2))
    assert a.seq == 2  # the chain goes on where it was


class FlakyStore(LocalStore):
    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures
        self.calls = 0

    def put(self, key: str, data: bytes, **kw: Any) -> bool:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("simulated outage")
        return super().put(key, data, **kw)


def test_uploader_retries_with_backoff(tmp_path: Path, key: SigningKey) -> None:
    store = FlakyStore(tmp_path / "store", failures=3)
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=None)
    up = Uploader(sp, store, retention_days=None, journal=journal, initial_backoff=0.05, max_backoff=0.2)
    journal.append(built(0))
    up.start()
    try:
        assert up.flush(10)
    finally:
        up.stop()
    assert up.failures == 3 and up.last_error is None
    assert verify_store(store, trusted_keys={key.key_id: key.public_key}).ok


def test_conflicting_object_is_kept_aside_not_overwritten(tmp_path: Path, key: SigningKey) -> None:
    store = LocalStore(tmp_path / "store")
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=None)
    a = journal.append(built(0))
    store.put(a.key, b"somebody else's bytes")
    Uploader(sp, store, retention_days=None).upload_pending()
    assert store.get(a.key) == b"somebody else's bytes"
    assert (tmp_path / "spool/failed" / a.key).exists() and sp.pending() == []


def test_checkpoints_are_written_periodically(tmp_path: Path, key: SigningKey, recordings: list[Path]) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings, checkpoint_interval=0.2)
    rec.start()
    rec.append(built(0))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not list(store.list("checkpoints/")):
        time.sleep(0.05)
    assert list(store.list("checkpoints/")) == [records.checkpoint_key(rec.journal.chain_id, 1)]
    time.sleep(0.5)  # nothing new: no new checkpoint
    assert len(list(store.list("checkpoints/"))) == 1


# -- faults against a real S3 endpoint --------------------------------------------------------------



def test_s3_outage_during_traffic_loses_nothing(s3: S3Server, tmp_path: Path, key: SigningKey,
                                                recordings: list[Path]) -> None:
    bucket = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    store = open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    rec = open_recording(tmp_path / "spool", store, key, recordings, retention_days=1)
    rec.uploader.initial_backoff, rec.uploader.max_backoff = 0.05, 0.3
    rec.start()
    for i in range(5):
        rec.append(built(i))
    assert rec.uploader.flush(20)

    s3.stop()
    for i in range(5, 15):  # traffic keeps being recorded while the store is down
        rec.append(built(i))
    time.sleep(0.5)
    assert rec.uploader.last_error is not None and "127.0.0.1" in rec.uploader.last_error
    assert len(rec.spool.pending()) >= 10

    s3.restart()
    assert rec.uploader.flush(30), rec.uploader.last_error
    assert rec.shutdown()
    chain = rec.journal.chain_id
    assert len(list(store.list(f"records/{chain}/"))) == 16  # start + 15, nothing lost
    result = verify_store(store, trusted_keys={key.key_id: key.public_key}, now=datetime.now().astimezone())
    assert result.ok, [str(p) for p in result.problems]
    assert result.retention_checked == result.records + result.blobs + result.checkpoints + result.keys
