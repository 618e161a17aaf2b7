"""The journal: each run's chain, linked to the previous run's across a restart."""

from __future__ import annotations

import json
from pathlib import Path

from gatehouse.recording.layout import record_key
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.stores import LocalStore
from gatehouse.recording.verify import verify_store
from support.records import numbered_record, open_recording


def test_restart_resumes_the_spool_and_links_the_new_chain_to_the_old(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    store = LocalStore(tmp_path / "store")
    rec = open_recording(tmp_path / "spool", store, key, recordings)
    rec.spool.open()
    for i in range(3):
        rec.append(numbered_record(i))
    first_chain, first_head = rec.journal.chain_id, rec.journal.head
    # A crash: no shutdown, no checkpoint, nothing uploaded; the process (and its lock) is gone.
    Recording.forget(tmp_path / "spool")

    rec2 = open_recording(tmp_path / "spool", store, key, recordings)
    rec2.start()
    rec2.append(numbered_record(10))
    assert rec2.uploader.flush(10)
    assert rec2.journal.chain_id != first_chain
    start = json.loads(store.get(record_key(rec2.journal.chain_id, 0)))
    assert start["kind"] == "start"
    assert start["previous"] == {"chain": first_chain, "seq": 3, "hash": first_head}
    # Both chains made it to the store: the old one resumed from the spool.
    assert len(list(store.list(f"records/{first_chain}/"))) == 4
    rec2.shutdown()
    assert verify_store(store, trusted_keys={key.key_id: key.public_key}).ok
