"""Tampering suite: every modification of a store is caught by verify with a precise account.

The store under test holds two runs of one gateway: chain A (the previous run: start + 3
records + shutdown checkpoint) and chain B (start + 8 records + shutdown checkpoint), whose
start record names A's last record. Each test copies it and tampers with the copy.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import shutil
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatehouse.cli import main as cli
from gatehouse.recording import verify as verify_module
from gatehouse.recording.canonical import canonical_json, sha256_ref
from gatehouse.recording.chain import seal_record
from gatehouse.recording.layout import blob_key, checkpoint_key, public_key_key, record_key
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey, seal
from gatehouse.recording.stores import LocalStore, open_store
from gatehouse.recording.verify import Problem, VerifyResult, verify_store
from support.records import numbered_record, write_run
from support.s3_server import S3Server


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SigningKey, str, str]:
    tmp = tmp_path_factory.mktemp("pristine")
    key = SigningKey.generate()
    clock = [time.time()]
    chain_a = write_run(tmp / "store", tmp / "spool", key, range(0, 3), clock)
    time.sleep(1.1)  # chain ids carry the start second
    chain_b = write_run(tmp / "store", tmp / "spool", key, range(3, 11), clock)
    return tmp / "store", key, chain_a, chain_b


@pytest.fixture
def store(pristine: tuple[Path, SigningKey, str, str], tmp_path: Path) -> Iterator[Path]:
    dest = tmp_path / "store"
    shutil.copytree(pristine[0], dest)
    for p in dest.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)  # the attacker can write
    yield dest


@pytest.fixture
def key(pristine: tuple[Path, SigningKey, str, str]) -> SigningKey:
    return pristine[1]


@pytest.fixture
def chains(pristine: tuple[Path, SigningKey, str, str]) -> tuple[str, str]:
    return pristine[2], pristine[3]


def rpath(store: Path, chain: str, seq: int) -> Path:
    return store / record_key(chain, seq)


def verify(store: Path, key: SigningKey) -> VerifyResult:
    return verify_store(LocalStore(store), trusted_keys={key.key_id: key.public_key})


def problems(result: VerifyResult) -> list[tuple[str, str]]:
    return [(p.key, p.check) for p in result.problems]


def only(result: VerifyResult, check: str) -> list[Problem]:
    return [p for p in result.problems if p.check == check]


# -- baseline ---------------------------------------------------------------------------------------


def test_untouched_store_verifies(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    result = verify(store, key)
    assert result.ok, [str(p) for p in result.problems]
    assert (result.chains, result.records, result.checkpoints) == (2, 4 + 9, 2)
    assert result.blobs == 1 + 11 and result.keys == 1
    start_b = json.loads(rpath(store, chains[1], 0).read_text())
    assert start_b["previous"]["chain"] == chains[0] and start_b["previous"]["seq"] == 3


def test_verify_keeps_no_record_documents(store: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify holds what its checks need of each record (hash, link, ...), never the parsed
    documents: at any read from the store, at most the document in hand is alive. (Keeping
    them made a 200,000-record store take 4 GB.)"""

    class Doc(dict):  # type: ignore[type-arg]  # a dict that a weak reference can follow
        pass

    docs: list[weakref.ref[Doc]] = []
    real_parse = verify_module.parse_json

    def parse_json(data: bytes | str) -> Any:
        doc = real_parse(data)
        if isinstance(doc, dict):
            doc = Doc(doc)
            docs.append(weakref.ref(doc))
        return doc

    class Watched(LocalStore):
        most_alive = 0

        def get(self, k: str) -> bytes:
            gc.collect()
            Watched.most_alive = max(Watched.most_alive, sum(1 for d in docs if d() is not None))
            return super().get(k)

    monkeypatch.setattr(verify_module, "parse_json", parse_json)
    result = verify_store(Watched(store), trusted_keys={key.key_id: key.public_key})
    assert result.ok and result.records == 13 and len(docs) == 13 + 2  # and 2 checkpoints
    assert Watched.most_alive <= 1, f"{Watched.most_alive} parsed documents alive at once"


# -- the tampering cases ---------------------------------------------------------------------------


