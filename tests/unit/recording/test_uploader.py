"""The uploader: blobs stored once, retries with backoff, conflicts kept aside, checkpoints, faults."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gatehouse.recording import spool as spool_module
from gatehouse.recording.canonical import canonical_json
from gatehouse.recording.journal import Journal
from gatehouse.recording.layout import blob_key, checkpoint_key, record_key
from gatehouse.recording.records import BuiltRecord
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.spool import Spool
from gatehouse.recording.stores import LocalStore, StoreError, open_store
from gatehouse.recording.uploader import Uploader
from gatehouse.recording.verify import verify_store
from support.records import numbered_record, open_recording
from support.s3_server import S3Server


def test_a_blob_reused_by_later_records_is_spooled_and_stored_once(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.start()
    writes: list[str] = []
    original = rec.spool.write

    def counting(frames: Any, **kw: Any) -> Any:
        writes.extend(k for kind, k, _ in frames if kind == "blob")
        return original(frames, **kw)

    rec.spool.write = counting  # type: ignore[method-assign]
    for i in range(5):
        rec.append(numbered_record(i))
        assert rec.uploader.flush(10)
    assert len(writes) == 6  # the shared blob once, plus one message each
    assert len([k for k in store.list("blobs/")]) == 6


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

    def put_batch(self, items: Any) -> list[bool]:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("simulated outage")
        return super().put_batch(items)


def test_uploader_retries_with_backoff(tmp_path: Path, key: SigningKey) -> None:
    store = FlakyStore(tmp_path / "store", failures=3)
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=None)
    up = Uploader(sp, store, retention_days=None, journal=journal, initial_backoff=0.05, max_backoff=0.2)
    journal.append(numbered_record(0))
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
    a = journal.append(numbered_record(0))
    store.put(a.key, b"somebody else's bytes")
    Uploader(sp, store, retention_days=None).upload_pending()
    assert store.get(a.key) == b"somebody else's bytes"
    assert (tmp_path / "spool/failed" / a.key).exists() and sp.pending() == []


def test_checkpoints_are_written_periodically(tmp_path: Path, key: SigningKey, recordings: list[Path]) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings, checkpoint_interval=0.2)
    rec.start()
    rec.append(numbered_record(0))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not list(store.list("checkpoints/")):
        time.sleep(0.05)
    assert list(store.list("checkpoints/")) == [checkpoint_key(rec.journal.chain_id, 1)]
    time.sleep(0.5)  # nothing new: no new checkpoint
    assert len(list(store.list("checkpoints/"))) == 1


class CountingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.batches: list[int] = []

    def put_batch(self, items: Any) -> list[bool]:
        self.batches.append(len(items))
        return super().put_batch(items)


def test_appends_that_follow_each_other_are_uploaded_in_one_batch(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    store = CountingStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.uploader.linger = 2.0  # generous: the appends below take milliseconds
    rec.start()
    assert rec.uploader.flush(10)  # the start record, uploaded
    store.batches.clear()
    for i in range(5):
        rec.append(numbered_record(i))  # each one wakes the uploader
    deadline = time.monotonic() + 20
    while rec.spool.has_pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not rec.spool.has_pending()
    assert len(store.batches) == 1 and store.batches[0] >= 5
    assert verify_store(store, trusted_keys={key.key_id: key.public_key}).ok


def test_a_flush_does_not_wait_for_the_linger(tmp_path: Path, key: SigningKey, recordings: list[Path]) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.uploader.linger = 3600.0
    rec.start()
    rec.append(numbered_record(0))
    assert rec.uploader.flush(30)  # would time out if the flush waited an hour
    assert record_key(rec.journal.chain_id, 1) in set(store.list("records/"))


def test_the_cursor_lags_the_upload_and_is_saved_at_shutdown(
    tmp_path: Path, key: SigningKey, recordings: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "CURSOR_SAVE_SECONDS", 3600.0)
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.append(numbered_record(0))
    rec.uploader.upload_pending()
    cursor = tmp_path / "spool/cursor.json"
    first = cursor.read_bytes()  # the first batch saves it
    rec.append(numbered_record(1))
    rec.uploader.upload_pending()
    assert cursor.read_bytes() == first  # not due again for an hour
    assert rec.shutdown()
    saved = json.loads(cursor.read_bytes())
    assert saved != json.loads(first)

    # Opened again, nothing goes twice: the saved cursor is past everything.
    Recording.forget(tmp_path / "spool")
    again = Spool(tmp_path / "spool")
    again.open()
    assert not again.has_pending()
    again.close()


# -- puts in flight at once (a store without put_batch, as S3) -------------------------------


class OneByOneStore(LocalStore):
    """A local store that takes one object per call, as S3 does (no `put_batch`), and notes
    what each put saw: the objects in the store when it began, and how many were in flight."""

    put_batch = None  # type: ignore[assignment]

    def __init__(self, root: Path, *, fail_on: str | None = None, delay: float = 0.01) -> None:
        super().__init__(root)
        self.fail_on = fail_on
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.began: list[tuple[str, frozenset[str]]] = []  # (key, keys stored before it began)
        self.stored: set[str] = set()

    def put(self, key: str, data: bytes, **kw: Any) -> bool:
        with self.lock:
            self.began.append((key, frozenset(self.stored)))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.delay)  # a round trip, so that puts overlap
            if self.fail_on is not None and key.startswith(self.fail_on):
                self.fail_on = None
                raise StoreError(f"simulated failure putting {key}")
            created = super().put(key, data, **kw)
        finally:
            with self.lock:
                self.in_flight -= 1
        with self.lock:
            self.stored.add(key)
        return created


def test_a_store_without_batches_gets_puts_in_parallel_and_in_a_safe_order(tmp_path: Path, key: SigningKey) -> None:
    store = OneByOneStore(tmp_path / "store")
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=None)
    for i in range(12):
        journal.append(numbered_record(i))
    journal.checkpoint()
    up = Uploader(sp, store, retention_days=None, concurrency=4)
    up.upload_pending()
    assert 1 < store.peak <= 4
    for put_key, before in store.began:
        if put_key.startswith("records/"):
            # Every blob and key the batch holds was stored before any record went.
            assert all(k in before for k in store.stored if k.startswith(("blobs/", "keys/"))), put_key
        if put_key.startswith("checkpoints/"):
            assert all(k in before for k in store.stored if k.startswith("records/")), put_key
    assert not sp.has_pending()
    assert verify_store(store, trusted_keys={key.key_id: key.public_key}).ok


def test_a_failed_put_among_parallel_ones_leaves_the_batch_spooled_for_the_retry(
    tmp_path: Path, key: SigningKey
) -> None:
    store = OneByOneStore(tmp_path / "store", fail_on="records/")
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=None)
    for i in range(8):
        journal.append(numbered_record(i))
    up = Uploader(sp, store, retention_days=None, concurrency=4)
    with pytest.raises(StoreError, match="simulated failure putting records/"):
        up.upload_pending()
    # The other records of the batch went on and were stored; the batch stays spooled.
    assert 0 < len(list(store.list("records/"))) < 9
    assert len(sp.pending()) == 10  # the key, the start record and 8 records
    up.upload_pending()  # the retry puts the rest; those stored already count as uploaded
    assert not sp.has_pending()
    result = verify_store(store, trusted_keys={key.key_id: key.public_key})
    assert result.ok and result.records == 9, [str(p) for p in result.problems]


def test_one_put_at_a_time_when_concurrency_is_one(tmp_path: Path, key: SigningKey) -> None:
    store = OneByOneStore(tmp_path / "store", delay=0.002)
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=None)
    for i in range(4):
        journal.append(numbered_record(i))
    Uploader(sp, store, retention_days=None, concurrency=1).upload_pending()
    assert store.peak == 1
    assert verify_store(store, trusted_keys={key.key_id: key.public_key}).ok


# -- faults and retention against a real S3 endpoint ------------------------------------------


def test_reused_blob_retention_is_extended_by_the_uploader(s3: S3Server, tmp_path: Path) -> None:
    bucket = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    store = open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    key = SigningKey.generate()
    clock = [time.time()]
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=1, clock=lambda: clock[0])
    up = Uploader(sp, store, retention_days=1, journal=journal, clock=lambda: clock[0])
    blob = {"role": "user", "content": "the same first message"}
    hx = hashlib.sha256(canonical_json(blob)).hexdigest()

    def append() -> None:
        body = {"kind": "exchange", "request": {"messages": ["sha256:" + hx]}, "response": None}
        journal.append(BuiltRecord(body, {hx: canonical_json(blob)}))
        up.upload_pending()

    append()
    first = store.retention(blob_key(hx)).until
    record1 = store.retention(record_key(journal.chain_id, 1)).until
    assert first >= record1
    clock[0] += 5 * 86400  # five days later the same blob is referenced again
    append()
    second = store.retention(blob_key(hx)).until
    record2 = store.retention(record_key(journal.chain_id, 2)).until
    assert second > first + timedelta(days=4) and second >= record2
    assert store.versions("")[f"{blob_key(hx)}"].versions == 1  # extended, not rewritten


def test_s3_outage_during_traffic_loses_nothing(
    s3: S3Server, tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    bucket = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    store = open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    rec = open_recording(tmp_path / "spool", store, key, recordings, retention_days=1)
    rec.uploader.initial_backoff, rec.uploader.max_backoff = 0.05, 0.3
    rec.start()
    for i in range(5):
        rec.append(numbered_record(i))
    assert rec.uploader.flush(20)

    s3.stop()
    for i in range(5, 15):  # traffic keeps being recorded while the store is down
        rec.append(numbered_record(i))
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
