"""Store keys: each object's key, and what a key names."""

from __future__ import annotations

import re

import pytest

from gatehouse.recording.canonical import RecordError, ref_hex
from gatehouse.recording.layout import ParsedKey, blob_key, checkpoint_key, new_chain_id, parse_key, record_key


def test_store_keys_parse_back() -> None:
    chain = new_chain_id(0)
    assert re.fullmatch(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}", chain) and chain.startswith("19700101T000000Z-")
    assert parse_key(record_key(chain, 7)) == ParsedKey("record", chain, 7)
    assert parse_key(checkpoint_key(chain, 7)).kind == "checkpoint"
    assert parse_key(checkpoint_key(chain, 7, prune=True)).kind == "prune"
    hx = "ab" + "c" * 62
    assert blob_key("sha256:" + hx) == f"blobs/sha256/ab/{hx}.json"
    assert parse_key(blob_key(hx)).hex == hx
    assert parse_key(f"blobs/sha256/cd/{hx}.json") is None  # wrong fan-out folder
    assert parse_key("records/x/1.json") is None
    with pytest.raises(RecordError):
        ref_hex("md5:abc")
