"""The spool: durable before upload, one gateway process per spool, unusable and back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gatehouse.recording.journal import Journal
from gatehouse.recording.layout import public_key_key, record_key
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.spool import Spool, SpoolError, SpoolLocked, read_spooled
from gatehouse.recording.stores import LocalStore
from gatehouse.recording.verify import verify_store
from support.records import numbered_record, open_recording


def test_append_is_durable_before_upload_and_upload_empties_the_spool(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.spool.open()  # no uploader started: everything stays spooled
    a = rec.append(numbered_record(1))
    assert (a.seq, a.chain) == (1, rec.journal.chain_id)
    # Durable in the spool, in upload order: the public key, then each record after its blobs.
    spooled = [k for k, _ in rec.spool.spooled()]
    assert [k for k in spooled if not k.startswith("blobs/")] == [
        public_key_key(key.key_id),
        record_key(a.chain, 0),
        record_key(a.chain, 1),
    ]
    assert rec.spool.pending() == [public_key_key(key.key_id), record_key(a.chain, 0), record_key(a.chain, 1)]
    assert len([k for k in spooled if k.startswith("blobs/")]) == 2
    assert spooled.index(record_key(a.chain, 1)) > max(i for i, k in enumerate(spooled) if k.startswith("blobs/"))
    assert read_spooled(tmp_path / "spool") == rec.spool.spooled()  # as another process reads it
    assert rec.spool.read_head() == {"chain": a.chain, "seq": 1, "hash": a.hash, "store": store.url}
    assert list(store.list("")) == []

    rec.uploader.start()
    rec.append(numbered_record(2))
    assert rec.uploader.flush(10)
    assert rec.spool.pending() == [] and rec.spool.spooled() == []
    assert rec.shutdown()
    # Shut down: every segment shipped and deleted; head.json names the chain's last record.
    assert not list((tmp_path / "spool/segments").iterdir())
    head = json.loads((tmp_path / "spool/head.json").read_text())
    assert (head["chain"], head["seq"], head["store"]) == (a.chain, 2, store.url)
    result = verify_store(store, trusted_keys={key.key_id: key.public_key})
    assert result.ok, result.problems
    assert (result.records, result.blobs, result.checkpoints) == (3, 3, 1)


def test_one_gateway_process_per_spool(tmp_path: Path) -> None:
    a = Spool(tmp_path / "spool")
    a.open()
    with pytest.raises(SpoolLocked, match="in use by another gateway process"):
        Spool(tmp_path / "spool").open()
    a.close()
    Spool(tmp_path / "spool").open()


def test_unusable_spool_raises_spool_error_and_recovers(tmp_path: Path, key: SigningKey) -> None:
    sp = Spool(tmp_path / "spool")
    journal = Journal(sp, key, gateway_version="t", policy_sha256=None, retention_days=None)
    journal.append(numbered_record(0))
    shutil.rmtree(tmp_path / "spool")
    (tmp_path / "spool").write_text("not a directory any more")
    with pytest.raises(SpoolError):
        sp.probe()
    with pytest.raises(SpoolError):
        journal.append(numbered_record(1))
    (tmp_path / "spool").unlink()
    sp.probe()
    a = journal.append(numbered_record(2))
    assert a.seq == 2  # the chain goes on where it was
