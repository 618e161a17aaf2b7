"""The write path: a durable local spool, the journal that chains and signs records into it,
and the background uploader that moves them to the store.

A record is in the spool (fsynced, with its directory) before the gateway lets the response
go; the store may be slow or down without losing anything. On start the uploader resumes
whatever the spool holds, including records of earlier runs.

Spool layout::

    <spool>/.lock                 flock: one gateway process per spool
    <spool>/head.json             {"chain","seq","hash"} of the last record appended (any run)
    <spool>/blobs/<hh>/<hex>.json blobs waiting for upload
    <spool>/outbox/<store key>    records, checkpoints and public keys waiting for upload
    <spool>/failed/<store key>    objects the store already holds with different bytes (kept)

Everything here blocks on disk or network: the addon calls it from worker threads.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from gatehouse.recording import records
from gatehouse.recording.records import BuiltRecord, SigningKey
from gatehouse.recording.stores import NotFound, Store, StoreError, _fsync_dir, makedirs_durable, write_exclusive

log = logging.getLogger("gatehouse.recording")

# Blobs are retained this much longer than the record that (re)uses them, so that a blob
# reused by every turn of a session has its S3 retention extended about once a day rather
# than on every turn, and never expires before a record that references it.
BLOB_RETENTION_SLACK = timedelta(days=1)


class SpoolError(Exception):
    """The spool cannot take a record (disk full, unwritable, not a directory...)."""


class SpoolLocked(SpoolError):
    """Another gateway process uses this spool directory."""


class _Lru:
    """A bounded map, least recently used first out."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._d: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            value = self._d.get(key)
            if value is not None:
                self._d.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.limit:
                self._d.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


def _spool_error(what: str, e: OSError) -> SpoolError:
    return SpoolError(f"{what}: {e.strerror or e}")


