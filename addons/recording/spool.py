"""The recording spool: a local directory where records wait, durably, for the store.

A record is in the spool (fsynced, with its directory) before the gateway lets the response
go; the store may be slow or down without losing anything. The uploader resumes whatever the
spool holds on start, including records of earlier runs.

Spool layout::

    <spool>/.lock                 flock: one gateway process per spool
    <spool>/store.json            {"url"} of the store the outbox uploads to (see `Spool.open`)
    <spool>/head.json             {"chain","seq","hash","store"} of the last record appended (any
                                  run), and the store its chain belongs to
    <spool>/blobs/<hh>/<hex>.json blobs waiting for upload
    <spool>/outbox/<store key>    records, checkpoints and public keys waiting for upload
    <spool>/failed/<store key>    objects the store already holds with different bytes (kept)

Everything here blocks on disk: callers run it in worker threads.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from gatehouse.common.durable import makedirs_durable, replace_durable, write_exclusive
from gatehouse.common.lru import Lru
from gatehouse.recording.layout import parse_key

log = logging.getLogger("gatehouse.recording")


class SpoolError(Exception):
    """The spool cannot take a record (disk full, unwritable, not a directory...)."""


class SpoolLocked(SpoolError):
    """This gateway cannot take the spool directory: another gateway process uses it (or, as
    `SpoolForOtherStore`, it holds objects waiting for another store). Fatal at start-up."""


class SpoolForOtherStore(SpoolLocked):
    """The spool holds objects waiting for another store than the one this gateway records to.

    They cannot go to this store: their chain belongs to the other one (verify there would miss
    its beginning, and here its end). They stay until a gateway recording to that store uploads
    them."""


def _spool_error(what: str, e: OSError) -> SpoolError:
    return SpoolError(f"{what}: {e.strerror or e}")


class Spool:
    """One spool directory. With `store_url`, the spool is bound to that store when it opens
    (``store.json``): objects spooled for one store never go to another."""

    def __init__(self, root: str | Path, *, store_url: str | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self.store_url = store_url
        self._bound = False
        self.blobs_dir = self.root / "blobs"
        self.outbox = self.root / "outbox"
        self.failed = self.root / "failed"
        self._lock_fd: int | None = None
        self._open_lock = threading.Lock()
        # Blob hashes known to be in the store: not written to the spool again. Bounded
        # (~20 MB); a blob that falls out is spooled again and found existing on upload.
        self.uploaded: Lru[str, bool] = Lru(100_000)

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    # -- opening -------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the layout, take the process lock and bind the spool to its store; idempotent.

        SpoolLocked if another process has the lock; SpoolForOtherStore if the outbox still
        holds objects for another store than `store_url` (an empty spool is simply re-bound).
        """
        with self._open_lock:
            if self._lock_fd is not None and (self.root / ".lock").exists():
                if not self._bound:  # (a second flock of our own lock file would fail)
                    self._bind(self.store_url)
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
                raise SpoolLocked(
                    f"recording spool {self.root} is in use by another gateway process; "
                    "give each gateway its own [recording] spool_dir (or [gateway] state_dir)"
                ) from None
            try:
                self._bind(self.store_url)
            except BaseException:
                os.close(fd)
                raise
            if self._lock_fd is not None and self._lock_fd != fd:
                os.close(self._lock_fd)
            self._lock_fd = fd

    def rebind(self, store_url: str) -> None:
        """Bind the spool to another store (a reload that changed the policy's store); the
        outbox must be empty (SpoolForOtherStore otherwise). Caller holds the process lock."""
        with self._open_lock:
            try:
                self._bind(store_url)
            except SpoolForOtherStore:
                raise
            except SpoolError as e:  # an unusable spool: bound when it opens again
                log.warning("recording: %s", e)
                self._bound = False
            self.store_url = store_url
            # What was uploaded to the old store is not in the new one.
            self.uploaded = Lru(100_000)

    def bound_store(self) -> str | None:
        """The url in store.json: the store the outbox uploads to (None: not bound yet)."""
        try:
            doc = json.loads((self.root / "store.json").read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("recording spool: cannot read %s (%s)", self.root / "store.json", e)
            return None
        url = doc.get("url") if isinstance(doc, dict) else None
        return url if isinstance(url, str) else None

    def _bind(self, store_url: str | None) -> None:
        if store_url is None:  # a spool used without a store (tests, tools): nothing to check
            self._bound = True
            return
        bound = self.bound_store()
        if bound is not None and bound != store_url:
            left = self.pending()
            if left:
                raise SpoolForOtherStore(
                    f"recording spool {self.root} holds {len(left)} object(s) waiting for the store "
                    f"{bound}, but this gateway records to {store_url}; they belong to a chain in "
                    f"{bound} and cannot go to another store. Start the gateway once more with "
                    f"[recording] store = {json.dumps(bound)} to upload them (it uploads at start and "
                    f"at shutdown), or move {self.outbox} aside"
                )
        if bound != store_url:
            # No object waits for the old store (or none was ever bound: a spool written before
            # stores were recorded here belongs to the store it is used with).
            try:
                replace_durable(
                    self.root / "store.json", json.dumps({"url": store_url}, sort_keys=True).encode(), mode=0o600
                )
            except OSError as e:
                raise _spool_error(f"cannot write {self.root / 'store.json'}", e) from None
        self._bound = True

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
        if self.uploaded.get(hx) is not None:  # a lookup that counts as a use: a reused blob stays known
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
                p = parse_key(key)
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
            log.error(
                "recording spool: cannot read %s (%s); the new chain will not name the previous one",
                self.root / "head.json",
                e,
            )
            return None
        return head if isinstance(head, dict) else None

    def write_head(self, head: dict[str, Any]) -> None:
        try:
            replace_durable(self.root / "head.json", json.dumps(head, sort_keys=True).encode(), mode=0o600)
        except OSError as e:
            raise _spool_error("cannot update the recording spool's head.json", e) from None
