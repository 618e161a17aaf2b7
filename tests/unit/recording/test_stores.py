"""Stores: the local directory and S3 with Object Lock (against the real moto server)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatehouse.common import durable
from gatehouse.common.durable import FileSystemSync
from gatehouse.recording.layout import record_key
from gatehouse.recording.stores import LocalStore, NotFound, S3Store, StillRetained, StoreError, open_store
from support.s3_server import S3Server
from support.syncfs import failing_syncfs


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(name, object_lock=True)
    return name


def until(days: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


# -- local ----------------------------------------------------------------------------------------


def test_local_put_is_exclusive_durable_and_read_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "rec")
    store.check()
    assert store.put("records/c/000000000000.json", b"one") is True
    assert store.put("records/c/000000000000.json", b"two") is False  # never overwritten
    assert store.get("records/c/000000000000.json") == b"one"
    mode = stat.S_IMODE((tmp_path / "rec/records/c/000000000000.json").stat().st_mode)
    assert mode == 0o400
    assert list(store.list("records/")) == ["records/c/000000000000.json"]
    assert list(store.list("blobs/")) == []
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "rec").rglob("*"))
    with pytest.raises(NotFound):
        store.get("records/c/000000000001.json")
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b", ""):
        with pytest.raises(StoreError):
            store.put(bad, b"x")


def _all_keys_sorted(root: Path, prefix: str = "") -> list[str]:
    """What LocalStore.list returned before it streamed: walk everything, then sort."""
    keys = []
    for dirpath, _dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        keys.extend(rel + n for n in filenames if not n.startswith(".tmp-") and (rel + n).startswith(prefix))
    return sorted(keys)


def test_local_list_is_sorted_and_prefix_filtered_like_a_full_sort(tmp_path: Path) -> None:
    # Names where directory order and key order differ: "a" (a directory) sorts after "a-b"
    # and "a.json" as a key ("a/..."), "/" being after "-" and ".".
    store = LocalStore(tmp_path)
    for key in (
        "a/x.json",
        "a-b/y.json",
        "a.json",
        "a/b/c.json",
        "a/b.json",
        "ab",
        "records/c-1/000000000001.json",
        "records/c/000000000000.json",
        "records/c/000000000001.json",
        "records/c.json",
        "records/cc/z.json",
        "blobs/sha256/ab/ab.json",
        "Z",
        "é/1",
        "e/1",
    ):
        store.put(key, b"x")
    (tmp_path / "a" / ".tmp-123").write_bytes(b"partial")
    (tmp_path / "empty" / "dir").mkdir(parents=True)
    os.symlink(tmp_path / "a", tmp_path / "link-to-dir")  # not followed, as os.walk does not
    expected = _all_keys_sorted(tmp_path)
    assert list(store.list()) == expected and expected == sorted(expected)
    assert not any(".tmp-" in k or k.startswith("link-to-dir") for k in expected)
    for prefix in (
        "",
        "a",
        "a/",
        "a/b",
        "a-",
        "records/",
        "records/c",
        "records/c/",
        "records/c/0000000000001",
        "records/c-",
        "nothing/",
        "nothing",
        "blobs/sha256/",
        "é",
    ):
        assert list(store.list(prefix)) == _all_keys_sorted(tmp_path, prefix), prefix
    assert list(LocalStore(tmp_path / "absent").list()) == []


def test_local_list_reads_one_directory_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing is lazy: the first key comes before the rest of the store is read."""
    store = LocalStore(tmp_path)
    for chain in ("c1", "c2", "c3"):
        for seq in range(3):
            store.put(record_key(chain, seq), b"{}")
    scanned: list[str] = []
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        scanned.append(os.path.relpath(path, tmp_path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    keys = store.list("records/")
    assert next(keys) == record_key("c1", 0)
    assert scanned == ["records", os.path.join("records", "c1")]  # c2 and c3 not yet read
    assert list(keys)[-1] == record_key("c3", 2)
    assert len(scanned) == 4


def test_local_extend_retention_touches_the_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("blobs/sha256/aa/x.json", b"{}")
    old = time.time() - 1000
    os.utime(tmp_path / "blobs/sha256/aa/x.json", (old, old))
    assert store.extend_retention("blobs/sha256/aa/x.json", until()) is None
    assert store.mtime("blobs/sha256/aa/x.json") > old + 900
    assert store.retention("blobs/sha256/aa/x.json") is None


def test_local_store_not_writable_fails_the_check(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not writable"):
        LocalStore(tmp_path / "file" / "rec").check()


class Syncs:
    """Counts the file system syncs a batch makes: fsync calls, and syncfs calls made through
    `FileSystemSync` (the real one underneath, or None: the system has none)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, syncfs: bool) -> None:
        self.fsync = 0
        self.syncfs = 0
        real_fsync, real_syncfs = os.fsync, durable._SYNCFS

        def fsync(fd: int) -> None:
            self.fsync += 1
            real_fsync(fd)

        def counted_syncfs(fd: int) -> int:
            self.syncfs += 1
            assert real_syncfs is not None
            return real_syncfs(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(durable, "_SYNCFS", counted_syncfs if syncfs else None)


BATCH = [(f"blobs/sha256/{i:02x}/{i:064x}.json", b"blob %d" % i) for i in range(20)]


@pytest.mark.parametrize(
    "syncfs",
    [
        pytest.param(True, marks=pytest.mark.skipif(not FileSystemSync.available(), reason="no syncfs(2) here")),
        False,
    ],
    ids=["syncfs", "fsync"],
)
def test_local_put_batch_is_exclusive_read_only_and_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    store = LocalStore(tmp_path / "rec")
    store.check()
    syncs = Syncs(monkeypatch, syncfs=syncfs)
    made = store.put_batch([*BATCH, BATCH[3], ("records/c/000000000000.json", b"{}")])
    assert made == [True] * 20 + [False, True]  # a key repeated in the batch is not written twice
    assert store.put_batch([BATCH[0]]) == [False]
    assert [store.get(k) for k, _ in BATCH] == [d for _, d in BATCH]
    assert all(stat.S_IMODE(store.path(k).stat().st_mode) == 0o400 for k, _ in BATCH)
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "rec").rglob("*"))
    if syncfs:  # one before the names are linked, one after: per batch, not per file
        assert (syncs.syncfs, syncs.fsync) == (4, 0)
    else:  # each new folder's parent, each file written (22), each folder of a name (21), batch two
        folders = sum(1 for p in (tmp_path / "rec").rglob("*") if p.is_dir())
        assert syncs.syncfs == 0 and syncs.fsync == folders + 22 + 21 + 2


@pytest.mark.skipif(not FileSystemSync.available(), reason="no syncfs(2) here")
def test_local_put_batch_names_nothing_when_its_data_cannot_be_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "rec")
    store.check()
    monkeypatch.setattr(durable, "_SYNCFS", failing_syncfs())
    with pytest.raises(StoreError, match="cannot write 20 object"):
        store.put_batch(BATCH)
    assert list(store.list()) == []  # the write-back failed: not one name without its data
    assert not any(p.is_file() for p in (tmp_path / "rec").rglob("*"))
    monkeypatch.undo()
    assert store.put_batch(BATCH) == [True] * 20  # the uploader's retry writes them all


@pytest.mark.skipif(not FileSystemSync.available(), reason="no syncfs(2) here")
def test_local_put_batch_fails_when_its_names_cannot_be_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "rec")
    store.check()
    real = durable._SYNCFS
    monkeypatch.setattr(durable, "_SYNCFS", failing_syncfs(on_calls={2}))
    with pytest.raises(StoreError):
        store.put_batch(BATCH)
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "rec").rglob("*"))
    monkeypatch.setattr(durable, "_SYNCFS", real)
    # The retry finds the names with their (synced) data and makes them durable.
    assert store.put_batch(BATCH) == [False] * 20
    assert [store.get(k) for k, _ in BATCH] == [d for _, d in BATCH]


def test_file_system_sync_is_not_used_on_a_file_system_it_cannot_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable, "_fs_type", lambda dev: "fuse.sshfs")
    syncs = Syncs(monkeypatch, syncfs=FileSystemSync.available())
    store = LocalStore(tmp_path / "rec")
    assert store.put_batch(BATCH[:2]) == [True, True]
    assert syncs.syncfs == 0 and syncs.fsync >= 2


def test_open_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), LocalStore)
    assert open_store(f"file://{tmp_path}").root == tmp_path
    s = open_store("s3://bucket/some/prefix/", client=object())
    assert isinstance(s, S3Store) and s.bucket == "bucket" and s.prefix == "some/prefix"
    with pytest.raises(StoreError, match="unsupported"):
        open_store("gs://bucket")
    with pytest.raises(StoreError, match="S3 stores only"):
        open_store(tmp_path, object_lock_mode="COMPLIANCE")
    with pytest.raises(StoreError, match="object_lock_mode"):
        open_store("s3://b", object_lock_mode="STRICT", client=object())


# -- S3 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
def test_s3_objects_carry_object_lock_retention_and_checksum(s3: S3Server, bucket: str, mode: str) -> None:
    store = open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url, object_lock_mode=mode)
    store.check(require_object_lock=True)
    data = b'{"a":1}'
    assert store.put("records/c/000000000000.json", data, retain_until=until(3)) is True
    head = s3.client().head_object(Bucket=bucket, Key="gh/records/c/000000000000.json", ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == mode
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=2)
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    r = store.retention("records/c/000000000000.json")
    assert r is not None and r.mode == mode


def test_s3_second_write_to_a_key_is_refused(s3: S3Server, bucket: str) -> None:
    store = open_store(f"s3://{bucket}", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    assert store.put("k.json", b"first", retain_until=until()) is True
    assert store.put("k.json", b"second", retain_until=until()) is False
    assert store.get("k.json") == b"first"
    versions = store.versions("")
    assert versions["k.json"].versions == 1


def test_s3_delete_of_a_locked_version_is_refused(s3: S3Server, bucket: str) -> None:
    from botocore.exceptions import ClientError

    store = open_store(f"s3://{bucket}", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    store.put("locked.json", b"{}", retain_until=until())
    client = s3.client()
    version = client.list_object_versions(Bucket=bucket, Prefix="locked.json")["Versions"][0]["VersionId"]
    with pytest.raises(ClientError) as e:
        client.delete_object(Bucket=bucket, Key="locked.json", VersionId=version)
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        client.delete_object(Bucket=bucket, Key="locked.json", VersionId=version, BypassGovernanceRetention=True)
    assert store.get("locked.json") == b"{}"
    # S3 itself would accept a delete marker on a locked object; the store refuses one.
    with pytest.raises(StillRetained, match="under Object Lock retention until"):
        store.delete("locked.json")
    assert store.versions("")["locked.json"].delete_markers == 0


def test_s3_retention_is_only_ever_extended(s3: S3Server, bucket: str) -> None:
    store = open_store(f"s3://{bucket}", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    store.put("b.json", b"{}", retain_until=until(2))
    store.extend_retention("b.json", until(1))  # shorter: unchanged
    assert store.retention("b.json").until > datetime.now(UTC) + timedelta(days=1.9)
    store.extend_retention("b.json", until(10))
    assert store.retention("b.json").until > datetime.now(UTC) + timedelta(days=9.9)


def test_s3_start_up_check_refuses_a_bucket_without_object_lock(s3: S3Server) -> None:
    name = f"plain-{secrets.token_hex(4)}"
    s3.create_bucket(name, object_lock=False)
    store = open_store(f"s3://{name}", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    with pytest.raises(StoreError, match="does not have Object Lock enabled"):
        store.check(require_object_lock=True)
    open_store(f"s3://{name}", endpoint_url=s3.endpoint_url).check()  # fine without object_lock_mode
    with pytest.raises(StoreError, match="does not exist"):
        open_store("s3://no-such-bucket", endpoint_url=s3.endpoint_url).check()


def test_s3_endpoint_from_the_standard_variable(s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    store = open_store(f"s3://{bucket}")
    assert store.endpoint == s3.endpoint_url
    store.check()


def test_s3_sse_kms(s3: S3Server, bucket: str) -> None:
    store = open_store(
        f"s3://{bucket}", endpoint_url=s3.endpoint_url, object_lock_mode="GOVERNANCE", kms_key_id="alias/gatehouse"
    )
    store.put("enc.json", b"{}", retain_until=until())
    head = s3.client().head_object(Bucket=bucket, Key="enc.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/gatehouse")


def test_s3_unreachable_is_a_clear_store_error(s3: S3Server) -> None:
    store = open_store("s3://whatever", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StoreError, match="cannot reach S3"):
        store.check()
