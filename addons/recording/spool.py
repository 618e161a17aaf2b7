"""The recording spool: where records wait, durably, for the store.

A record is in the spool (written and ``fdatasync``ed) before the gateway lets the response
go; the store may be slow or down without losing anything. The uploader resumes whatever the
spool holds on start, including records of earlier runs.

Spool layout::

    <spool>/.lock                 flock: one gateway process per spool
    <spool>/store.json            {"url"} of the store the spooled objects go to (see `Spool.open`)
    <spool>/head.json             {"chain","seq","hash","store","stores"}: the last record appended
                                  as of the last segment rotation or shutdown (the segments hold
                                  anything newer)
    <spool>/segments/<n>.seg      append-only segments of frames (n: 12 digits, in write order)
    <spool>/cursor.json           {"segment","offset"}: everything before it is in the store (it
                                  may lag the upload by a second or two: what follows goes again)
    <spool>/failed/<store key>    objects the store already holds with different bytes (kept)

A frame is ``length:u32 crc32:u32`` (big-endian) then `length` bytes of payload:
``kind:u8 keylen:u16 key data``, the crc covering the payload. Kinds: a public key, a blob
(key: its hex), a record, a checkpoint (key: the store key) and a head (the store the chain
belongs to and the last records of other stores, JSON), written with each chain's start record.

One append is one ``write`` of its frames (blobs before their record) and one ``fdatasync``,
shared by every append waiting for it (group commit: a thread syncs for all that wrote before
it started). A crash can leave a torn frame at a segment's end: reading stops at the first
frame whose length or crc is wrong (nothing after it was acknowledged). Each run appends to a
new segment; a segment the uploader has fully shipped and that is no longer appended to is
deleted, after head.json names a record at least as new as its last.

Everything here blocks on disk: callers run it in worker threads.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatehouse.common.durable import fsync_dir, makedirs_durable, replace_durable
from gatehouse.common.lru import Lru
from gatehouse.recording.canonical import sha256_ref
from gatehouse.recording.layout import blob_key, parse_key

log = logging.getLogger("gatehouse.recording")

# A segment is rotated once it holds this much (the next append opens a new one).
SEGMENT_BYTES = 64 * 1024 * 1024
# How many spooled-but-not-uploaded blob names are remembered (64-hex keys: a few MB).
SPOOLED_BLOBS_KEPT = 100_000
# cursor.json is rewritten at most this often: a file created and renamed per upload batch
# competes with the appends' fdatasync for the disk's journal.
CURSOR_SAVE_SECONDS = 1.0
# A frame longer than this is damage, not data (blobs are far smaller).
MAX_FRAME = 1 << 30

_HEADER = struct.Struct(">II")  # payload length, crc32(payload)
_KIND = struct.Struct(">BH")  # kind, key length
KINDS = {"key": 1, "blob": 2, "record": 3, "checkpoint": 4, "head": 5}
_KIND_NAMES = {v: k for k, v in KINDS.items()}
# The errors that mean a path is not there (those `Path.exists` reads as False).
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)
_SEGMENT_NAME = re.compile(r"^([0-9]{12})\.seg$")

# (kind, key, data): what the journal appends.
Frame = tuple[str, str, bytes]


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


def encode_frames(frames: Sequence[Frame]) -> bytes:
    parts = []
    for kind, key, data in frames:
        k = key.encode()
        payload = _KIND.pack(KINDS[kind], len(k)) + k + data
        parts.append(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
    return b"".join(parts)


def _decode(buf: bytes | memoryview, pos: int) -> tuple[int, str, str, memoryview] | None:
    """The frame at `pos` as (end, kind, key, data), or None where the valid frames end."""
    view = memoryview(buf)
    if pos + _HEADER.size > len(view):
        return None
    length, crc = _HEADER.unpack_from(view, pos)
    end = pos + _HEADER.size + length
    if length < _KIND.size or length > MAX_FRAME or end > len(view):
        return None
    payload = view[pos + _HEADER.size : end]
    if zlib.crc32(payload) != crc:
        return None
    kind, klen = _KIND.unpack_from(payload, 0)
    if kind not in _KIND_NAMES or _KIND.size + klen > length:
        return None
    try:
        key = bytes(payload[_KIND.size : _KIND.size + klen]).decode()
    except UnicodeDecodeError:
        return None
    return end, _KIND_NAMES[kind], key, payload[_KIND.size + klen :]


@dataclass
class _Scan:
    """One segment read from disk: where its valid frames end, what they say."""

    end: int = 0
    size: int = 0
    boundaries: set[int] = field(default_factory=lambda: {0})
    last_record: dict[str, Any] | None = None
    last_head: dict[str, Any] | None = None


def _frames(buf: bytes, start: int = 0) -> Iterator[tuple[int, int, str, str, memoryview]]:
    pos = start
    while (frame := _decode(buf, pos)) is not None:
        end, kind, key, data = frame
        yield pos, end, kind, key, data
        pos = end


def _scan(path: Path, limit: int | None = None) -> _Scan:
    """The frames of a segment (the first `limit` bytes of it: what is known to be valid)."""
    buf = path.read_bytes()
    if limit is not None:
        buf = buf[:limit]
    s = _Scan(size=len(buf))
    for _pos, end, kind, key, data in _frames(buf):
        s.end = end
        s.boundaries.add(end)
        if kind == "record":
            p = parse_key(key)
            if p is not None:
                s.last_record = {"chain": p.chain, "seq": p.seq, "hash": sha256_ref(bytes(data))}
        elif kind == "head":
            try:
                doc = json.loads(bytes(data))
            except ValueError:
                continue
            if isinstance(doc, dict):
                s.last_head = doc
    return s


def _store_key(kind: str, key: str) -> str:
    return blob_key(key) if kind == "blob" else key


def _read_cursor(root: Path) -> tuple[int, int]:
    try:
        doc = json.loads((root / "cursor.json").read_bytes())
        n, off = doc["segment"], doc["offset"]
        if isinstance(n, int) and isinstance(off, int) and n >= 0 and off >= 0:
            return n, off
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("recording spool: cannot read %s (%s); uploading from the start", root / "cursor.json", e)
    return 0, 0


def _segment_names(seg_dir: Path) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(seg_dir)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = _SEGMENT_NAME.match(name)
        if m:
            out.append((int(m.group(1)), seg_dir / name))
    return sorted(out)


def read_spooled(root: str | Path) -> list[tuple[str, bytes]]:
    """(store key, bytes) of every object the spool at `root` holds for upload, in upload
    order, read straight from its files (no lock: it may be in use; tests and tools)."""
    root = Path(root)
    cur_n, cur_off = _read_cursor(root)
    out: list[tuple[str, bytes]] = []
    for n, path in _segment_names(root / "segments"):
        if n < cur_n:
            continue
        buf = path.read_bytes()
        start = cur_off if n == cur_n else 0
        if start not in _scan_boundaries(buf):
            start = 0
        out.extend(
            (_store_key(kind, key), bytes(data)) for _p, _e, kind, key, data in _frames(buf, start) if kind != "head"
        )
    return out


def _scan_boundaries(buf: bytes) -> set[int]:
    return {0} | {end for _p, end, *_ in _frames(buf)}


class _Segment:
    """A segment file: `end` is how far frames are written (for an inactive one, where its
    valid frames end), `synced` how far they are durable; `fd` is open while it is appended to."""

    def __init__(self, n: int, path: Path, *, end: int = 0, fd: int | None = None) -> None:
        self.n = n
        self.path = path
        self.fd = fd
        self.end = end
        self.synced = end
        self.syncing = False
        self.error: str | None = None


@dataclass(frozen=True)
class Batch:
    """Frames read for upload: segment `segment` from `start` to `end`."""

    segment: int
    start: int
    end: int
    frames: list[Frame]


@dataclass(frozen=True)
class Token:
    """What `Spool.sync` waits for: segment `segment` durable up to `end`."""

    segment: _Segment
    end: int


class Spool:
    """One spool directory. With `store_url`, the spool is bound to that store when it opens
    (``store.json``): objects spooled for one store never go to another.

    The journal uses `open`, `read_head`, `needs_blob`, `write` (under its lock: the order of
    a chain's records) and `sync` (outside it: concurrent appends share one fdatasync), and
    `epoch`; the uploader `next_batch`, `advance` and `set_aside`.
    """

    def __init__(self, root: str | Path, *, store_url: str | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self.store_url = store_url
        self._bound = False
        self.segments_dir = self.root / "segments"
        self.failed = self.root / "failed"
        self._lock_fd: int | None = None
        # The lock file's path as a string: `open` checks it on every append (`_locked_here`),
        # where pathlib's join and exists cost four times the stat.
        self._lock_path = str(self.root / ".lock")
        self._open_lock = threading.Lock()
        # Guards everything below; its condition wakes appends waiting for a sync.
        self._cond = threading.Condition(threading.Lock())
        self._segs: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._next_n = 0
        self._cursor = (0, 0)
        # cursor.json lags the upload (see `advance`): when it was last written, and whether
        # the cursor moved since.
        self._cursor_saved_at = float("-inf")
        self._cursor_unsaved = False
        self._head: dict[str, Any] | None = None
        # The head as of the last rotation (durable), and whether head.json holds it yet.
        self._rotated_head: dict[str, Any] | None = None
        self._head_saved = True
        # Blobs in a segment not yet uploaded: a later record that uses one need not spool it
        # again (its frame is uploaded first).
        # Blobs spooled and not yet uploaded, bounded: one forgotten is spooled again (harmless:
        # an identical object in the store counts as uploaded), while a store down for a day
        # must not grow this without end.
        self._spooled: Lru[str, bool] = Lru(SPOOLED_BLOBS_KEPT)
        # Bumped when writes that were not yet durable were lost (a failed fdatasync): the
        # journal starts a new chain instead of linking to a record that is gone.
        self.epoch = 0
        # Blob hashes known to be in the store: not written to the spool again. Bounded
        # (~20 MB); a blob that falls out is spooled again and found existing on upload.
        self.uploaded: Lru[str, bool] = Lru(100_000)

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    # -- opening -------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the layout, take the process lock, read the segments and bind the spool to its
        store; idempotent (and cheap once open: the journal calls it on every append).

        SpoolLocked if another process has the lock; SpoolForOtherStore if the spool still
        holds objects for another store than `store_url` (an empty spool is simply re-bound).
        """
        if self._bound and self._locked_here():
            return
        with self._open_lock:
            if self._locked_here():
                if not self._bound:  # (a second flock of our own lock file would fail)
                    self._bind(self.store_url)
                return
            try:
                for d in (self.root, self.segments_dir):
                    makedirs_durable(d)
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
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
                self._load()
                self._bind(self.store_url)
            except OSError as e:
                os.close(fd)
                raise _spool_error(f"recording spool {self.root} is not usable", e) from None
            except BaseException:
                os.close(fd)
                raise
            if self._lock_fd is not None and self._lock_fd != fd:
                os.close(self._lock_fd)
            self._lock_fd = fd

    def _locked_here(self) -> bool:
        """Whether this process holds the spool's lock and its file is still there. An error
        other than a missing file is raised, as `Path.exists` did (os.path.exists would say
        False, and the spool would be opened again, its own lock mistaken for another's)."""
        if self._lock_fd is None:
            return False
        try:
            os.stat(self._lock_path)
        except OSError as e:
            if e.errno in _NOT_THERE:
                return False
            raise
        return True

    def _load(self) -> None:
        """Read the spool's state from disk (at open, and again if the directory went away)."""
        with self._cond:
            self._close_active()
            cur_n, cur_off = _read_cursor(self.root)
            self._segs, self._spooled = {}, Lru(SPOOLED_BLOBS_KEPT)
            head = self._read_head_file()
            found_records = False
            for n, path in _segment_names(self.segments_dir):
                if n < cur_n:  # shipped; its deletion did not happen or was not durable
                    path.unlink(missing_ok=True)
                    continue
                s = _scan(path)
                if s.end < s.size:
                    # Usually a write cut by a crash, never acknowledged. But damage in the middle
                    # looks the same and hides the frames after it: the segment is kept whole in
                    # failed/ before it can be deleted as shipped, for an operator to look at.
                    kept = self._keep_damaged(path)
                    log.warning(
                        "recording spool: %s ends with %d byte(s) that are not a whole frame (a write "
                        "cut by a crash, never acknowledged); ignored%s",
                        path,
                        s.size - s.end,
                        f" (the segment is kept as {kept})" if kept else "",
                    )
                if n == cur_n and cur_off not in s.boundaries:
                    log.warning(
                        "recording spool: %s does not point at a frame of %s; uploading it again", "cursor", path
                    )
                    cur_off = 0
                self._segs[n] = _Segment(n, path, end=s.end)
                start = cur_off if n == cur_n else 0
                buf = path.read_bytes()
                for _p, _e, kind, key, _d in _frames(buf, start):
                    if kind == "blob":
                        self._spooled.put(key, True)
                if s.last_head is not None:
                    head = {k: v for k, v in (head or {}).items() if k not in ("store", "stores")}
                    head.update(s.last_head)
                if s.last_record is not None:
                    head = {**(head or {}), **s.last_record}
                    found_records = True
            self._cursor = (cur_n, cur_off)
            self._next_n = max([cur_n, *self._segs], default=-1) + 1
            self._head = head
            self._rotated_head = head
            # The segments may be deleted once uploaded: head.json must name their last record.
            self._head_saved = not found_records
        self._migrate_legacy()

    def _migrate_legacy(self) -> None:
        """Move a spool written before segments (``blobs/``, ``outbox/`` files) into a segment,
        in the upload order that layout had (blobs, keys, records, checkpoints)."""
        blobs_dir, outbox = self.root / "blobs", self.root / "outbox"
        if not blobs_dir.is_dir() and not outbox.is_dir():
            return
        frames: list[Frame] = []
        for dirpath, _dirs, files in os.walk(blobs_dir):
            for name in sorted(files):
                if name.endswith(".json") and not name.startswith(".tmp-"):
                    frames.append(("blob", name[: -len(".json")], (Path(dirpath) / name).read_bytes()))
        order = {"key": 0, "record": 1, "checkpoint": 2, "prune": 2}
        found: list[tuple[int, str, int, str]] = []
        for dirpath, _dirs, files in os.walk(outbox):
            rel = os.path.relpath(dirpath, outbox).replace(os.sep, "/")
            for name in files:
                key = name if rel == "." else f"{rel}/{name}"
                p = parse_key(key)
                if p is None or p.kind not in order:
                    continue
                found.append((order[p.kind], p.chain, p.seq, key))
        for _o, _c, _s, key in sorted(found):
            kind = parse_key(key).kind  # type: ignore[union-attr]
            frames.append(("checkpoint" if kind == "prune" else kind, key, (outbox / key).read_bytes()))
        if frames:
            with self._cond:
                head = self._head
            self.sync(self.write(frames))
            with self._cond:
                self._head = head  # head.json names the last record (legacy ones are not newer)
            self.close_segment()
            log.info("recording spool: moved %d spooled object(s) of an earlier version into a segment", len(frames))
        for d in (blobs_dir, outbox):
            shutil.rmtree(d, ignore_errors=True)

    def rebind(self, store_url: str) -> None:
        """Bind the spool to another store (a reload that changed the policy's store); nothing
        may wait for upload (SpoolForOtherStore otherwise). Caller holds the process lock."""
        with self._open_lock:
            # The old store's objects are all uploaded: the cursor must say so before the spool
            # names the new store, or a crash now would upload them again, to the new one.
            self.save_cursor()
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
            with self._cond:
                self._spooled = Lru(SPOOLED_BLOBS_KEPT)

    def bound_store(self) -> str | None:
        """The url in store.json: the store the spool uploads to (None: not bound yet)."""
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
                    f"at shutdown), or move {self.segments_dir} aside"
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
        """Stop appending here (the last segment is closed, head.json written) and release the
        process lock."""
        with self._open_lock:
            try:
                self.close_segment()
            except SpoolError as e:
                log.warning("recording: %s", e)
            self.save_cursor()
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

    # -- appending (the journal) -----------------------------------------------------------------
    def needs_blob(self, hx: str) -> bool:
        """Whether a record using blob `hx` must spool it: not known to be in the store, nor in
        a frame still to be uploaded (which goes before any record written after it)."""
        if self.uploaded.get(hx) is not None:  # a lookup that counts as a use: a reused blob stays known
            return False
        return hx not in self._spooled

    def write(self, frames: Sequence[Frame], *, epoch: int | None = None) -> Token:
        """Append `frames` in this order, not yet durable: `sync` the token before relying on
        them. With `epoch`, refuse (SpoolError) if writes were lost since the caller read it."""
        buf = encode_frames(frames)
        with self._cond:
            while True:
                # Checked again after every wait: a sync may fail (and cut writes) meanwhile.
                if epoch is not None and epoch != self.epoch:
                    raise SpoolError(
                        "the recording spool lost writes that were not yet durable (see the log); retrying"
                    )
                seg = self._active
                if seg is not None and seg.end > 0 and seg.end + len(buf) > SEGMENT_BYTES:
                    # Retiring may wait for a sync in flight (the lock is released): another
                    # writer may rotate first, so look at the active segment again after it.
                    self._retire_active()
                    continue
                if seg is None:
                    seg = self._new_segment()
                break
            try:
                view = memoryview(buf)
                while view:
                    view = view[os.write(seg.fd, view) :]  # type: ignore[arg-type]
            except OSError as e:
                # Nothing of a failed write may stay (a later frame would follow a torn one);
                # if it cannot be cut off, later appends go to a new segment.
                try:
                    os.ftruncate(seg.fd, seg.end)  # type: ignore[arg-type]
                except OSError:
                    self._retire_active(save_head=False)
                raise _spool_error("cannot write to the recording spool", e) from None
            seg.end += len(buf)
            for kind, key, data in frames:
                if kind == "blob":
                    self._spooled.put(key, True)
                elif kind == "record":
                    p = parse_key(key)
                    if p is not None:
                        self._head = {**(self._head or {}), "chain": p.chain, "seq": p.seq, "hash": sha256_ref(data)}
                elif kind == "head":
                    doc = json.loads(data)
                    self._head = {k: v for k, v in (self._head or {}).items() if k not in ("store", "stores")}
                    self._head.update(doc)
            return Token(seg, seg.end)

    def sync(self, token: Token) -> None:
        """Return once what `write` returned `token` for is durable. One thread fdatasyncs for
        everyone who wrote before it started; the others wait for it."""
        seg = token.segment
        with self._cond:
            while seg.synced < token.end:
                if seg.error is not None:
                    raise SpoolError(seg.error)
                if seg.syncing:
                    self._cond.wait()
                    continue
                if seg.fd is None:  # closed before it was synced: the spool was opened again
                    raise SpoolError(f"the recording spool {self.root} went away before the record was durable")
                seg.syncing, target, fd = True, seg.end, seg.fd
                self._cond.release()
                try:
                    os.fdatasync(fd)
                    error = None
                except OSError as e:
                    error = e
                finally:
                    self._cond.acquire()
                    seg.syncing = False
                    self._cond.notify_all()
                if error is not None:
                    self._sync_failed(seg, error)
                    raise _spool_error("cannot make the recording spool durable", error)
                seg.synced = max(seg.synced, target)

    def _sync_failed(self, seg: _Segment, e: OSError) -> None:
        """A failed fdatasync: what it covered may be lost. Cut the segment back to what was
        durable, append to a new one, and bump the epoch. Caller holds the lock."""
        seg.error = f"cannot make the recording spool durable: {e.strerror or e}"
        log.error("recording: %s (%s); records not yet acknowledged are dropped", seg.error, seg.path)
        try:
            os.ftruncate(seg.fd, seg.synced)  # type: ignore[arg-type]
        except OSError:
            pass
        seg.end = seg.synced
        self._close_active()
        self.epoch += 1
        self._head = self._rotated_head
        for n in sorted(self._segs):  # the head as far as it is durable (never past `end`)
            s = _scan(self._segs[n].path, self._segs[n].end)
            if s.last_head is not None:
                self._head = {k: v for k, v in (self._head or {}).items() if k not in ("store", "stores")}
                self._head.update(s.last_head)
            if s.last_record is not None:
                self._head = {**(self._head or {}), **s.last_record}
        # The closed segment can go once shipped: head.json must name its last record first.
        self._rotated_head, self._head_saved = self._head, False
        self._spooled = Lru(SPOOLED_BLOBS_KEPT)

    def _keep_damaged(self, path: Path) -> Path | None:
        """A copy of a segment whose tail does not parse, in failed/segments/ (once)."""
        dest = self.root / "failed" / "segments" / path.name
        try:
            if not dest.exists():
                makedirs_durable(dest.parent)
                shutil.copyfile(path, dest)
            return dest
        except OSError as e:
            log.error("recording spool: cannot keep a copy of %s (%s)", path, e.strerror or e)
            return None

    def _new_segment(self) -> _Segment:
        """Open the next segment for appends. Caller holds the lock."""
        assert self._active is None, "a segment is already active"
        n = self._next_n
        path = self.segments_dir / f"{n:012d}.seg"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            try:
                fsync_dir(self.segments_dir)  # the name is durable before anything relies on it
            except OSError:
                os.close(fd)
                raise
        except OSError as e:
            raise _spool_error(f"cannot create a segment in {self.segments_dir}", e) from None
        self._next_n = n + 1
        seg = self._active = self._segs[n] = _Segment(n, path, fd=fd)
        return seg

    def _retire_active(self, *, save_head: bool = True) -> None:
        """Make the active segment durable and inactive, and head.json name its last record.
        Caller holds the lock."""
        seg = self._active
        if seg is None:
            return
        while seg.syncing:
            self._cond.wait()
        if self._active is not seg:
            return
        try:
            if seg.synced < seg.end:
                os.fdatasync(seg.fd)  # type: ignore[arg-type]
                seg.synced = seg.end
        except OSError as e:
            self._sync_failed(seg, e)
            raise _spool_error("cannot make the recording spool durable", e) from None
        self._close_active()
        self._rotated_head, self._head_saved = self._head, False
        if save_head:
            self._save_head()

    def _close_active(self) -> None:
        seg, self._active = self._active, None
        if seg is not None and seg.fd is not None:
            try:
                os.close(seg.fd)
            except OSError:
                pass
            seg.fd = None

    def close_segment(self) -> None:
        """End the active segment (a shutdown, a store change): the uploader can delete it once
        shipped; the next append opens a new one."""
        with self._cond:
            self._retire_active()

    # -- chain head ----------------------------------------------------------------------------
    def _read_head_file(self) -> dict[str, Any] | None:
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

    def read_head(self) -> dict[str, Any] | None:
        """The last record appended ({"chain","seq","hash"}), the store it went to ("store")
        and the last record of each other store ("stores"); None for a new spool."""
        with self._cond:
            return dict(self._head) if self._head else None

    def _save_head(self) -> bool:
        """Write head.json as of the last rotation, unless it holds that already. Caller holds
        the lock. A failure is logged: segments stay until it works (see `advance`)."""
        if self._head_saved:
            return True
        if self._rotated_head is not None:
            try:
                self.write_head(self._rotated_head)
            except SpoolError as e:
                log.error("recording: %s; spooled segments are kept until it works", e)
                return False
        self._head_saved = True
        return True

    def write_head(self, head: dict[str, Any]) -> None:
        try:
            replace_durable(self.root / "head.json", json.dumps(head, sort_keys=True).encode(), mode=0o600)
        except OSError as e:
            raise _spool_error("cannot update the recording spool's head.json", e) from None

    # -- uploading (the uploader) ----------------------------------------------------------------
    def _ranges(self) -> list[tuple[_Segment, int, int]]:
        """(segment, from, to) still to upload, durable frames only. Caller holds the lock."""
        cur_n, cur_off = self._cursor
        out = []
        for n in sorted(self._segs):
            seg = self._segs[n]
            start = cur_off if n == cur_n else 0
            limit = seg.synced if seg is self._active else seg.end
            if n >= cur_n and limit > start:
                out.append((seg, start, limit))
        return out

    def has_pending(self) -> bool:
        """Whether anything durable waits for upload (cheap: no disk access)."""
        with self._cond:
            return bool(self._ranges())

    def pending(self) -> list[str]:
        """Store keys waiting for upload, in upload order (public keys, records, checkpoints;
        not blobs, which go with the records that use them)."""
        with self._cond:
            ranges = self._ranges()
        keys = []
        for seg, start, limit in ranges:
            buf = _read_range(seg.path, 0, limit)
            keys.extend(key for _p, _e, kind, key, _d in _frames(buf, start) if kind in ("key", "record", "checkpoint"))
        return keys

    def spooled(self) -> list[tuple[str, bytes]]:
        """(store key, bytes) of everything waiting for upload, in upload order, blobs included."""
        with self._cond:
            ranges = self._ranges()
        out = []
        for seg, start, limit in ranges:
            buf = _read_range(seg.path, 0, limit)
            out.extend(
                (_store_key(kind, key), bytes(d)) for _p, _e, kind, key, d in _frames(buf, start) if kind != "head"
            )
        return out

    def _drop_shipped(self) -> None:
        """Delete the segments that are shipped and no longer appended to, once head.json names
        a record at least as new as theirs. Caller holds the lock."""
        cur_n, cur_off = self._cursor
        for n in sorted(self._segs):
            seg = self._segs[n]
            if seg is self._active or n > cur_n or (n == cur_n and cur_off < seg.end):
                break
            if not self._save_head():
                return
            seg.path.unlink(missing_ok=True)
            del self._segs[n]
            if n == cur_n:
                self._cursor = (n + 1, 0)

    def next_batch(self, *, max_frames: int = 512, max_bytes: int = 16 * 1024 * 1024) -> Batch | None:
        """The next frames to upload (at least one, then up to the limits, one segment at a
        time), or None when nothing durable waits. Frames stay until `advance`."""
        with self._cond:
            self._drop_shipped()
            ranges = self._ranges()
        if not ranges:
            return None
        seg, start, limit = ranges[0]
        frames: list[Frame] = []
        pos, size = start, 0
        try:
            fd = os.open(seg.path, os.O_RDONLY)
        except OSError as e:
            raise _spool_error(f"cannot read {seg.path}", e) from None
        try:
            while pos < limit and len(frames) < max_frames and (not frames or size < max_bytes):
                header = os.pread(fd, _HEADER.size, pos)
                length = _HEADER.unpack(header)[0] if len(header) == _HEADER.size else 0
                frame = _decode(header + os.pread(fd, length, pos + _HEADER.size), 0) if length <= MAX_FRAME else None
                if frame is None:
                    raise SpoolError(
                        f"recording spool segment {seg.path} is damaged at offset {pos} (a frame that was "
                        "durable no longer reads back); move it aside to go on"
                    )
                end, kind, key, data = frame
                frames.append((kind, key, bytes(data)))
                pos += end
                size += end
        except OSError as e:
            raise _spool_error(f"cannot read {seg.path}", e) from None
        finally:
            os.close(fd)
        return Batch(seg.n, start, pos, frames)

    def advance(self, batch: Batch) -> None:
        """Everything in `batch` is in the store: move the cursor past it (and delete a segment
        that is shipped and no longer appended to). cursor.json follows at most once per
        `CURSOR_SAVE_SECONDS` (see `save_cursor`)."""
        with self._cond:
            self._cursor = (batch.segment, batch.end)
            for kind, key, _data in batch.frames:
                if kind == "blob":
                    self._spooled.pop(key)
            self._drop_shipped()
            self._cursor_unsaved = True
        self.save_cursor(only_if_due=True)

    def save_cursor(self, *, only_if_due: bool = False) -> None:
        """Write cursor.json if the cursor moved since it was last written (`only_if_due`: and
        that was `CURSOR_SAVE_SECONDS` ago). The uploader saves it when due, and a shutdown, a
        store change and `close` do at once. Not fsynced: a cursor behind the upload (or lost
        in a crash) only means uploading again, which the store takes (an object already there
        with the same bytes counts as uploaded)."""
        with self._cond:
            if not self._cursor_unsaved:
                return
            if only_if_due and time.monotonic() - self._cursor_saved_at < CURSOR_SAVE_SECONDS:
                return
            cursor = self._cursor
            self._cursor_saved_at = time.monotonic()
            self._cursor_unsaved = False
        tmp = self.root / f".tmp-cursor.json.{os.getpid()}"
        try:
            tmp.write_bytes(json.dumps({"segment": cursor[0], "offset": cursor[1]}).encode())
            os.replace(tmp, self.root / "cursor.json")
        except OSError as e:
            log.warning("recording spool: cannot write %s: %s", self.root / "cursor.json", e)

    def set_aside(self, key: str, data: bytes) -> Path:
        """Keep an object the store refused (it holds other bytes under its key) in failed/."""
        target = self.failed / key
        makedirs_durable(target.parent)
        replace_durable(target, data, mode=0o600)
        return target


def _read_range(path: Path, start: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(limit - start)
    except FileNotFoundError:  # the spool directory went away (see `open`)
        return b""
