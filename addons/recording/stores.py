"""Where records end up: a local directory or an S3 bucket (with Object Lock).

Both stores are write-once: `put` creates an object and never replaces one (it returns
False when the key already exists). The local store creates each file exclusively (its data
durable before its name, the name durable before `put` returns) and makes it read-only:
tamper-evident (verify notices any change). S3 with Object Lock is tamper-proof within the
retention period: `PutObject` carries the lock mode and retain-until date, ``If-None-Match: *``
(no overwrite) and a SHA-256 checksum.

All methods block (disk or network): callers run them off the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from gatehouse.common.durable import FileSystemSync, fsync_dir, makedirs_durable, write_exclusive

# How many files `LocalStore.put_batch` has open at once.
PUT_BATCH_FILES = 64

# S3 Object Lock's retention modes.
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")


class StoreError(Exception):
    """A store operation failed; the message says which store, which key and why."""


class NotFound(StoreError):
    pass


class StillRetained(StoreError):
    """A delete refused because the object is still under Object Lock retention."""


@dataclass(frozen=True)
class Retention:
    mode: str | None
    until: datetime | None


@dataclass(frozen=True)
class VersionInfo:
    versions: int
    delete_markers: int
    latest_is_delete_marker: bool


class Store(Protocol):
    url: str
    # True when objects carry their own retention (S3 Object Lock).
    locks_objects: bool

    def put(
        self, key: str, data: bytes, *, retain_until: datetime | None = None, content_type: str = "application/json"
    ) -> bool: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def delete(self, key: str) -> None: ...
    def mtime(self, key: str) -> float: ...
    def retention(self, key: str) -> Retention | None: ...
    def extend_retention(self, key: str, until: datetime) -> Retention | None: ...
    def check(self, *, require_object_lock: bool = False) -> None: ...


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid store key {key!r}")


def _walk_sorted(path: str, rel: str, prefix: str) -> Iterator[str]:
    """Keys (`rel` + relative path) of the files under directory `path` that start with
    `prefix`, in sorted order, reading one directory at a time.

    A directory's entries sort as their names, a subdirectory's as its name + "/": every key
    under it starts with that, and no sibling's name contains "/", so visiting the entries in
    that order and recursing yields exactly the order of sorting all keys. `prefix` matters
    only in the first directory (below it every key already starts with it).
    """
    names: list[str] = []  # files as their names, directories as name + "/"
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if not entry.is_symlink():  # os.walk does not descend into links
                        names.append(entry.name + "/")
                elif not entry.name.startswith(".tmp-"):
                    names.append(entry.name)
    except OSError:
        return  # vanished or unreadable: skipped, as os.walk does
    names.sort()
    for name in names:
        key = rel + name
        if prefix and not key.startswith(prefix):
            continue
        if name.endswith("/"):
            yield from _walk_sorted(os.path.join(path, name[:-1]), key, "")
        else:
            yield key


class LocalStore:
    """A directory; the default store (`recordings/`)."""

    locks_objects = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    def path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def put(
        self, key: str, data: bytes, *, retain_until: datetime | None = None, content_type: str = "application/json"
    ) -> bool:
        try:
            return write_exclusive(self.path(key), data, mode=0o400)
        except OSError as e:
            raise StoreError(f"{self.url}: cannot write {key}: {e.strerror or e}") from None

    def put_batch(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """`put` for many objects, durable together (the uploader's batches): each is written
        to a temporary file, then linked to its name in order (exclusive: False where the name
        exists, also for a key repeated in `items`). Every file's data is durable before any
        name, and every name before the call returns: with one ``syncfs`` per file system
        before the links and one after (`FileSystemSync`), or, on a system without it, an
        fsync of each file before and of each directory after. A name never appears without
        its data."""
        if len(items) > PUT_BATCH_FILES:  # bounded: each file of a chunk holds a descriptor
            return [
                made
                for i in range(0, len(items), PUT_BATCH_FILES)
                for made in self.put_batch(items[i : i + PUT_BATCH_FILES])
            ]
        paths = [self.path(key) for key, _ in items]
        # Every directory of the batch, not only those that gain a name now: a name linked by
        # an earlier attempt that failed before its sync reports "exists" on the retry.
        parents = list(dict.fromkeys(p.parent for p in paths))
        temps: list[tuple[int, str]] = []
        fs: FileSystemSync | None = None
        try:
            makedirs_durable(self.root)
            # Opened before anything is written, new folders included: its sync reports their
            # write-back errors. A folder on another file system (a mount inside the store)
            # takes the fsyncs.
            fs = FileSystemSync.open([self.root])
            for parent in parents:
                makedirs_durable(parent, fsync_parents=fs is None)
            if fs is not None and not fs.covers(parents):
                fs.close()
                fs = None
                for parent in parents:  # the folders just made: their names made durable
                    p = parent
                    while p != self.root and p.parent != p:
                        fsync_dir(p.parent)
                        p = p.parent
            for path, (_key, data) in zip(paths, items, strict=True):
                fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
                temps.append((fd, name))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, 0o400)
            if fs is not None:
                fs.sync()
            else:
                for fd, _name in temps:
                    os.fsync(fd)
            created = []
            for path, (_fd, name) in zip(paths, temps, strict=True):
                try:
                    os.link(name, path)
                    created.append(True)
                except FileExistsError:
                    created.append(False)
            done, temps = temps, []
            for fd, name in done:
                os.close(fd)
                os.unlink(name)
            if fs is not None:
                fs.sync()
            else:
                for parent in parents:
                    fsync_dir(parent)
            return created
        except OSError as e:
            raise StoreError(f"{self.url}: cannot write {len(items)} object(s): {e.strerror or e}") from None
        finally:
            try:
                for fd, name in temps:  # a failure before the links: nothing named, nothing left
                    os.close(fd)
                    Path(name).unlink(missing_ok=True)
            finally:
                if fs is not None:
                    fs.close()

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.url}: {key} does not exist") from None
        except OSError as e:
            raise StoreError(f"{self.url}: cannot read {key}: {e.strerror or e}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with `prefix`, sorted; temporary files are skipped.

        Lazy: directories are read one at a time as the walk reaches them (each one's entries
        sorted), so memory is bounded by the largest directory, not the whole store. Like
        `os.walk`, links to directories are not followed and unreadable directories are skipped.
        """
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return
        yield from _walk_sorted(str(start), base + "/" if base else "", prefix)

    def delete(self, key: str) -> None:
        """Remove an object (prune only). Read-only files go: the directory is writable."""
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"{self.url}: cannot delete {key}: {e.strerror or e}") from None
        fsync_dir(path.parent)

    def mtime(self, key: str) -> float:
        return self.path(key).stat().st_mtime

    def retention(self, key: str) -> Retention | None:
        return None

    def extend_retention(self, key: str, until: datetime) -> Retention | None:
        """A local file has no retention; its mtime records when a record last referenced it,
        which `gatehouse prune` reads before removing a blob."""
        try:
            os.utime(self.path(key))
        except FileNotFoundError:
            raise NotFound(f"{self.url}: {key} does not exist") from None
        except OSError as e:
            raise StoreError(f"{self.url}: cannot touch {key}: {e.strerror or e}") from None
        return None

    def check(self, *, require_object_lock: bool = False) -> None:
        if require_object_lock:
            raise StoreError(f"{self.url}: object_lock_mode applies to S3 stores only")
        try:
            makedirs_durable(self.root)
            probe = self.root / f".tmp-{secrets.token_hex(8)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StoreError(f"recording store {self.url} is not writable: {e.strerror or e}") from None


