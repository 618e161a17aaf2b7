"""From the spool to the store: the uploader thread, its retries, and the retention it sets.

Objects go in order (public keys, records by chain and seq, checkpoints after the records
they name) and a record's blobs before it, so the store never holds a record whose blobs or
key are missing. A blob or key that several records rely on is written once and its
retention extended as newer records need it. Blocks on disk and network: it runs in its own
thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gatehouse.common.lru import Lru
from gatehouse.recording.canonical import parse_json, ref_hex
from gatehouse.recording.journal import Journal
from gatehouse.recording.layout import blob_key, parse_key
from gatehouse.recording.reader import blob_refs
from gatehouse.recording.spool import Spool
from gatehouse.recording.stores import NotFound, Store

log = logging.getLogger("gatehouse.recording")

# Blobs are retained this much longer than the record that (re)uses them, so that a blob
# reused by every turn of a session has its S3 retention extended about once a day rather
# than on every turn, and never expires before a record that references it.
BLOB_RETENTION_SLACK = timedelta(days=1)


class Uploader:
    """Moves spooled objects to the store in a daemon thread, retrying with backoff."""

    def __init__(
        self,
        spool: Spool,
        store: Store,
        *,
        retention_days: int | None,
        journal: Journal | None = None,
        checkpoint_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        blob_retention_slack: timedelta = BLOB_RETENTION_SLACK,
    ) -> None:
        self.spool = spool
        self.store = store
        self.retention_days = retention_days
        self.journal = journal
        self.checkpoint_interval = checkpoint_interval
        self.clock = clock
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.blob_retention_slack = blob_retention_slack
        self.uploaded = 0
        self.failures = 0
        self.last_error: str | None = None
        self._retained: Lru[str, datetime] = Lru(100_000)  # blob/key object -> retain-until we know it has
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._pass_lock = threading.Lock()

    # -- control ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread unless it runs already (a script reload must not start a second)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gatehouse-uploader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    def move_to(self, store: Store) -> None:
        """Upload to another store from now on (the spool must hold nothing for the old one)."""
        with self._pass_lock:
            self.store = store
            self._retained = Lru(100_000)  # retention known in the old store says nothing here

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the spool is empty; False on timeout (objects stay spooled)."""
        deadline = time.monotonic() + timeout
        self.wake()
        while time.monotonic() < deadline:
            if not self.spool.pending() and self._idle.is_set():
                return True
            if not self.running:
                try:
                    self.upload_pending(deadline)
                except Exception as e:
                    self._note_failure(e)
                    return False
                continue
            time.sleep(0.02)
        return not self.spool.pending()

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.initial_backoff
        next_checkpoint = time.monotonic() + self.checkpoint_interval
        while not self._stop.is_set():
            self._wake.clear()
            if self.journal is not None and time.monotonic() >= next_checkpoint:
                next_checkpoint = time.monotonic() + self.checkpoint_interval
                try:
                    self.journal.checkpoint()
                except Exception as e:
                    log.error("recording: cannot spool a checkpoint: %s", e)
            try:
                self.upload_pending()
            except Exception as e:
                self._note_failure(e)
                # Jittered so that replicas recovering together do not retry in lockstep.
                self._stop.wait(backoff * (0.5 + random.random() / 2))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if self.last_error is not None:
                log.warning("recording: store %s reachable again; spooled records uploaded", self.store.url)
                self.last_error = None
            backoff = self.initial_backoff
            self._idle.set()
            wait = max(0.05, min(1.0, next_checkpoint - time.monotonic()))
            self._wake.wait(wait)

    def _note_failure(self, e: Exception) -> None:
        self.failures += 1
        message = str(e) or type(e).__name__
        if message != self.last_error:
            log.warning(
                "recording: upload to %s failed, will retry (records stay in the spool %s): %s",
                self.store.url,
                self.spool.root,
                message,
            )
        self.last_error = message

    # -- one pass ------------------------------------------------------------------------------
    def _needed_until(self) -> datetime:
        now = datetime.fromtimestamp(self.clock(), UTC)
        return now + timedelta(days=self.retention_days or 0)

    def upload_pending(self, deadline: float | None = None) -> int:
        """Upload everything spooled, in order; raise on the first failure. Returns the count.
        With a `deadline` (time.monotonic()), stop there, including waiting for a pass the
        thread has under way."""
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._pass_lock.acquire(timeout=timeout):
            return 0
        try:
            n = 0
            for key in self.spool.pending():
                if deadline is not None and time.monotonic() > deadline:
                    break
                self._upload(key)
                n += 1
            return n
        finally:
            self._pass_lock.release()

    def _upload(self, key: str) -> None:
        try:
            data = self.spool.read(key)
        except FileNotFoundError:
            return
        kind = parse_key(key).kind  # type: ignore[union-attr] - pending() lists parsed keys
        until = self._needed_until()
        if kind == "key":
            self._put_shared(key, data, until, content_type="application/x-pem-file")
            self.spool.remove(key)
            return
        if kind == "record":
            for ref in blob_refs(parse_json(data)):
                self._ensure_blob(ref_hex(ref), until)
        if not self.store.put(key, data, retain_until=until):
            existing = self.store.get(key)
            if existing != data:
                # Never overwritten and never dropped: kept aside for an operator to look at.
                target = self.spool.set_aside(key)
                log.error(
                    "recording: %s already exists in %s with different content; kept the spooled copy at %s",
                    key,
                    self.store.url,
                    target,
                )
                return
        self.spool.remove(key)
        self.uploaded += 1

    def _put_shared(self, key: str, data: bytes, until: datetime, *, content_type: str = "application/json") -> None:
        """An object several records rely on (a blob, a public key): written once, and its
        retention extended when a newer record needs it longer."""
        target = until + self.blob_retention_slack
        if not self.store.put(key, data, retain_until=target, content_type=content_type):
            self.store.extend_retention(key, target)
        self._retained.put(key, target)

    def _ensure_blob(self, hx: str, until: datetime) -> None:
        key = blob_key(hx)
        known = self._retained.get(key)
        if known is not None and known >= until:
            return
        if self.spool.has_blob(hx):
            self._put_shared(key, self.spool.read_blob(hx), until)
            self.spool.uploaded.put(hx, True)
            self.spool.remove_blob(hx)
            return
        # Not spooled: an earlier record uploaded it (the journal skips blobs it knows are stored).
        target = until + self.blob_retention_slack
        try:
            self.store.extend_retention(key, target)
        except NotFound:
            log.error(
                "recording: blob %s is in neither the spool nor the store %s; verify will report it", hx, self.store.url
            )
            return
        self._retained.put(key, target)
