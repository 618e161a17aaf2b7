"""The segment spool: crash safety (kill -9 mid-append, a torn tail), group commit, a failed
fdatasync, uploads resumed across a restart, and a spool written before segments."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gatehouse.recording import spool as spool_module
from gatehouse.recording.journal import Journal
from gatehouse.recording.layout import record_key
from gatehouse.recording.reader import iter_records
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.spool import Spool, SpoolError, read_spooled
from gatehouse.recording.stores import LocalStore
from gatehouse.recording.verify import verify_store
from support.records import numbered_record, open_recording

TESTS = Path(__file__).resolve().parents[2]

# A gateway stand-in: 4 threads append records and print each one the moment `append`
# returned (acknowledged: the response would have been released), until it is killed.
WRITER = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from support.records import numbered_record
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.stores import LocalStore
key = SigningKey.from_bytes(open(sys.argv[3], "rb").read(), "test")
rec = Recording.open(sys.argv[2], store=LocalStore(sys.argv[4]), key=key, retention_days=None,
                     gateway_version="t", policy_sha256="p")
rec.spool.open()  # no uploader: everything stays in the spool
out = threading.Lock()
def work(t):
    for i in range(t * 100_000, t * 100_000 + 100_000):
        a = rec.append(numbered_record(i))
        with out:
            print(a.seq, flush=True)
for t in range(4):
    threading.Thread(target=work, args=(t,)).start()
"""


def trusted(key: SigningKey) -> dict:
    return {key.key_id: key.public_key}


