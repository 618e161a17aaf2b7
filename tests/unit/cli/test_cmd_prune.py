"""`gatehouse prune`: its exit codes and what it says, on a local store and on S3 with Object Lock.

What is removed and what is refused is `gatehouse.recording.prune` (tests/unit/recording/test_prune.py).
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from gatehouse.cli import cmd_prune
from gatehouse.cli.main import build_parser
from gatehouse.recording.layout import checkpoint_key, record_key
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.stores import LocalStore, open_store
from gatehouse.recording.verify import VerifyResult, verify_store
from support.records import numbered_record, write_run
from support.s3_server import S3Server

DAY = 86400.0


def two_runs(tmp_path: Path) -> tuple[Path, SigningKey, tuple[str, str]]:
    """A store holding two runs of one gateway: chain A (records 0..3) and chain B (0..8)."""
    key = SigningKey.generate()
    clock = [time.time()]
    chain_a = write_run(tmp_path / "store", tmp_path / "spool", key, range(0, 3), clock)
    time.sleep(1.1)  # chain ids carry the start second
    chain_b = write_run(tmp_path / "store", tmp_path / "spool", key, range(3, 11), clock)
    for p in (tmp_path / "store").rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)  # the attacker can write
    return tmp_path / "store", key, (chain_a, chain_b)


def rpath(store: Path, chain: str, seq: int) -> Path:
    return store / record_key(chain, seq)


def verify(store: Path, key: SigningKey) -> VerifyResult:
    return verify_store(LocalStore(store), trusted_keys={key.key_id: key.public_key})


def problems(result: VerifyResult) -> list[tuple[str, str]]:
    return [(p.key, p.check) for p in result.problems]


def prune_args(store: Path | str, days: float, **kw: Any) -> argparse.Namespace:
    """The arguments `gatehouse prune STORE --older-than DAYS` parses to, with `kw` set on them."""
    ns = build_parser().parse_args(["prune", str(store), "--older-than", str(days)])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_prune_removes_old_records_and_verify_still_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = SigningKey.generate()
    keyfile = tmp_path / "key.pem"
    keyfile.write_bytes(key.private_pem())
    os.chmod(keyfile, 0o600)
    t0 = time.time()
    clock = [t0]
    store = tmp_path / "store"
    chain_a = write_run(store, tmp_path / "spool", key, range(0, 3), clock, retention_days=5)
    time.sleep(1.1)
    chain_b = write_run(store, tmp_path / "spool", key, range(3, 6), clock, retention_days=5)
    clock[0] = t0 + 10 * DAY
    chain_c = write_run(store, tmp_path / "spool", key, range(6, 9), clock, retention_days=5)
    assert len({chain_a, chain_b, chain_c}) == 3

    # Inside retention (5 days, declared by each chain's start record): refused.
    assert cmd_prune.run(prune_args(store, 3, signing_key=keyfile), now=t0 + 12 * DAY) == 2
    assert "under retention" in capsys.readouterr().err

    assert cmd_prune.run(prune_args(store, 6, signing_key=keyfile, dry_run=True), now=t0 + 12 * DAY) == 0
    assert len(list(LocalStore(store).list("records/"))) == 4 + 4 + 4  # dry run: nothing removed

    assert cmd_prune.run(prune_args(store, 6, signing_key=keyfile), now=t0 + 12 * DAY) == 0
    out = capsys.readouterr().out
    assert "verify after prune: OK" in out
    left = list(LocalStore(store).list("records/"))
    assert all(k.startswith(f"records/{chain_c}/") for k in left) and len(left) == 4
    assert (store / checkpoint_key(chain_b, 3, prune=True)).exists()
    # Blobs of pruned records went; the shared one (system prompt) stays with chain C.
    assert len(list(LocalStore(store).list("blobs/"))) == 1 + 3
    result = verify(store, key)
    assert result.ok, [str(p) for p in result.problems]
    # Truncating C's tail after the prune is still caught.
    rpath(store, chain_c, 3).chmod(0o644)
    rpath(store, chain_c, 3).unlink()
    assert problems(verify(store, key)) == [(checkpoint_key(chain_c, 3), "checkpoint")]


def test_prune_refuses_a_store_that_does_not_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, key, chains = two_runs(tmp_path)
    keyfile = tmp_path / "key.pem"
    keyfile.write_bytes(key.private_pem())
    os.chmod(keyfile, 0o600)
    rpath(store, chains[1], 3).unlink()
    assert cmd_prune.run(prune_args(store, 1, signing_key=keyfile), now=time.time() + 30 * DAY) == 1
    assert "does not verify" in capsys.readouterr().err
    assert len(list(LocalStore(store).list("records/"))) == 4 + 8  # nothing removed


def test_policy_retention_floor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, key, _ = two_runs(tmp_path)
    policy = tmp_path / "p.toml"
    policy.write_text('[recording]\nstore = "s3://b/p"\nobject_lock_mode = "COMPLIANCE"\nretention_days = 30\n')
    keyfile = tmp_path / "key.pem"
    keyfile.write_bytes(key.private_pem())
    os.chmod(keyfile, 0o600)
    assert cmd_prune.run(prune_args(store, 10, policy=policy, signing_key=keyfile)) == 2
    assert "retention_days from the policy" in capsys.readouterr().err


def test_s3_prune_deletes_only_past_retention_and_verify_passes(
    s3: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    key = SigningKey.generate()
    keyfile = tmp_path / "key.pem"
    keyfile.write_bytes(key.private_pem())
    os.chmod(keyfile, 0o600)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[recording]\nstore = "s3://{bucket}/gh"\ns3_endpoint_url = "{s3.endpoint_url}"\n'
        f'object_lock_mode = "COMPLIANCE"\nretention_days = 1\nsigning_key_file = "key.pem"\n'
    )
    store = open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")

    def one_run(ids: range, clock: list[float]) -> str:
        rec = Recording.open(
            tmp_path / "spool",
            store=store,
            key=key,
            retention_days=1,
            gateway_version="t",
            policy_sha256="p",
            clock=lambda: clock[0],
        )
        rec.start()
        for i in ids:
            rec.append(numbered_record(i))
        assert rec.shutdown()
        chain = rec.journal.chain_id
        Recording.forget(tmp_path / "spool")
        return chain

    old_chain = one_run(range(0, 3), [time.time() - 10 * DAY])  # written 10 days ago: locks expired
    time.sleep(1.1)
    new_chain = one_run(range(3, 5), [time.time()])  # still locked

    assert cmd_prune.run(prune_args(f"s3://{bucket}/gh", 0.5, policy=policy)) == 2  # inside retention_days
    assert "under retention" in capsys.readouterr().err
    assert cmd_prune.run(prune_args(f"s3://{bucket}/gh", 5, policy=policy)) == 0
    out = capsys.readouterr().out
    assert f"chain {old_chain}: removing records 0..3" in out and "verify after prune: OK" in out
    assert "removed 4 record(s) and 3 unreferenced blob(s)" in out  # the shared blob stays
    assert list(store.list(f"records/{old_chain}/")) == []
    assert len(list(store.list(f"records/{new_chain}/"))) == 3
    versions = store.versions("")
    assert versions[record_key(old_chain, 1)].latest_is_delete_marker  # a marker; the lifecycle rule ends it
    trusted = {key.key_id: key.public_key}
    assert verify_store(store, trusted_keys=trusted).ok

    # Nothing still locked is removed, even when asked for everything.
    assert cmd_prune.run(prune_args(f"s3://{bucket}/gh", 1, policy=policy), now=time.time() + 0.9 * DAY) == 0
    assert len(list(store.list(f"records/{new_chain}/"))) == 3

    # A delete marker anywhere else is caught.
    s3.client().delete_object(Bucket=bucket, Key=f"gh/{record_key(new_chain, 2)}")
    found = problems(verify_store(store, trusted_keys=trusted))
    assert (record_key(new_chain, 2), "versions") in found
    assert (checkpoint_key(new_chain, 2), "checkpoint") in found
