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

# How many other stores' last records head.json keeps (the most recently left ones).
MAX_OTHER_STORES = 16


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

    A chain belongs to the store it is recorded to (`store_url`; None: whatever store the
    spool goes to). When the spool's previous run recorded to another store, the new chain's
    start record says where (``previous_store``) instead of naming a record this store does
    not hold; `move_to` ends the chain when a reload changes the store.
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
        store_url: str | None = None,
    ) -> None:
        self.spool = spool
        self.store_url = store_url
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
        self._moves = 0  # how many times the chain moved to another store (see `append`)
        # The last record this spool wrote to each other store: the next chain on one of them
        # names it as `previous` (runs elsewhere in between do not break a store's own links).
        self._other_heads: dict[str, dict[str, Any]] = {}

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
            previous, previous_store = self._previous_run()
            chain_id = new_chain_id(self.clock())
            self.chain_id = chain_id
            try:
                start = start_record_body(
                    previous=previous,
                    previous_store=previous_store,
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

    def _previous_run(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The new chain's links, from the spool's head.json: `previous`, the last record this
        spool wrote to this store (in the previous run, or before runs on other stores), and
        `previous_store` when the previous run recorded to another store. Also keeps, for later
        heads, the last record of each other store (`_other_heads`)."""
        head = self.spool.read_head()
        self._other_heads = {}
        if not head:
            return None, None
        link = {k: head[k] for k in ("chain", "seq", "hash") if k in head}
        other = head.get("store")
        stores = head.get("stores")
        heads = {u: h for u, h in stores.items() if isinstance(h, dict)} if isinstance(stores, dict) else {}
        # A head without a store was written before heads named theirs: the same store, as then.
        if self.store_url is None or not isinstance(other, str) or other == self.store_url:
            heads.pop(self.store_url or "", None)
            self._other_heads = heads if self.store_url is not None else {}
            return link or None, None
        heads.pop(other, None)
        heads[other] = link  # the most recently left store last
        mine = heads.pop(self.store_url, None)
        self._other_heads = dict(list(heads.items())[-MAX_OTHER_STORES:])
        return mine, {"url": other, **link}

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
        head: dict[str, Any] = {"chain": self.chain_id, "seq": seq, "hash": digest}
        if self.store_url is not None:
            head["store"] = self.store_url
            if self._other_heads:
                head["stores"] = self._other_heads
        self.spool.write_head(head)
        return Appended(self.chain_id, seq, digest, key)

    def append(self, built: BuiltRecord) -> Appended:
        self.spool.open()
        # Blobs first (outside the lock: they are content-addressed, writers do not conflict),
        # so a spooled record never names a blob that is not spooled or stored.
        moves = self._moves
        for hx, data in built.blobs.items():
            self.spool.put_blob(hx, data)
        with self._lock:
            if self._moves != moves:
                # The chain moved to another store meanwhile: a blob skipped as uploaded was
                # uploaded to the old store, not to the one this record goes to.
                for hx, data in built.blobs.items():
                    self.spool.put_blob(hx, data)
            return self._write(built.body)

    def move_to(self, store_url: str, finish: Callable[[], None]) -> None:
        """End this chain (a last checkpoint) and start the next record's chain on another store.

        `finish` runs between the two with appends held: it uploads what the spool holds to the
        old store and re-binds the spool; if it raises, nothing changes (the chain goes on).
        """
        with self._lock:
            self._checkpoint()
            finish()
            self.store_url = store_url
            self.chain_id, self.seq, self.head = None, -1, None
            self._checkpointed = -1
            self._published = set()  # the new store holds no public key yet
            self._moves += 1

    def checkpoint(self) -> str | None:
        """Spool a signed checkpoint of the chain's head, unless nothing changed since the last."""
        with self._lock:
            return self._checkpoint()

    def _checkpoint(self) -> str | None:
        """`checkpoint`; caller holds the lock."""
        if self.chain_id is None or self.seq <= self._checkpointed or self.head is None:
            return None
        data = make_checkpoint(chain_id=self.chain_id, seq=self.seq, head=self.head, key=self.key, at=self.clock())
        key = checkpoint_key(self.chain_id, self.seq)
        self.spool.put(key, data)
        self._checkpointed = self.seq
        return key
