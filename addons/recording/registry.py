"""The process's recordings: a spool, its journal and its uploader, one set per spool directory.

A registry because of mitmproxy's script reloads (see `Recording`): it lives in this module,
which a reload does not re-run. Also the write path's start, append and shutdown, and moving
to another store on a reload (a chain belongs to its store).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gatehouse.recording.journal import Appended, Journal
from gatehouse.recording.records import BuiltRecord
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.spool import Spool, SpoolError, SpoolForOtherStore, SpoolLocked
from gatehouse.recording.stores import LocalStore, Store, StoreError
from gatehouse.recording.uploader import UPLOAD_CONCURRENCY, Uploader

log = logging.getLogger("gatehouse.recording")


def store_identity(store: Store) -> str:
    """The url a chain's store is known by in the spool: a local store's absolute path (the
    same folder named relatively from two working directories is one store)."""
    if isinstance(store, LocalStore):
        return str(store.root.absolute())
    return store.url


class Recording:
    """One spool directory's journal and uploader: at most one per directory per process.

    mitmproxy re-runs a script's module when the file changes; the registry lives in this
    (imported, not reloaded) module, so a reloaded Recorder finds the running uploader and
    continues the same chain instead of starting a second thread.
    """

    _registry: dict[Path, Recording] = {}
    _registry_lock = threading.Lock()

    def __init__(self, spool: Spool, journal: Journal, uploader: Uploader) -> None:
        self.spool = spool
        self.journal = journal
        self.uploader = uploader

    @classmethod
    def open(
        cls,
        spool_dir: str | Path,
        *,
        store: Store,
        key: SigningKey,
        retention_days: int | None,
        gateway_version: str,
        policy_sha256: str | None,
        checkpoint_interval: float = 60.0,
        upload_concurrency: int = UPLOAD_CONCURRENCY,
        clock: Callable[[], float] = time.time,
    ) -> Recording:
        path = Path(spool_dir).expanduser().absolute()
        with cls._registry_lock:
            rec = cls._registry.get(path)
            if rec is None:
                spool = Spool(path, store_url=store_identity(store))
                journal = Journal(
                    spool,
                    key,
                    gateway_version=gateway_version,
                    policy_sha256=policy_sha256,
                    retention_days=retention_days,
                    clock=clock,
                    store_url=store_identity(store),
                )
                uploader = Uploader(
                    spool,
                    store,
                    retention_days=retention_days,
                    journal=journal,
                    checkpoint_interval=checkpoint_interval,
                    clock=clock,
                    concurrency=upload_concurrency,
                )
                rec = cls._registry[path] = cls(spool, journal, uploader)
            else:
                if store_identity(store) != rec.journal.store_url:
                    rec._move_to(store)
                rec.journal.reconfigure(
                    key=key, gateway_version=gateway_version, policy_sha256=policy_sha256, retention_days=retention_days
                )
                rec.uploader.store = store
                rec.uploader.retention_days = retention_days
                rec.uploader.checkpoint_interval = checkpoint_interval
                rec.uploader.concurrency = upload_concurrency
            return rec

    def _move_to(self, store: Store, timeout: float = 10.0) -> None:
        """A reload changed the store: end the chain in the old store (checkpoint, upload what
        the spool holds), and start the next record's chain in the new one. SpoolForOtherStore
        (the reload is refused, recording goes on to the old store) when the old store does not
        take everything in `timeout`."""
        old = self.uploader.store
        new_url = store_identity(store)
        was_running = self.uploader.running
        self.uploader.stop(timeout=min(timeout, 5.0))

        def finish() -> None:
            error: Exception | None = None
            try:
                self.uploader.upload_pending(time.monotonic() + timeout)
            except (StoreError, OSError, ValueError) as e:
                error = e
            left = self.spool.pending() if self.spool.has_pending() else []
            if left:
                raise SpoolForOtherStore(
                    f"cannot move recording from {old.url} to {store.url}: {len(left)} object(s) in the "
                    f"spool {self.spool.root} still wait for {old.url}"
                    + (f" ({error})" if error else "")
                    + "; recording goes on to the old store until they are uploaded"
                )
            self.spool.rebind(new_url)
            self.spool.close_segment()  # the old store's segments go once shipped

        try:
            self.journal.move_to(new_url, finish)
        except BaseException:
            if was_running:
                self.uploader.start()
            raise
        self.uploader.move_to(store)
        log.info("recording: the chain in %s ended; new records go to %s", old.url, store.url)
        if was_running:
            self.uploader.start()

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
        except Exception as e:
            log.error("recording: cannot spool the shutdown checkpoint: %s", e)
        try:
            # head.json names the last record, and the last segment can go once shipped.
            self.spool.close_segment()
        except SpoolError as e:
            log.error("recording: %s", e)
        deadline = time.monotonic() + timeout
        try:
            self.uploader.upload_pending(deadline)
        except (StoreError, OSError, ValueError) as e:
            log.warning(
                "recording: %d object(s) stay in the spool %s for the next start: %s",
                len(self.spool.pending()),
                self.spool.root,
                e,
            )
            return False
        finally:
            self.spool.save_cursor()  # as far as the upload got
        if self.spool.has_pending():
            left = self.spool.pending()
            log.warning("recording: %d object(s) stay in the spool %s for the next start", len(left), self.spool.root)
            return False
        return True