def _client_error_code(e: Exception) -> str:
    response = getattr(e, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Store:
    """``s3://bucket/prefix``. With `object_lock_mode`, every object carries its retention."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        object_lock_mode: str | None = None,
        kms_key_id: str | None = None,
        client: Any = None,
        max_connections: int = 10,
    ) -> None:
        if object_lock_mode is not None and object_lock_mode not in LOCK_MODES:
            raise StoreError(f"object_lock_mode must be one of {', '.join(LOCK_MODES)}; got {object_lock_mode!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.object_lock_mode = object_lock_mode
        self.locks_objects = object_lock_mode is not None
        self.kms_key_id = kms_key_id
        if client is None:
            import boto3
            from botocore.config import Config

            # Few, short retries: the spool's uploader retries with its own backoff, and a
            # start-up check against a dead endpoint must fail in seconds, not minutes.
            # As many pooled connections as the uploader has puts in flight (`max_connections`).
            config = Config(
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 2, "mode": "standard"},
                max_pool_connections=max_connections,
            )
            # endpoint_url None lets boto3 apply AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
            client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self.client = client

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        return str(getattr(self.client.meta, "endpoint_url", ""))

    def _k(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, op: str, key: str, e: Exception) -> StoreError:
        code = _client_error_code(e)
        where = f"s3://{self.bucket}/{self._k(key)}" if key else f"s3://{self.bucket}"
        if code:
            msg = getattr(e, "response", {}).get("Error", {}).get("Message", "") or str(e)
            return StoreError(f"S3 {op} {where}: {code}: {msg}")
        return StoreError(f"S3 {op} {where} (endpoint {self.endpoint}): {e}")

    def put(
        self, key: str, data: bytes, *, retain_until: datetime | None = None, content_type: str = "application/json"
    ) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._k(key),
            "Body": data,
            "ContentType": content_type,
            "IfNoneMatch": "*",
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
        }
        if self.object_lock_mode:
            if retain_until is None:
                raise StoreError(f"{self.url}: {key}: a retain-until date is required with Object Lock")
            kwargs["ObjectLockMode"] = self.object_lock_mode
            kwargs["ObjectLockRetainUntilDate"] = retain_until
        if self.kms_key_id:
            kwargs["ServerSideEncryption"] = "aws:kms"
            kwargs["SSEKMSKeyId"] = self.kms_key_id
        try:
            self.client.put_object(**kwargs)
        except ClientError as e:
            if _client_error_code(e) in ("PreconditionFailed", "412"):
                return False
            raise self._fail("PutObject", key, e) from None
        except BotoCoreError as e:
            raise self._fail("PutObject", key, e) from None
        return True

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except ClientError as e:
            if _client_error_code(e) in ("NoSuchKey", "404"):
                raise NotFound(f"{self.url}: {key} does not exist") from None
            raise self._fail("GetObject", key, e) from None
        except BotoCoreError as e:
            raise self._fail("GetObject", key, e) from None

    def _head(self, key: str) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as e:
            if _client_error_code(e) in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"{self.url}: {key} does not exist") from None
            raise self._fail("HeadObject", key, e) from None
        except BotoCoreError as e:
            raise self._fail("HeadObject", key, e) from None

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except (ClientError, BotoCoreError) as e:
            raise self._fail("ListObjectsV2", prefix, e) from None

    def versions(self, prefix: str = "") -> dict[str, VersionInfo]:
        """Per key: how many versions and delete markers exist (write-once means one version)."""
        from botocore.exceptions import BotoCoreError, ClientError

        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        counts: dict[str, list[int]] = {}
        try:
            for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full):
                for v in page.get("Versions", []):
                    c = counts.setdefault(v["Key"][strip:], [0, 0, 0])
                    c[0] += 1
                for m in page.get("DeleteMarkers", []):
                    c = counts.setdefault(m["Key"][strip:], [0, 0, 0])
                    c[1] += 1
                    if m.get("IsLatest"):
                        c[2] = 1
        except (ClientError, BotoCoreError) as e:
            raise self._fail("ListObjectVersions", prefix, e) from None
        return {k: VersionInfo(v, d, bool(latest)) for k, (v, d, latest) in counts.items()}

    def delete(self, key: str) -> None:
        """A delete marker (prune only), never before the object's retention has passed.

        S3 accepts a delete marker even on a locked object (the locked version stays), so the
        retention is checked here. The version itself goes when the bucket's lifecycle rule
        expires noncurrent versions (docs/recording-format.md).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        r = self.retention(key)
        if r is not None and r.until is not None and r.until > datetime.now(UTC):
            raise StillRetained(f"{self.url}: {key} is under Object Lock retention until {r.until.isoformat()}")
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._k(key))
        except (ClientError, BotoCoreError) as e:
            raise self._fail("DeleteObject", key, e) from None

    def mtime(self, key: str) -> float:
        return self._head(key)["LastModified"].timestamp()

    def retention(self, key: str) -> Retention | None:
        head = self._head(key)
        mode = head.get("ObjectLockMode")
        until = head.get("ObjectLockRetainUntilDate")
        if not mode and not until:
            return None
        if isinstance(until, datetime) and until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        return Retention(mode, until)

    def extend_retention(self, key: str, until: datetime) -> Retention | None:
        """Make the object's retain-until at least `until` (it is never shortened)."""
        if not self.object_lock_mode:
            return None
        from botocore.exceptions import BotoCoreError, ClientError

        current = self.retention(key)
        if current is not None and current.until is not None and current.until >= until:
            return current
        mode = (current.mode if current and current.mode else None) or self.object_lock_mode
        try:
            self.client.put_object_retention(
                Bucket=self.bucket, Key=self._k(key), Retention={"Mode": mode, "RetainUntilDate": until}
            )
        except (ClientError, BotoCoreError) as e:
            raise self._fail("PutObjectRetention", key, e) from None
        return Retention(mode, until)

    def object_lock_enabled(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as e:
            if _client_error_code(e) in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"):
                return False
            raise self._fail("GetObjectLockConfiguration", "", e) from None
        except BotoCoreError as e:
            raise self._fail("GetObjectLockConfiguration", "", e) from None
        return conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def check(self, *, require_object_lock: bool = False) -> None:
        """Start-up check: the bucket exists and we may use it; Object Lock when required."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = _client_error_code(e)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StoreError(
                    f"recording store {self.url}: bucket {self.bucket!r} does not exist (endpoint {self.endpoint})"
                ) from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise StoreError(
                    f"recording store {self.url}: access to bucket {self.bucket!r} denied "
                    f"(check the gateway's AWS credentials)"
                ) from None
            raise self._fail("HeadBucket", "", e) from None
        except BotoCoreError as e:
            raise StoreError(f"recording store {self.url}: cannot reach S3 at {self.endpoint}: {e}") from None
        if require_object_lock and not self.object_lock_enabled():
            raise StoreError(
                f"recording store {self.url}: bucket {self.bucket!r} does not have Object Lock enabled, but "
                f"[recording] object_lock_mode = {self.object_lock_mode!r} requires it. Enable Object Lock on the "
                "bucket (it needs versioning), or remove object_lock_mode from the policy."
            )


def open_store(
    url: str | Path,
    *,
    endpoint_url: str | None = None,
    object_lock_mode: str | None = None,
    kms_key_id: str | None = None,
    client: Any = None,
    max_connections: int = 10,
) -> LocalStore | S3Store:
    """A store from ``s3://bucket/prefix``, ``file:///path`` or a plain path. `max_connections`:
    an S3 client's connection pool (the uploader's concurrency)."""
    text = str(url)
    if text.startswith("s3://"):
        parts = urlsplit(text)
        if not parts.netloc:
            raise StoreError(f"store URL {text!r} has no bucket (expected s3://bucket/prefix)")
        return S3Store(
            parts.netloc,
            parts.path,
            endpoint_url=endpoint_url,
            object_lock_mode=object_lock_mode,
            kms_key_id=kms_key_id,
            client=client,
            max_connections=max_connections,
        )
    if "://" in text and not text.startswith("file://"):
        raise StoreError(f"unsupported store URL {text!r}: use a directory or s3://bucket/prefix")
    if object_lock_mode or kms_key_id or endpoint_url:
        raise StoreError(f"{text}: object_lock_mode, kms_key_id and s3_endpoint_url apply to S3 stores only")
    return LocalStore(text[len("file://") :] if text.startswith("file://") else text)