class Spool:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.blobs_dir = self.root / "blobs"
        self.outbox = self.root / "outbox"
        self.failed = self.root / "failed"
        self._lock_fd: int | None = None
        self._open_lock = threading.Lock()
        # Blob hashes known to be in the store: not written to the spool again. Bounded
        # (~20 MB); a blob that falls out is spooled again and found existing on upload.
        self.uploaded = _Lru(100_000)

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    # -- opening -------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the layout and take the process lock; idempotent."""
        with self._open_lock:
            if self._lock_fd is not None and (self.root / ".lock").exists():
                return
            try:
                for d in (self.root, self.blobs_dir, self.outbox):
                    makedirs_durable(d)
                fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise _spool_error(f"recording spool {self.root} is not usable", e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SpoolLocked(f"recording spool {self.root} is in use by another gateway process; "
                                  "give each gateway its own [recording] spool_dir") from None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            self._lock_fd = fd

    def close(self) -> None:
        with self._open_lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def probe(self) -> None:
        """Raise SpoolError unless a file can be created, written and removed here. Cheap
        (no fsync): it runs about once a second on a busy gateway."""
        self.open()
        path = self.root / f".probe-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"probe")
            finally:
                os.close(fd)
            path.unlink()
        except OSError as e:
            raise _spool_error(f"recording spool {self.root} is not writable", e) from None

    # -- blobs ---------------------------------------------------------------------------------
    def blob_path(self, hx: str) -> Path:
        return self.blobs_dir / hx[:2] / f"{hx}.json"

    def put_blob(self, hx: str, data: bytes) -> None:
        if hx in self.uploaded:
            return
        path = self.blob_path(hx)
        if path.exists():
            return
        try:
            write_exclusive(path, data, mode=0o600)
        except OSError as e:
            raise _spool_error(f"cannot spool blob {hx}", e) from None

    def has_blob(self, hx: str) -> bool:
        return self.blob_path(hx).exists()

    def read_blob(self, hx: str) -> bytes:
        return self.blob_path(hx).read_bytes()

    def remove_blob(self, hx: str) -> None:
        try:
            self.blob_path(hx).unlink()
        except FileNotFoundError:
            pass

    # -- outbox --------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> bool:
        """Spool an object for upload under its store key; False if one is already spooled."""
        try:
            return write_exclusive(self.outbox / key, data, mode=0o600)
        except OSError as e:
            raise _spool_error(f"cannot spool {key}", e) from None

    def pending(self) -> list[str]:
        """Spooled store keys in upload order: public keys, records (by chain, seq), checkpoints.

        A checkpoint comes after the records it names, so the store never holds a checkpoint
        whose record is still missing (verify would call that a truncated chain).
        """
        found: list[tuple[int, str, int, str]] = []
        if not self.outbox.is_dir():
            return []
        order = {"key": 0, "record": 1, "checkpoint": 2, "prune": 2}
        for dirpath, _dirs, files in os.walk(self.outbox):
            rel = os.path.relpath(dirpath, self.outbox).replace(os.sep, "/")
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                p = records.parse_key(key)
                if p is None or p.kind not in order:
                    log.warning("recording spool: ignoring unexpected file %s", self.outbox / key)
                    continue
                found.append((order[p.kind], p.chain, p.seq, key))
        return [k for *_, k in sorted(found)]

    def read(self, key: str) -> bytes:
        return (self.outbox / key).read_bytes()

    def remove(self, key: str) -> None:
        try:
            (self.outbox / key).unlink()
        except FileNotFoundError:
            pass

    def set_aside(self, key: str) -> Path:
        target = self.failed / key
        makedirs_durable(target.parent)
        os.replace(self.outbox / key, target)
        return target

    # -- chain head ----------------------------------------------------------------------------
    def read_head(self) -> dict[str, Any] | None:
        try:
            head = json.loads((self.root / "head.json").read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("recording spool: cannot read %s (%s); the new chain will not name the previous one",
                      self.root / "head.json", e)
            return None
        return head if isinstance(head, dict) else None

    def write_head(self, head: dict[str, Any]) -> None:
        tmp = self.root / f".tmp-head-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(json.dumps(head, sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / "head.json")
            _fsync_dir(self.root)
        except OSError as e:
            raise _spool_error("cannot update the recording spool's head.json", e) from None


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

    def __init__(self, spool: Spool, key: SigningKey, *, gateway_version: str, policy_sha256: str | None,
                 retention_days: int | None, node: str | None = None, clock: Callable[[], float] = time.time) -> None:
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

    def reconfigure(self, *, key: SigningKey, gateway_version: str, policy_sha256: str | None,
                    retention_days: int | None) -> None:
        with self._lock:
            self.key = key
            self.gateway_version = gateway_version
            self.policy_sha256 = policy_sha256
            self.retention_days = retention_days

    def _publish_key(self) -> None:
        if self.key.key_id not in self._published:
            self.spool.put(records.public_key_key(self.key.key_id), self.key.public_pem())
            self._published.add(self.key.key_id)

    def _write(self, body: dict[str, Any]) -> Appended:
        """Seal and spool one record. Caller holds the lock."""
        if self.chain_id is None:
            previous = self.spool.read_head()
            chain_id = records.new_chain_id(self.clock())
            self.chain_id = chain_id
            try:
                start = records.start_record_body(
                    previous=previous, gateway_version=self.gateway_version, policy_sha256=self.policy_sha256,
                    node=self.node, key_id=self.key.key_id, retention_days=self.retention_days)
                self._seal_and_spool(start)
            except BaseException:
                self.chain_id = None  # retry the start record (and a fresh chain id) next time
                raise
        return self._seal_and_spool(body)

    def _seal_and_spool(self, body: dict[str, Any]) -> Appended:
        assert self.chain_id is not None
        self._publish_key()
        seq = self.seq + 1
        data, digest = records.seal_record(body, chain_id=self.chain_id, seq=seq, prev=self.head,
                                           at=self.clock(), key=self.key)
        key = records.record_key(self.chain_id, seq)
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
            data = records.make_checkpoint(chain_id=self.chain_id, seq=self.seq, head=self.head, key=self.key,
                                           at=self.clock())
            key = records.checkpoint_key(self.chain_id, self.seq)
            self.spool.put(key, data)
            self._checkpointed = self.seq
            return key


class Uploader:
    """Moves spooled objects to the store in a daemon thread, retrying with backoff."""

    def __init__(self, spool: Spool, store: Store, *, retention_days: int | None, journal: Journal | None = None,
                 checkpoint_interval: float = 60.0, clock: Callable[[], float] = time.time,
                 initial_backoff: float = 0.5, max_backoff: float = 30.0,
                 blob_retention_slack: timedelta = BLOB_RETENTION_SLACK) -> None:
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
        self._retained = _Lru(100_000)  # blob/key object -> retain-until we know it has
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
                except Exception as e:  # noqa: BLE001 - reported, the objects stay spooled
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
                except Exception as e:  # noqa: BLE001
                    log.error("recording: cannot spool a checkpoint: %s", e)
            try:
                self.upload_pending()
            except Exception as e:  # noqa: BLE001 - any failure: keep the objects, retry later
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
            log.warning("recording: upload to %s failed, will retry (records stay in the spool %s): %s",
                        self.store.url, self.spool.root, message)
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
        kind = records.parse_key(key).kind  # type: ignore[union-attr] - pending() lists parsed keys
        until = self._needed_until()
        if kind == "key":
            self._put_shared(key, data, until, content_type="application/x-pem-file")
            self.spool.remove(key)
            return
        if kind == "record":
            for ref in records.blob_refs(records.parse_json(data)):
                self._ensure_blob(records.ref_hex(ref), until)
        if not self.store.put(key, data, retain_until=until):
            existing = self.store.get(key)
            if existing != data:
                # Never overwritten and never dropped: kept aside for an operator to look at.
                target = self.spool.set_aside(key)
                log.error("recording: %s already exists in %s with different content; kept the spooled copy at %s",
                          key, self.store.url, target)
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
        key = records.blob_key(hx)
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
            log.error("recording: blob %s is in neither the spool nor the store %s; verify will report it",
                      hx, self.store.url)
            return
        self._retained.put(key, target)


class Recording:
    """One spool directory's journal and uploader: at most one per directory per process.

    mitmproxy re-runs a script's module when the file changes; the registry lives in this
    (imported, not reloaded) module, so a reloaded Recorder finds the running uploader and
    continues the same chain instead of starting a second thread.
    """

    _registry: dict[Path, "Recording"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, spool: Spool, journal: Journal, uploader: Uploader) -> None:
        self.spool = spool
        self.journal = journal
        self.uploader = uploader

    @classmethod
    def open(cls, spool_dir: str | Path, *, store: Store, key: SigningKey, retention_days: int | None,
             gateway_version: str, policy_sha256: str | None, checkpoint_interval: float = 60.0,
             clock: Callable[[], float] = time.time) -> "Recording":
        path = Path(spool_dir).expanduser().absolute()
        with cls._registry_lock:
            rec = cls._registry.get(path)
            if rec is None:
                spool = Spool(path)
                journal = Journal(spool, key, gateway_version=gateway_version, policy_sha256=policy_sha256,
                                  retention_days=retention_days, clock=clock)
                uploader = Uploader(spool, store, retention_days=retention_days, journal=journal,
                                    checkpoint_interval=checkpoint_interval, clock=clock)
                rec = cls._registry[path] = cls(spool, journal, uploader)
            else:
                rec.journal.reconfigure(key=key, gateway_version=gateway_version, policy_sha256=policy_sha256,
                                        retention_days=retention_days)
                rec.uploader.store = store
                rec.uploader.retention_days = retention_days
                rec.uploader.checkpoint_interval = checkpoint_interval
            return rec

    @classmethod
    def forget(cls, spool_dir: str | Path) -> None:
        """Drop a registry entry (tests; a process that is done with a spool)."""
        path = Path(spool_dir).expanduser().absolute()
        with cls._registry_lock:
            rec = cls._registry.pop(path, None)
        if rec is not None:
            rec.uploader.stop()
            rec.spool.close()

    def start(self) -> None:
        """Open the spool (SpoolLocked if another process has it) and start uploading."""
        try:
            self.spool.open()
        except SpoolLocked:
            raise
        except SpoolError as e:
            # Not fatal, and only a warning: mitmdump exits on an error logged during start-up,
            # while the recorder refuses (or continues) per policy until the spool works.
            log.warning("recording: %s", e)
        self.uploader.start()

    def append(self, built: BuiltRecord) -> Appended:
        appended = self.journal.append(built)
        self.uploader.wake()
        return appended

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Checkpoint the chain's head and upload what the time allows; the rest stays spooled
        for the next start. Returns whether the spool was emptied."""
        self.uploader.stop(timeout=min(timeout, 5.0))
        try:
            self.journal.checkpoint()
        except Exception as e:  # noqa: BLE001
            log.error("recording: cannot spool the shutdown checkpoint: %s", e)
        deadline = time.monotonic() + timeout
        try:
            self.uploader.upload_pending(deadline)
        except (StoreError, OSError, ValueError) as e:
            log.warning("recording: %d object(s) stay in the spool %s for the next start: %s",
                        len(self.spool.pending()), self.spool.root, e)
            return False
        left = self.spool.pending()
        if left:
            log.warning("recording: %d object(s) stay in the spool %s for the next start", len(left), self.spool.root)
        return not left
