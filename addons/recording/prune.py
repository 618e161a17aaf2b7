"""Pruning a recording store, verifiably: what `gatehouse prune` does, without its command line.

For each chain, the records appended more than DAYS ago (a prefix of the chain) are removed,
after a signed "prune" checkpoint naming the last removed record's hash is written: verify
then accepts that the chain starts later, and still checks the first remaining record's link.
Blobs go when no remaining record references them and none has used them for DAYS.

Nothing inside the retention period is removed: DAYS may not be less than the policy's
retention_days nor the one each chain's start record declares. Nor is a store pruned that
does not verify (pruning could hide the evidence), nor with a key whose prune checkpoints
would not verify. On S3 an object is removed by a delete marker, and only once its Object
Lock retention has passed (S3 itself would accept a delete marker earlier); the bucket's
lifecycle rule then deletes the noncurrent version (docs/recording-format.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gatehouse.recording.canonical import parse_iso_time, parse_json, ref_hex, sha256_ref
from gatehouse.recording.chain import make_checkpoint
from gatehouse.recording.layout import checkpoint_key, parse_key
from gatehouse.recording.reader import blob_refs, iter_records
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.stores import NotFound, StillRetained, Store
from gatehouse.recording.verify import Problem, verify_store

DAY = 86400.0


class PruneRefused(Exception):
    """Nothing was removed: the prune would break retention or leave a store that does not verify."""


class UnderRetention(PruneRefused):
    """DAYS is less than a retention that applies to the store."""

    def __init__(self, days: int, source: str) -> None:
        super().__init__(f"records younger than {days} days are under retention (retention_days from {source})")
        self.days = days
        self.source = source


class StoreDoesNotVerify(PruneRefused):
    """The store fails verification before pruning: `problems` says how."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("the store does not verify; pruning could hide the evidence")
        self.problems = problems


@dataclass(frozen=True)
class PruneResult:
    records: int  # removed (or, in a dry run, that would be)
    blobs: int
    kept_locked: int  # unreferenced blobs still under Object Lock retention


def retention_floor(store: Store, *, older_than_days: float, policy_retention: tuple[int, str] | None) -> int | None:
    """The longest retention (days) that applies to `store`: `policy_retention` (days, where
    from) and what each chain declared when it was written; None if none does.

    Raises UnderRetention when pruning records older than `older_than_days` would remove some
    inside it, and PruneRefused when the store locks objects but no retention applies (the
    prune checkpoint is locked for that long).
    """
    floors: list[tuple[int, str]] = []
    if policy_retention is not None:
        floors.append(policy_retention)
    for rec in iter_records(store, kinds=("start",)):
        days = (rec.get("gateway") or {}).get("retention_days")
        if isinstance(days, int):
            floors.append((days, f"chain {rec['chain']['id']}"))
    if floors:
        days, source = max(floors)
        if older_than_days < days:
            raise UnderRetention(days, source)
    lock_days = max((d for d, _ in floors), default=None)
    if store.locks_objects and not lock_days:
        raise PruneRefused("the store locks objects: the policy needs [recording] retention_days")
    return lock_days


def check_prunable(store: Store, key: SigningKey, trusted: Mapping[str, Ed25519PublicKey] | None) -> None:
    """Raise PruneRefused unless `store` verifies (with `trusted`, else its published keys)
    and verify will accept the prune checkpoints `key` signs."""
    if trusted is not None and key.key_id not in trusted:
        raise PruneRefused(
            f"the signing key {key.key_id} is not among the trusted keys; verify would reject its prune checkpoints"
        )
    before = verify_store(store, trusted_keys=trusted)
    if not before.ok:
        raise StoreDoesNotVerify(before.problems)
    if trusted is None and key.key_id not in before.trusted_key_ids:
        raise PruneRefused(f"the signing key {key.key_id} is not a key of this store")


def _retained(store: Store, key: str, now: float) -> bool:
    r = store.retention(key)
    return r is not None and r.until is not None and r.until.timestamp() > now


def prune_store(
    store: Store,
    key: SigningKey,
    *,
    older_than_days: float,
    now: float,
    lock_days: int | None,
    dry_run: bool = False,
    on_chain: Callable[[str, int, int], None] | None = None,
) -> PruneResult:
    """Remove what is older than `older_than_days` (see the module's docstring); with
    `dry_run`, count it only. `on_chain(chain, first, last)` hears of each chain's records to
    go before they do. Run `retention_floor` and `check_prunable` first: this does not."""
    cutoff = now - older_than_days * DAY
    keys = list(store.list(""))
    by_chain: dict[str, list[tuple[int, str]]] = {}
    checkpoints: dict[str, list[tuple[int, str]]] = {}
    for k in keys:
        p = parse_key(k)
        if p is not None and p.kind == "record":
            by_chain.setdefault(p.chain, []).append((p.seq, k))
        elif p is not None and p.kind in ("checkpoint", "prune"):
            checkpoints.setdefault(p.chain, []).append((p.seq, k))

    removed = kept_locked = 0
    keep_refs: set[str] = set()
    for chain, items in sorted(by_chain.items()):
        items.sort()
        # A prefix of the chain: records are appended in time order, and verify needs the
        # remaining records to follow the prune point without a gap.
        doomed: list[tuple[int, str, str]] = []
        rest = len(items)
        for i, (seq, k) in enumerate(items):
            data = store.get(k)
            at = parse_iso_time(parse_json(data)["chain"]["at"])
            contiguous = not doomed or seq == doomed[-1][0] + 1
            if at < cutoff and contiguous and not (store.locks_objects and _retained(store, k, now)):
                doomed.append((seq, k, sha256_ref(data)))
                continue
            rest = i
            break
        for _, k in items[rest:]:
            keep_refs.update(blob_refs(parse_json(store.get(k))))
        if not doomed:
            continue
        last_seq, _, last_hash = doomed[-1]
        if on_chain is not None:
            on_chain(chain, doomed[0][0], last_seq)
        if dry_run:
            removed += len(doomed)
            continue
        # The signed prune point goes first: an interrupted prune still verifies.
        until = datetime.fromtimestamp(now, UTC) + timedelta(days=lock_days or 0)
        store.put(
            checkpoint_key(chain, last_seq, prune=True),
            make_checkpoint(chain_id=chain, seq=last_seq, head=last_hash, key=key, at=now, kind="prune"),
            retain_until=until,
        )
        for _, k, _ in doomed:
            store.delete(k)
            removed += 1
        for seq, k in checkpoints.get(chain, []):
            if seq < last_seq or (seq == last_seq and not k.endswith(".prune.json")):
                try:
                    store.delete(k)
                except StillRetained:
                    pass  # harmless: verify ignores checkpoints before the prune point

    removed_blobs = 0
    keep_hex = {ref_hex(r) for r in keep_refs}
    for k in keys:
        p = parse_key(k)
        if p is None or p.kind != "blob" or p.hex in keep_hex:
            continue
        try:
            # With Object Lock, the retention (extended whenever a record reuses the blob) is
            # the authority, and delete() refuses a locked blob. Otherwise the time of last use:
            # a local blob's mtime (the uploader touches reused blobs), else S3's LastModified.
            if not store.locks_objects and store.mtime(k) >= cutoff:
                continue
            if dry_run:
                if not (store.locks_objects and _retained(store, k, now)):
                    removed_blobs += 1
                continue
            store.delete(k)
            removed_blobs += 1
        except StillRetained:
            kept_locked += 1
        except NotFound:
            continue
    return PruneResult(removed, removed_blobs, kept_locked)
