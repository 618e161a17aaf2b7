"""The id lookup shards: stable, spread over all 256."""

from __future__ import annotations

from gatehouse.report.links import id_shard


def test_id_shard_is_stable() -> None:
    # index.js computes the same FNV-1a; the browser test checks they agree on real ids.
    assert id_shard("req_011CAliceFirstTurn0001") == id_shard("req_011CAliceFirstTurn0001")
    assert {id_shard(f"gx_{i}") for i in range(2000)} == {f"{i:02x}" for i in range(256)}