def test_kill_9_mid_append_keeps_every_acknowledged_record(tmp_path: Path, key: SigningKey) -> None:
    (tmp_path / "key.pem").write_bytes(key.private_pem())
    spool, store_dir = tmp_path / "spool", tmp_path / "store"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(TESTS), str(spool), str(tmp_path / "key.pem"), str(store_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked: list[int] = []
    for line in child.stdout:
        acked.append(int(line))
        if len(acked) == 300:
            break
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    acked += [int(x) for x in rest.split()]  # printed before the kill: acknowledged too

    rec = Recording.open(
        spool, store=LocalStore(store_dir), key=key, retention_days=None, gateway_version="t", policy_sha256="p"
    )
    try:
        rec.start()
        assert rec.uploader.flush(60), rec.uploader.last_error
        assert rec.shutdown()
    finally:
        Recording.forget(spool)
    store = LocalStore(store_dir)
    chains = sorted({k.split("/")[1] for k in store.list("records/")})
    assert len(chains) == 1  # the killed run's (the one that uploaded it appended nothing)
    seqs = {json.loads(store.get(k))["chain"]["seq"] for k in store.list(f"records/{chains[0]}/")}
    assert set(acked) <= seqs
    assert seqs == set(range(len(seqs)))  # no gap: nothing after a lost record
    result = verify_store(store, trusted_keys=trusted(key))
    assert result.ok, [str(p) for p in result.problems]


def test_a_torn_tail_is_dropped_and_what_came_before_survives(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.spool.open()
    for i in range(3):
        last = rec.append(numbered_record(i))
    Recording.forget(tmp_path / "spool")  # a crash (the lock goes with the process)
    (segment,) = (tmp_path / "spool/segments").iterdir()
    whole = segment.read_bytes()
    # A frame cut mid-write, then one whose bytes changed after its crc was written.
    torn = spool_module.encode_frames([("record", record_key(last.chain, 4), b"x" * 500)])[:300]
    bad = bytearray(spool_module.encode_frames([("record", record_key(last.chain, 4), b"{}")]))
    bad[-1] ^= 1
    for tail in (torn, bytes(bad)):
        segment.write_bytes(whole + tail)
        assert [k for k, _ in read_spooled(tmp_path / "spool")][-1] == record_key(last.chain, 3)

    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.spool.open()
    assert rec.spool.read_head() == {"chain": last.chain, "seq": 3, "hash": last.hash, "store": store.url}
    # Damage in the middle would look the same: the whole segment is kept for an operator.
    assert (tmp_path / "spool/failed/segments" / segment.name).read_bytes() == whole + bytes(bad)
    rec.start()
    rec.append(numbered_record(10))
    assert rec.shutdown()
    assert len(list(store.list(f"records/{last.chain}/"))) == 4
    start = json.loads(store.get(record_key(rec.journal.chain_id, 0)))
    assert start["previous"] == {"chain": last.chain, "seq": 3, "hash": last.hash}
    result = verify_store(store, trusted_keys=trusted(key))
    assert result.ok, [str(p) for p in result.problems]


def test_concurrent_appends_share_an_fdatasync_and_each_returns_durable(
    tmp_path: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=None)
    journal.append(numbered_record(0))
    synced: list[int] = []  # the segment's size at each fdatasync
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        size = os.fstat(fd).st_size
        time.sleep(0.01)  # a disk slow enough that appends pile up behind a sync
        real(fd)
        synced.append(size)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    problems: list[str] = []
    seg_path = next((tmp_path / "spool/segments").iterdir())

    def work(t: int) -> None:
        for i in range(10):
            a = journal.append(numbered_record(100 * t + i))
            # Returned: a sync covered this record (the file held it when the sync began).
            end = next(e for _p, e, _kind, k, _d in spool_module._frames(seg_path.read_bytes()) if k == a.key)
            if not synced or max(synced) < end:
                problems.append(f"{a.key} returned before it was durable")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems
    assert len(synced) < 80 / 2, f"{len(synced)} fdatasyncs for 80 appends"
    seqs = [json.loads(d)["chain"]["seq"] for k, d in read_spooled(tmp_path / "spool") if k.startswith("records/")]
    assert seqs == list(range(82))  # start + 1 + 80, in chain order


def test_a_failed_fdatasync_refuses_the_append_and_the_chain_restarts_on_durable_ground(
    tmp_path: Path, key: SigningKey, recordings: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.spool.open()
    first = rec.append(numbered_record(0))
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(SpoolError, match="Input/output error"):
        rec.append(numbered_record(1))
    monkeypatch.setattr(os, "fdatasync", real)
    after = rec.append(numbered_record(2))
    assert after.chain != first.chain and after.seq == 1  # a new chain: record 2 of the old one is gone
    rec.start()
    assert rec.shutdown()
    start = json.loads(store.get(record_key(after.chain, 0)))
    assert start["previous"] == {"chain": first.chain, "seq": 1, "hash": first.hash}
    exchange_ids = [r.get("exchange_id") for r in iter_records(store) if r["kind"] == "exchange"]
    assert sorted(exchange_ids) == ["gx_0000", "gx_0002"]  # (both chains start in the same second)
    result = verify_store(store, trusted_keys=trusted(key))
    assert result.ok, [str(p) for p in result.problems]


def test_uploads_resume_across_a_restart_and_uploading_again_is_harmless(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.spool.open()
    for i in range(6):
        rec.append(numbered_record(i))
    batch = rec.spool.next_batch(max_frames=4)  # the uploader took one batch, then the process died
    assert batch is not None
    rec.uploader._ship(batch.frames)
    rec.spool.advance(batch)
    Recording.forget(tmp_path / "spool")
    # The cursor lost as in a crash before it reached the disk: everything goes again.
    (tmp_path / "spool/cursor.json").unlink()

    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.start()
    assert rec.uploader.flush(10)
    assert rec.shutdown()
    assert not (tmp_path / "spool/failed").exists()  # identical objects already there: uploaded
    assert not list((tmp_path / "spool/segments").iterdir())
    result = verify_store(store, trusted_keys=trusted(key))
    assert result.ok, [str(p) for p in result.problems]
    assert result.records == 1 + 6  # start + 6 (the second run appended nothing: no chain)


def test_a_spool_written_before_segments_is_uploaded(tmp_path: Path, key: SigningKey, recordings: list[Path]) -> None:
    class OldLayout:
        """The files the spool wrote before segments: blobs/<hh>/<hex>.json, outbox/<key>."""

        epoch = 0

        def open(self) -> None:
            pass

        def needs_blob(self, hx: str) -> bool:
            return True

        def write(self, frames: Any, **kw: Any) -> None:
            for kind, k, data in frames:
                if kind == "head":
                    continue
                path = root / (f"blobs/{k[:2]}/{k}.json" if kind == "blob" else f"outbox/{k}")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)

        def sync(self, token: Any) -> None:
            pass

        def read_head(self) -> None:
            return None

    root = tmp_path / "spool"
    journal = Journal(OldLayout(), key, gateway_version="t", policy_sha256=None, retention_days=None)  # type: ignore[arg-type]
    for i in range(3):
        last = journal.append(numbered_record(i))
    journal.checkpoint()
    (root / "head.json").write_text(json.dumps({"chain": last.chain, "seq": last.seq, "hash": last.hash}))

    store = LocalStore(tmp_path / "store")
    rec = open_recording(root, store, key, recordings)
    rec.start()
    assert not (root / "outbox").exists() and not (root / "blobs").exists()
    rec.append(numbered_record(3))
    assert rec.shutdown()
    start = json.loads(store.get(record_key(rec.journal.chain_id, 0)))
    assert start["previous"] == {"chain": last.chain, "seq": 3, "hash": last.hash}
    result = verify_store(store, trusted_keys=trusted(key))
    assert result.ok, [str(p) for p in result.problems]
    assert (result.records, result.checkpoints) == (4 + 2, 2)


def test_full_segments_rotate_and_go_once_shipped_while_the_head_stays_known(
    tmp_path: Path, key: SigningKey, recordings: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 4096)
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.spool.open()
    for i in range(12):
        last = rec.append(numbered_record(i))
    segments = sorted((tmp_path / "spool/segments").iterdir())
    assert len(segments) >= 3
    rec.uploader.upload_pending()
    # Shipped: all but the one still appended to are gone; head.json names at least their last.
    assert sorted((tmp_path / "spool/segments").iterdir()) == segments[-1:]
    head = json.loads((tmp_path / "spool/head.json").read_text())
    assert head["chain"] == last.chain and head["seq"] <= last.seq
    assert rec.spool.read_head() == {"chain": last.chain, "seq": 12, "hash": last.hash, "store": store.url}
    Recording.forget(tmp_path / "spool")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.start()
    rec.append(numbered_record(20))
    assert rec.shutdown()
    start = json.loads(store.get(record_key(rec.journal.chain_id, 0)))
    assert start["previous"] == {"chain": last.chain, "seq": 12, "hash": last.hash}
    result = verify_store(store, trusted_keys=trusted(key))
    assert result.ok, [str(p) for p in result.problems]


def test_writers_rotating_at_once_leave_no_segment_unsynced_or_open(tmp_path, monkeypatch):
    """Two writers that both find the active segment full while its sync is in flight: the
    second must see the first one's new segment, never open a third and orphan the second."""
    import os as _os
    import threading as _threading
    import time as _time

    import gatehouse.recording.spool as sp

    monkeypatch.setattr(sp, "SEGMENT_BYTES", 1000)
    spool = sp.Spool(tmp_path / "spool")
    spool.open()
    gate, real = _threading.Event(), _os.fdatasync
    first = [True]

    def slow(fd):
        if first[0]:
            first[0] = False
            gate.wait()
        return real(fd)

    monkeypatch.setattr(sp.os, "fdatasync", slow)
    t0 = spool.write([("blob", "a" * 64, b"x" * 600)])
    syncing = _threading.Thread(target=spool.sync, args=(t0,))
    syncing.start()
    _time.sleep(0.2)
    tokens = {}

    def write(name):
        tokens[name] = spool.write([("record", f"records/c/{name}", b"y" * 600)])

    writers = [_threading.Thread(target=write, args=(n,)) for n in ("A", "B")]
    for t in writers:
        t.start()
        _time.sleep(0.2)
    gate.set()
    for t in (syncing, *writers):
        t.join()
    inactive = [seg for seg in spool._segs.values() if seg is not spool._active]
    assert all(seg.fd is None and seg.synced == seg.end for seg in inactive)
    for tok in tokens.values():
        spool.sync(tok)
    assert all(seg.synced == seg.end for seg in spool._segs.values())
