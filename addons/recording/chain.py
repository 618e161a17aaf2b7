"""Chains: how records are linked and signed, and the signed checkpoints of a chain.

Each gateway run appends to a chain of its own. A record names the hash of the previous
record of its chain and carries an Ed25519 signature; seq 0 is a ``start`` record naming the
last record of the previous run's chain when that run recorded to the same store
(``previous``), or where the previous run recorded when it was another store
(``previous_store``): a chain belongs to its store, and every store verifies on its own. A checkpoint is a signed statement of a chain's
head (or, after `gatehouse prune`, of the last record removed). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatehouse.recording.canonical import iso_time, sha256_ref
from gatehouse.recording.signing import SigningKey, seal

SCHEMA = "gatehouse.record/1"
CHECKPOINT_SCHEMA = "gatehouse.checkpoint/1"
RECORD_KINDS = ("start", "request", "exchange", "refusal")


def seal_record(
    body: dict[str, Any], *, chain_id: str, seq: int, prev: str | None, at: float, key: SigningKey
) -> tuple[bytes, str]:
    """Link `body` into its chain, sign it; returns (canonical bytes, ``sha256:`` hash)."""
    doc = dict(body)
    doc["schema"] = SCHEMA
    doc["chain"] = {"id": chain_id, "seq": seq, "prev": prev, "at": iso_time(at)}
    data = seal(doc, key)
    return data, sha256_ref(data)


def start_record_body(
    *,
    previous: Mapping[str, Any] | None,
    gateway_version: str,
    policy_sha256: str | None,
    node: str,
    key_id: str,
    retention_days: int | None,
    previous_store: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Seq 0 of each chain: who started it and which record ended the previous run's chain
    (`previous`, in this store), or, when the previous run recorded to another store,
    `previous_store`: ``{url, chain, seq, hash}`` (and `previous` is None)."""
    body = {
        "kind": "start",
        "gateway": {
            "version": gateway_version,
            "policy_sha256": policy_sha256,
            "node": node,
            "retention_days": retention_days,
        },
        "previous": dict(previous) if previous else None,
        "key_id": key_id,
    }
    if previous_store is not None:
        body["previous_store"] = dict(previous_store)
    return body


def make_checkpoint(*, chain_id: str, seq: int, head: str, key: SigningKey, at: float, kind: str = "head") -> bytes:
    """A signed statement that record `seq` of the chain hashes to `head`.

    kind "head": the chain had reached `seq` (later records may follow, none may be missing).
    kind "prune": records 0..seq were deleted on purpose; `head` is the hash the next record names.
    """
    doc = {"schema": CHECKPOINT_SCHEMA, "kind": kind, "chain": chain_id, "seq": seq, "head": head, "at": iso_time(at)}
    return seal(doc, key)