def test_one_byte_changed_in_a_record(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    path = rpath(store, chains[1], 4)
    data = path.read_bytes()
    i = data.index(b'"gx_')
    path.write_bytes(data[: i + 4] + b"9" + data[i + 5 :])  # one digit of the exchange id
    result = verify(store, key)
    assert problems(result) == [
        (record_key(chains[1], 4), "signature"),
        (record_key(chains[1], 5), "link"),
    ]
    sig = only(result, "signature")[0]
    assert "content was changed after signing" in sig.message and sig.seq == 4 and sig.chain == chains[1]
    assert "record 4 hashes to sha256:" in only(result, "link")[0].message


def test_one_byte_changed_breaking_json(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    path = rpath(store, chains[1], 2)
    data = bytearray(path.read_bytes())
    data[0] = ord("[")
    path.write_bytes(bytes(data))
    result = verify(store, key)
    assert (record_key(chains[1], 2), "json") in problems(result)
    assert (record_key(chains[1], 3), "link") in problems(result)


def test_one_byte_changed_in_a_blob(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    data = canonical_json({"role": "user", "content": "message 7"})
    path = store / blob_key(sha256_ref(data))
    path.write_bytes(data.replace(b"message 7", b"message 8"))
    result = verify(store, key)
    tampered = blob_key(sha256_ref(data))
    assert problems(result) == [(tampered, "blob"), (record_key(chains[1], 5), "blob")]
    assert "not to its name (the blob was modified)" in result.problems[0].message
    assert result.problems[1].exchange_id == "gx_0007"


def test_record_deleted(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    rpath(store, chains[1], 3).unlink()
    result = verify(store, key)
    assert problems(result) == [(record_key(chains[1], 3), "missing")]
    assert result.problems[0].message == (
        f"record 3 is missing from chain {chains[1]} (deleted; the chain has records up to 8)"
    )


def test_newest_records_deleted(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    for seq in (7, 8):
        rpath(store, chains[1], seq).unlink()
    result = verify(store, key)
    assert problems(result) == [(checkpoint_key(chains[1], 8), "checkpoint")]
    assert result.problems[0].message == (
        f"chain {chains[1]} was checkpointed at seq 8, but the newest record "
        "present is seq 6: records 7..8 were deleted (truncated tail)"
    )


def test_previous_runs_tail_deleted_with_its_checkpoint(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    rpath(store, chains[0], 3).unlink()
    (store / checkpoint_key(chains[0], 3)).unlink()
    result = verify(store, key)
    assert problems(result) == [(record_key(chains[1], 0), "previous-run")]
    assert "its newest record is seq 2" in result.problems[0].message


def test_whole_previous_chain_deleted(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    shutil.rmtree(store / "records" / chains[0])
    shutil.rmtree(store / "checkpoints" / chains[0])
    result = verify(store, key)
    assert problems(result) == [(record_key(chains[1], 0), "previous-run")]
    assert "the whole chain is missing" in result.problems[0].message


def test_record_inserted(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    # Shift 5..8 up by one and put a forged record (signed by another key) at 5.
    for seq in range(8, 4, -1):
        rpath(store, chains[1], seq).rename(rpath(store, chains[1], seq + 1))
    forged = json.loads(rpath(store, chains[1], 4).read_text())
    forged["exchange_id"] = "gx_forged"
    forged["chain"]["seq"] = 5
    forged["chain"]["prev"] = sha256_ref(rpath(store, chains[1], 4).read_bytes())
    rpath(store, chains[1], 5).write_bytes(seal(forged, SigningKey.generate()))
    result = verify(store, key)
    found = problems(result)
    assert (record_key(chains[1], 5), "signature") in found
    assert "which is not a trusted key" in only(result, "signature")[0].message
    for seq in (6, 7, 8, 9):
        assert (record_key(chains[1], seq), "sequence") in found
    assert (record_key(chains[1], 6), "link") in found
    assert (checkpoint_key(chains[1], 8), "checkpoint") in found


def test_record_appended_by_an_attacker_with_a_published_key(
    store: Path, key: SigningKey, chains: tuple[str, str]
) -> None:
    """Without trusted keys, verify trusts the store's keys: a forged record signed by a key the
    attacker published verifies, so only the chain tells. With the real key it is caught."""
    attacker = SigningKey.generate()
    (store / public_key_key(attacker.key_id)).write_bytes(attacker.public_pem())
    last = rpath(store, chains[1], 8).read_bytes()
    forged = {"kind": "exchange", "exchange_id": "gx_evil", "request": None, "response": None}
    data, _ = seal_record(forged, chain_id=chains[1], seq=9, prev=sha256_ref(last), at=time.time(), key=attacker)
    rpath(store, chains[1], 9).write_bytes(data)
    consistency = verify_store(LocalStore(store))
    assert consistency.trust == "store" and consistency.ok  # consistent, but proves nothing about who wrote it
    result = verify(store, key)
    assert problems(result) == [(record_key(chains[1], 9), "signature")]


def test_two_records_swapped(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    a, b = rpath(store, chains[1], 3), rpath(store, chains[1], 4)
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    result = verify(store, key)
    found = problems(result)
    assert (record_key(chains[1], 3), "sequence") in found
    assert (record_key(chains[1], 4), "sequence") in found
    assert (record_key(chains[1], 3), "link") in found
    assert (record_key(chains[1], 5), "link") in found
    seq_msg = [p.message for p in only(result, "sequence") if p.seq == 3][0]
    assert seq_msg.startswith(f"the record says it is seq 4 of chain {chains[1]}, but it is stored as seq 3")


def test_record_rewritten_in_another_encoding(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    path = rpath(store, chains[1], 2)
    path.write_text(json.dumps(json.loads(path.read_bytes()), indent=2))
    result = verify(store, key)
    assert (record_key(chains[1], 2), "canonical") in problems(result)
    assert (record_key(chains[1], 3), "link") in problems(result)


def test_checkpoint_tampered(store: Path, key: SigningKey, chains: tuple[str, str]) -> None:
    path = store / checkpoint_key(chains[1], 8)
    doc = json.loads(path.read_bytes())
    doc["seq"] = 7
    path.write_bytes(canonical_json(doc))
    result = verify(store, key)
    assert problems(result) == [(checkpoint_key(chains[1], 8), "signature")]


def test_published_key_file_swapped(store: Path, key: SigningKey) -> None:
    other = SigningKey.generate()
    (store / public_key_key(key.key_id)).write_bytes(other.public_pem())
    result = verify(store, key)
    assert problems(result) == [(public_key_key(key.key_id), "key")]


# -- the command line --------------------------------------------------------------------------------


def test_cli_verify_exit_codes_and_account(
    store: Path, key: SigningKey, chains: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["verify", str(store)]) == 0
    out = capsys.readouterr().out
    assert "proves the store is consistent, not that the gateway wrote it" in out and "OK: every check passed" in out

    pub = tmp_path / "rec.pub"
    pub.write_bytes(key.public_pem())
    assert cli.main(["verify", str(store), "--public-key", str(pub)]) == 0
    assert f"Trusted keys: {key.key_id} (1 from --public-key)" in capsys.readouterr().out

    policy = tmp_path / "policy.toml"
    policy.write_text(f'[recording]\nstore = "{store}"\npublic_keys = ["rec.pub"]\n')
    assert cli.main(["verify", "--policy", str(policy)]) == 0
    assert "from the policy's [recording] public_keys" in capsys.readouterr().out

    rpath(store, chains[1], 3).unlink()
    assert cli.main(["verify", str(store), "--public-key", str(pub)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {record_key(chains[1], 3)}: missing: record 3 is missing from chain {chains[1]}" in out
    assert "FAILED: 1 problem(s)" in out

    assert cli.main(["verify", str(tmp_path / "nope")]) == 2


# -- S3 --------------------------------------------------------------------------------------------


def test_s3_store_verifies_with_retention_and_catches_overwrites(
    s3: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    key = SigningKey.generate()
    store = open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    rec = Recording.open(
        tmp_path / "spool", store=store, key=key, retention_days=1, gateway_version="t", policy_sha256="p"
    )
    rec.start()
    for i in range(4):
        rec.append(numbered_record(i))
    assert rec.shutdown()
    Recording.forget(tmp_path / "spool")
    result = verify_store(store, trusted_keys={key.key_id: key.public_key})
    assert result.ok, [str(p) for p in result.problems]
    assert result.retention_checked == result.records + result.blobs + result.checkpoints + result.keys

    pub = tmp_path / "rec.pub"
    pub.write_bytes(key.public_pem())
    os.environ["AWS_ENDPOINT_URL_S3"] = s3.endpoint_url
    try:
        assert cli.main(["verify", f"s3://{bucket}/gh", "--public-key", str(pub)]) == 0
    finally:
        del os.environ["AWS_ENDPOINT_URL_S3"]
    assert "Object Lock retention on" in capsys.readouterr().out

    # Someone with write access puts a new version over a record (no If-None-Match), and an
    # object without retention into the layout.
    client = s3.client()
    k = record_key(rec.journal.chain_id, 2)
    old = store.get(k)
    client.put_object(Bucket=bucket, Key=f"gh/{k}", Body=old.replace(b"gx_0001", b"gx_0009"))
    client.put_object(Bucket=bucket, Key=f"gh/{public_key_key('0' * 16)}", Body=key.public_pem())
    result = verify_store(store, trusted_keys={key.key_id: key.public_key})
    found = problems(result)
    assert (k, "versions") in found and (k, "signature") in found
    assert (public_key_key("0" * 16), "retention") in found
    assert "2 versions exist: the object was overwritten" in [p.message for p in only(result, "versions")][0]


def test_s3_bucket_without_object_lock_fails_verify(s3: S3Server) -> None:
    bucket = f"plain-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=False)
    result = verify_store(open_store(f"s3://{bucket}", endpoint_url=s3.endpoint_url))
    assert [p.check for p in result.problems] == ["retention"]
    assert "does not have Object Lock enabled" in result.problems[0].message
