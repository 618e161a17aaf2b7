"""The journal: this process's chain, into which each record is linked, signed and spooled.

Also the chain's checkpoints. Blocks on disk: callers run it in worker threads.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gatehouse.recording.chain import make_checkpoint, seal_record, start_record_body
from gatehouse.recording.layout import checkpoint_key, new_chain_id, public_key_key, record_key
from gatehouse.recording.records import BuiltRecord
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.spool import Spool, SpoolError


@dataclass(frozen=True)
class Appended:
    chain: str
    seq: int
    hash: str
    key: str


class Journal:
    """Links records into this process's chain, signs them and spools them.

    The chain starts lazily with a ``start`` record naming the last record of the previous
    run (from the spool's head.json), so a gateway whose spool is unusable at start-up still
    starts, refuses requests under ``on_record_failure = "refuse"``, and recovers when the
    spool does.
    """

    def __init__(
        self,
        spool: Spool,
        key: SigningKey,
        *,
        gateway_version: str,
        policy_sha256: str | None,
        retention_days: int | None,
        node: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.key = key
        self.gateway_version = gateway_version
        self.policy_sha256 = policy_sha256
        self.retention_days = retention_days
        self.node = node or socket.gethostname()
        self.clock = clock
        self.chain_id: str | None = None
        self.seq = -1
        self.head: str | None = None
        self._published: set[str] = set()
        self._checkpointed = -1
        self._lock = threading.Lock()

    def reconfigure(
        self, *, key: SigningKey, gateway_version: str, policy_sha256: str | None, retention_days: int | None
    ) -> None:
        with self._lock:
            self.key = key
            self.gateway_version = gateway_version
            self.policy_sha256 = policy_sha256
            self.retention_days = retention_days

    def _publish_key(self) -> None:
        if self.key.key_id not in self._published:
            self.spool.put(public_key_key(self.key.key_id), self.key.public_pem())
            self._published.add(self.key.key_id)

    def _write(self, body: dict[str, Any]) -> Appended:
        """Seal and spool one record. Caller holds the lock."""
        if self.chain_id is None:
            previous = self.spool.read_head()
            chain_id = new_chain_id(self.clock())
            self.chain_id = chain_id
            try:
                start = start_record_body(
                    previous=previous,
                    gateway_version=self.gateway_version,
                    policy_sha256=self.policy_sha256,
                    node=self.node,
                    key_id=self.key.key_id,
                    retention_days=self.retention_days,
                )
                self._seal_and_spool(start)
            except BaseException:
                self.chain_id = None  # retry the start record (and a fresh chain id) next time
                raise
        return self._seal_and_spool(body)

    def _seal_and_spool(self, body: dict[str, Any]) -> Appended:
        assert self.chain_id is not None
        self._publish_key()
        seq = self.seq + 1
        data, digest = seal_record(body, chain_id=self.chain_id, seq=seq, prev=self.head, at=self.clock(), key=self.key)
        key = record_key(self.chain_id, seq)
        if not self.spool.put(key, data):
            raise SpoolError(f"{key} is already spooled (two writers on one chain?)")
        # The record is durable from here on: advance even if head.json cannot be updated.
        self.seq, self.head = seq, digest
        self.spool.write_head({"chain": self.chain_id, "seq": seq, "hash": digest})
        return Appended(self.chain_id, seq, digest, key)

    def append(self, built: BuiltRecord) -> Appended:
        self.spool.open()
        # Blobs first (outside the lock: they are content-addressed, writers do not conflict),
        # so a spooled record never names a blob that is not spooled or stored.
        for hx, data in built.blobs.items():
            self.spool.put_blob(hx, data)
        with self._lock:
            return self._write(built.body)

    def checkpoint(self) -> str | None:
        """Spool a signed checkpoint of the chain's head, unless nothing changed since the last."""
        with self._lock:
            if self.chain_id is None or self.seq <= self._checkpointed or self.head is None:
                return None
            data = make_checkpoint(chain_id=self.chain_id, seq=self.seq, head=self.head, key=self.key, at=self.clock())
            key = checkpoint_key(self.chain_id, self.seq)
            self.spool.put(key, data)
            self._checkpointed = self.seq
            return key
