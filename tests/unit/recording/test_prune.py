"""Pruning: a prefix of each chain goes after a signed prune point; nothing under retention,
nothing from a store that does not verify, nothing signed by a key verify would not trust."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from gatehouse.recording.layout import checkpoint_key, record_key
from gatehouse.recording.prune import (
    DAY,
    PruneRefused,
    StoreDoesNotVerify,
    UnderRetention,
    check_prunable,
    prune_store,
    retention_floor,
)
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.stores import LocalStore, open_store
from gatehouse.recording.verify import verify_store
from support.records import write_run
from support.s3_server import S3Server


def test_prune_removes_a_prefix_of_each_old_chain_and_the_store_still_verifies(tmp_path: Path, key: SigningKey) -> None:
    t0 = time.time()
    clock = [t0]
    root = tmp_path / "store"
    chain_a = write_run(root, tmp_path / "spool", key, range(0, 3), clock, retention_days=5)
    time.sleep(1.1)  # chain ids carry the start second
    chain_b = write_run(root, tmp_path / "spool", key, range(3, 6), clock, retention_days=5)
    clock[0] = t0 + 10 * DAY
    chain_c = write_run(root, tmp_path / "spool", key, range(6, 9), clock, retention_days=5)
    store = LocalStore(root)
    now = t0 + 12 * DAY

    # Each chain's start record declares 5 days: pruning anything younger is refused.
    with pytest.raises(UnderRetention) as refused:
        retention_floor(store, older_than_days=3, policy_retention=None)
    assert (refused.value.days, refused.value.source) == (5, f"chain {chain_c}")
    assert str(refused.value) == (
        f"records younger than 5 days are under retention (retention_days from chain {chain_c})"
    )
    assert retention_floor(store, older_than_days=6, policy_retention=None) == 5
    check_prunable(store, key, {key.key_id: key.public_key})

    said: list[tuple[str, int, int]] = []
    dry = prune_store(
        store, key, older_than_days=6, now=now, lock_days=5, dry_run=True, on_chain=lambda *chain: said.append(chain)
    )
    assert (dry.records, dry.blobs, dry.kept_locked) == (8, 6, 0)
    assert said == sorted([(chain_a, 0, 3), (chain_b, 0, 3)])  # in chain order
    assert len(list(store.list("records/"))) == 4 + 4 + 4  # a dry run removes nothing

    done = prune_store(store, key, older_than_days=6, now=now, lock_days=5)
    assert (done.records, done.blobs, done.kept_locked) == (8, 6, 0)
    left = list(store.list("records/"))
    assert all(k.startswith(f"records/{chain_c}/") for k in left) and len(left) == 4
    assert store.exists(checkpoint_key(chain_a, 3, prune=True)) and store.exists(checkpoint_key(chain_b, 3, prune=True))
    assert not store.exists(checkpoint_key(chain_b, 3))  # the shutdown checkpoint the prune point replaces
    # The shared blob (system prompt) stays with chain C, and so do C's own.
    assert len(list(store.list("blobs/"))) == 1 + 3
    result = verify_store(store, trusted_keys={key.key_id: key.public_key})
    assert result.ok, [str(p) for p in result.problems]
    assert prune_store(store, key, older_than_days=6, now=now, lock_days=5).records == 0  # nothing more is old


def test_prune_refuses_a_store_that_does_not_verify_or_a_key_verify_would_not_trust(
    tmp_path: Path, key: SigningKey
) -> None:
    clock = [time.time()]
    chain = write_run(tmp_path / "store", tmp_path / "spool", key, range(0, 4), clock)
    store = LocalStore(tmp_path / "store")
    other = SigningKey.generate()

    with pytest.raises(
        PruneRefused,
        match=f"^the signing key {other.key_id} is not among the trusted keys; "
        "verify would reject its prune checkpoints$",
    ):
        check_prunable(store, other, {key.key_id: key.public_key})
    with pytest.raises(PruneRefused, match=f"^the signing key {other.key_id} is not a key of this store$"):
        check_prunable(store, other, None)
    check_prunable(store, key, None)  # the store's own published key

    (tmp_path / "store" / record_key(chain, 2)).unlink()
    with pytest.raises(StoreDoesNotVerify) as refused:
        check_prunable(store, key, {key.key_id: key.public_key})
    assert str(refused.value) == "the store does not verify; pruning could hide the evidence"
    assert [(p.key, p.check) for p in refused.value.problems] == [(record_key(chain, 2), "missing")]


def test_the_policy_retention_is_a_floor(tmp_path: Path, key: SigningKey) -> None:
    write_run(tmp_path / "store", tmp_path / "spool", key, range(0, 2), [time.time()], retention_days=5)
    store = LocalStore(tmp_path / "store")
    with pytest.raises(UnderRetention, match=r"\(retention_days from the policy p.toml\)$"):
        retention_floor(store, older_than_days=10, policy_retention=(30, "the policy p.toml"))
    assert retention_floor(store, older_than_days=30, policy_retention=(30, "the policy p.toml")) == 30
    assert retention_floor(LocalStore(tmp_path / "empty"), older_than_days=1, policy_retention=None) is None


def test_s3_prune_removes_only_what_object_lock_no_longer_retains(
    s3: S3Server, tmp_path: Path, key: SigningKey
) -> None:
    bucket = f"rec-{secrets.token_hex(4)}"
    s3.create_bucket(bucket, object_lock=True)
    store = open_store(f"s3://{bucket}/gh", endpoint_url=s3.endpoint_url, object_lock_mode="COMPLIANCE")
    # A store that locks objects needs a retention for the prune point's own lock.
    with pytest.raises(PruneRefused, match="^the store locks objects: the policy needs"):
        retention_floor(store, older_than_days=5, policy_retention=None)

    spool = tmp_path / "spool"
    # Written 10 days ago: its locks expired.
    old_chain = write_run(store, spool, key, range(0, 3), [time.time() - 10 * DAY], retention_days=1)
    time.sleep(1.1)
    new_chain = write_run(store, spool, key, range(3, 5), [time.time()], retention_days=1)  # still locked
    trusted = {key.key_id: key.public_key}
    lock_days = retention_floor(store, older_than_days=5, policy_retention=None)
    assert lock_days == 1
    check_prunable(store, key, trusted)

    # Asked for everything one day old, just before the new chain's locks expire: only the old chain goes.
    done = prune_store(store, key, older_than_days=1, now=time.time() + 0.9 * DAY, lock_days=lock_days)
    assert done.records == 4 and done.blobs == 3  # the shared blob stays with the new chain
    assert list(store.list(f"records/{old_chain}/")) == []
    assert len(list(store.list(f"records/{new_chain}/"))) == 3
    assert store.retention(checkpoint_key(old_chain, 3, prune=True)).until is not None  # the prune point is locked
    assert verify_store(store, trusted_keys=trusted).ok
