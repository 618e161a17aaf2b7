"""The registry: one journal and uploader per spool directory, found again by a reloaded script."""

from __future__ import annotations

import threading
from pathlib import Path

from gatehouse.recording.signing import SigningKey
from gatehouse.recording.stores import LocalStore
from support.records import open_recording


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
