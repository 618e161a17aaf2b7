"""The journal: this process's chain, into which each record is linked, signed and spooled.

Also the chain's checkpoints. A record is sealed and written under the journal's lock (which
orders the chain), and made durable after it, so concurrent appends share one fdatasync
(`Spool.sync`). Blocks on disk: callers run it in worker threads.
"""

from __future__ import annotations

import json
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
from gatehouse.recording.spool import Frame, Spool, Token

# How many other stores' last records the spool's head keeps (the most recently left ones).
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
    run (the spool's head, `Spool.read_head`), so a gateway whose spool is unusable at start-up still
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
        self._epoch = spool.epoch
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

    def _write(
        self, body: dict[str, Any], *, blobs: dict[str, bytes] | None = None, blobs_epoch: int | None = None
    ) -> tuple[Token, Appended]:
        """Seal `body` (after a ``start`` record when the chain has not begun) and write it to the
        spool, not yet durable: the caller syncs the token. `blobs`, written by the caller at
        `blobs_epoch`: spooled again with the record when writes were lost since. Caller holds
        the lock."""
        if self.spool.epoch != self._epoch:
            # Writes this chain relied on were lost (a failed fdatasync): a new chain starts,
            # naming the last record that is durable.
            self.chain_id, self.seq, self.head = None, -1, None
            self._published, self._checkpointed = set(), -1
            self._epoch = self.spool.epoch
        frames: list[Frame] = []
        if blobs and blobs_epoch != self._epoch:
            # The blobs written before may be among the lost writes: they go with the record,
            # in the same write, which fails as a whole if the epoch moves again.
            frames.extend(("blob", hx, data) for hx, data in blobs.items() if self.spool.needs_blob(hx))
        if self.key.key_id not in self._published:
            frames.append(("key", public_key_key(self.key.key_id), self.key.public_pem()))
        chain_id, seq, prev = self.chain_id, self.seq + 1, self.head
        if chain_id is None:
            previous, previous_store = self._previous_run()
            chain_id = new_chain_id(self.clock())
            start = start_record_body(
                previous=previous,
                previous_store=previous_store,
                gateway_version=self.gateway_version,
                policy_sha256=self.policy_sha256,
                node=self.node,
                key_id=self.key.key_id,
                retention_days=self.retention_days,
            )
            data, prev = seal_record(start, chain_id=chain_id, seq=0, prev=None, at=self.clock(), key=self.key)
            frames.append(("record", record_key(chain_id, 0), data))
            # Which store the chain belongs to, and the other stores' last records: the spool's
            # head as the next run reads it.
            head: dict[str, Any] = {}
            if self.store_url is not None:
                head["store"] = self.store_url
                if self._other_heads:
                    head["stores"] = self._other_heads
            frames.append(("head", "", json.dumps(head, sort_keys=True).encode()))
            seq = 1
        data, digest = seal_record(body, chain_id=chain_id, seq=seq, prev=prev, at=self.clock(), key=self.key)
        key = record_key(chain_id, seq)
        frames.append(("record", key, data))
        token = self.spool.write(frames, epoch=self._epoch)
        # Written, not yet durable: the next record links to this one (a failed sync bumps the
        # spool's epoch, and the next record starts a new chain).
        self.chain_id, self.seq, self.head = chain_id, seq, digest
        self._published.add(self.key.key_id)
        return token, Appended(chain_id, seq, digest, key)

    def _previous_run(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The new chain's links, from the spool's head: `previous`, the last record this
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

    def append(self, built: BuiltRecord) -> Appended:
        """Link, sign and spool a record with its blobs; returns once all of it is durable."""
        self.spool.open()
        moves, epoch = self._moves, self.spool.epoch
        # Blobs first, outside the lock (content-addressed: writers do not conflict), so a
        # spooled record never names a blob that is not spooled or stored; the record's sync
        # makes them durable with it.
        blobs: list[Frame] = [("blob", hx, data) for hx, data in built.blobs.items() if self.spool.needs_blob(hx)]
        if blobs:
            self.spool.write(blobs, epoch=epoch)
        with self._lock:
            if self._moves != moves:
                # The chain moved to another store meanwhile (a blob skipped as uploaded was
                # uploaded to the old store): the record's blobs go with it again.
                epoch = -1
            token, appended = self._write(built.body, blobs=built.blobs, blobs_epoch=epoch)
        self.spool.sync(token)
        return appended

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
        self.spool.sync(self.spool.write([("checkpoint", key, data)], epoch=self._epoch))
        self._checkpointed = self.seq
        return key
