"""From the spool to the store: the uploader thread, its retries, and the retention it sets.

Objects go in the order they were spooled (a public key before the records it signs, a
record's blobs before it, records by chain and seq, checkpoints after the records they name),
so the store never holds a record whose blobs or key are missing. They go in batches; the
spool's cursor moves past a batch once the store holds it (re-uploading after a crash is safe:
puts are exclusive, and an object already stored with the same bytes counts as uploaded). A
blob or key that several records rely on is written once and its retention extended as newer
records need it. Blocks on disk and network: it runs in its own thread.

A store that puts one object per request (S3) gets a batch's puts from `concurrency` threads
at once, in three steps that each finish before the next begins: blobs and keys (and the
retention of blobs stored before), then records, then checkpoints. The order that matters
(nothing names an object the store lacks) holds; within a step the order does not, and a
batch cut short by a failure leaves the store with some of its records and not others until
the retry puts the rest (the cursor moves only past a whole batch).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from gatehouse.common.lru import Lru
from gatehouse.recording.canonical import parse_json, ref_hex
from gatehouse.recording.journal import Journal
from gatehouse.recording.layout import blob_key
from gatehouse.recording.reader import blob_refs
from gatehouse.recording.spool import Frame, Spool
from gatehouse.recording.stores import NotFound, Store

log = logging.getLogger("gatehouse.recording")

# Blobs are retained this much longer than the record that (re)uses them, so that a blob
# reused by every turn of a session has its S3 retention extended about once a day rather
# than on every turn, and never expires before a record that references it.
BLOB_RETENTION_SLACK = timedelta(days=1)

# Woken by an append while idle, the uploader waits this long for the appends that follow to
# join its batch: a local store makes a batch durable together (`LocalStore.put_batch`: two
# syncfs, or each file then each directory once), the spool's cursor is saved once, and those
# writes compete with the appends' fdatasync for the disk. A record is durable in the spool
# meanwhile.
UPLOAD_LINGER = 0.1

# Puts in flight at once to a store that takes one object per request (S3): one uploader
# thread putting one object at a time fell behind 64 streaming sessions; 16 at a 20 ms
# round trip move ~60 exchanges/s (benchmarks/upload_throughput.py).
UPLOAD_CONCURRENCY = 16

# (kind, store key, data, retain until, content type) of one object to put.
Put = tuple[str, str, bytes, datetime, str]


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
        linger: float = UPLOAD_LINGER,
        concurrency: int = UPLOAD_CONCURRENCY,
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
        self.linger = linger
        self.concurrency = concurrency
        self.uploaded = 0
        self.failures = 0
        self.last_error: str | None = None
        self._retained: Lru[str, datetime] = Lru(100_000)  # blob/key object -> retain-until we know it has
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._hurry = threading.Event()  # a flush or a stop: no lingering
        self._pass_lock = threading.Lock()
        self._count_lock = threading.Lock()

    # -- control ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread unless it runs already (a script reload must not start a second)."""
        if self.running:
            return
        self._stop.clear()
        self._hurry.clear()
        self._thread = threading.Thread(target=self._run, name="gatehouse-uploader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._hurry.set()
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
        self._hurry.set()
        self.wake()
        try:
            while time.monotonic() < deadline:
                if not self.spool.has_pending() and self._idle.is_set():
                    return True
                if not self.running:
                    try:
                        self.upload_pending(deadline)
                    except Exception as e:
                        self._note_failure(e)
                        return False
                    continue
                time.sleep(0.02)
            return not self.spool.has_pending()
        finally:
            if not self._stop.is_set():
                self._hurry.clear()

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
            self.spool.save_cursor(only_if_due=True)
            self._idle.set()
            wait = max(0.05, min(1.0, next_checkpoint - time.monotonic()))
            if self._wake.wait(wait) and not self._hurry.is_set():
                self._hurry.wait(self.linger)

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
        """Upload everything spooled, in order; raise on the first failure. Returns how many
        records, checkpoints and keys went. With a `deadline` (time.monotonic()), stop there,
        including waiting for a pass the thread has under way."""
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._pass_lock.acquire(timeout=timeout):
            return 0
        try:
            n = 0
            while deadline is None or time.monotonic() <= deadline:
                batch = self.spool.next_batch()
                if batch is None:
                    break
                n += self._ship(batch.frames)
                self.spool.advance(batch)
            return n
        finally:
            self._pass_lock.release()

    def _ship(self, frames: list[Frame]) -> int:
        """Put one batch of frames into the store. A store that can (the local one) makes the
        whole batch durable together (`LocalStore.put_batch`); others get its puts in three
        steps (see the module's docstring)."""
        until = self._needed_until()
        shared_until = until + self.blob_retention_slack
        shared: list[Put] = []  # blobs and keys: before the records that need them
        records: list[Put] = []
        checkpoints: list[Put] = []
        stored_before: dict[str, None] = {}  # blobs of this batch's records stored by earlier ones
        in_batch: set[str] = set()
        for kind, key, data in frames:
            if kind == "blob":
                shared.append((kind, blob_key(key), data, shared_until, "application/json"))
                in_batch.add(key)
            elif kind == "key":
                shared.append((kind, key, data, shared_until, "application/x-pem-file"))
            elif kind == "record":
                for ref in blob_refs(parse_json(data)):
                    hx = ref_hex(ref)
                    if hx not in in_batch:  # stored by an earlier record: its retention is extended
                        stored_before[hx] = None
                records.append((kind, key, data, until, "application/json"))
            elif kind == "checkpoint":
                checkpoints.append((kind, key, data, until, "application/json"))
        put_batch = getattr(self.store, "put_batch", None)
        if put_batch is not None:
            for hx in stored_before:
                self._ensure_blob(hx, until)
            puts = [*shared, *records, *checkpoints]
            created = put_batch([(k, d) for _kind, k, d, _u, _t in puts])
            return sum(self._after_put(p, c) for p, c in zip(puts, created, strict=True))
        n = 0
        self._in_parallel([lambda hx=hx: self._ensure_blob(hx, until) for hx in stored_before])
        for step in (shared, records, checkpoints):
            n += sum(self._in_parallel([lambda p=p: self._after_put(p, self._put(p)) for p in step]))
        return n

    def _put(self, put: Put) -> bool:
        _kind, key, data, retain, content_type = put
        return self.store.put(key, data, retain_until=retain, content_type=content_type)

    def _in_parallel(self, calls: Sequence[Callable[[], int | None]]) -> list[int | None]:
        """Run `calls` on up to `concurrency` threads; their results in order. On several
        threads all of them run (none is cancelled by another's failure), then the first
        failure is raised; on one (a single call, or `concurrency` 1) they run in turn and the
        first failure stops them. Daemon threads, like the uploader's own: a put hanging on a
        dead endpoint must not hold up the process's exit (a thread pool's workers are joined
        at exit)."""
        if len(calls) <= 1 or self.concurrency <= 1:
            return [call() for call in calls]
        results: list[int | None] = [None] * len(calls)
        errors: list[tuple[int, BaseException]] = []
        todo = iter(range(len(calls)))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    results[i] = calls[i]()
                except BaseException as e:  # raised in the uploader's thread, below
                    with lock:
                        errors.append((i, e))

        threads = [
            threading.Thread(target=work, name="gatehouse-upload", daemon=True)
            for _ in range(min(self.concurrency, len(calls)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise min(errors, key=lambda ie: ie[0])[1]
        return results

    def _after_put(self, put: Put, created: bool) -> int:
        """Account for one put (`created`: the store did not hold the key); 1 when it counts
        as an uploaded record, checkpoint or key."""
        kind, key, data, retain, _content_type = put
        if kind in ("blob", "key"):
            # Shared by several records: written once, its retention extended as needed.
            if not created:
                self.store.extend_retention(key, retain)
            self._retained.put(key, retain)
            if kind == "blob":
                self.spool.uploaded.put(key.rsplit("/", 1)[1][: -len(".json")], True)
                return 0
            return 1
        if not created and self.store.get(key) != data:
            # Never overwritten and never dropped: kept aside for an operator to look at.
            target = self.spool.set_aside(key, data)
            log.error(
                "recording: %s already exists in %s with different content; kept the spooled copy at %s",
                key,
                self.store.url,
                target,
            )
            return 0
        with self._count_lock:
            self.uploaded += 1
        return 1

    def _ensure_blob(self, hx: str, until: datetime) -> None:
        key = blob_key(hx)
        known = self._retained.get(key)
        if known is not None and known >= until:
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
