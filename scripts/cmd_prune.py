"""`gatehouse prune STORE --older-than DAYS`: remove old records from a store, verifiably.

For each chain, the records appended more than DAYS ago (a prefix of the chain) are removed,
after a signed "prune" checkpoint naming the last removed record's hash is written: verify
then accepts that the chain starts later, and still checks the first remaining record's link.
Blobs go when no remaining record references them and none has used them for DAYS.

Nothing inside the retention period is removed: DAYS may not be less than the policy's
retention_days nor the one each chain's start record declares. On S3 an object is removed by
a delete marker, and only once its Object Lock retention has passed (S3 itself would accept
a delete marker earlier); the bucket's lifecycle rule then deletes the noncurrent version
(docs/recording-format.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gatehouse.recording import records
from gatehouse.policy.reader import PolicyError
from gatehouse.recording.config import RecordingPolicy
from gatehouse.recording.records import RecordError, SigningKey, parse_key
from gatehouse.recording.stores import LocalStore, NotFound, S3Store, StillRetained, StoreError, open_store
from gatehouse.recording.verify import verify_store
from gatehouse.cli.cmd_verify import recording_policy_of, trusted_keys_for

DAY = 86400.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="remove records older than N days from a recording store, verifiably",
        description=(
            "Remove records appended more than --older-than DAYS ago, leaving a signed checkpoint so that "
            "`gatehouse verify` still passes on what remains, and the blobs no remaining record uses. Refuses to "
            "remove anything inside the retention period (the policy's [recording] retention_days, and the one "
            "each chain declared), and refuses a store that does not verify. On S3 it writes delete markers on "
            "objects whose Object Lock retention has passed; a lifecycle rule removes the old versions."),
        epilog="examples:\n  gatehouse prune recordings/ --older-than 400 --policy policies/prod.toml\n"
               "  gatehouse prune s3://audit/gatehouse --older-than 400 --policy policies/prod.toml --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="a recording directory or s3://bucket/prefix")
    p.add_argument("--older-than", type=float, required=True, metavar="DAYS", help="age of the records to remove")
    p.add_argument("--policy", type=Path, help="policy file: retention, signing key, trusted keys, S3 settings")
    p.add_argument("--signing-key", type=Path, metavar="FILE",
                   help="key that signs the prune checkpoint (default: the policy's, else the state directory's)")
    p.add_argument("--state-dir", type=Path, help="the gateway's state directory (default ~/.gatehouse)")
    p.add_argument("--public-key", type=Path, action="append", default=[], metavar="FILE",
                   help="a trusted public key for the verification before pruning; may be repeated")
    p.add_argument("--s3-endpoint-url", help="S3 endpoint (default: the policy's, else AWS_ENDPOINT_URL_S3)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.set_defaults(func=run)


def _signing_key(args: argparse.Namespace, policy: RecordingPolicy | None) -> SigningKey:
    if args.signing_key is not None:
        return records.load_signing_key(key_file=args.signing_key)
    if policy is not None and (policy.signing_key_file or policy.signing_key_env):
        return records.load_signing_key(key_file=policy.signing_key_file, key_env=policy.signing_key_env)
    from gatehouse.cli.common import default_state_dir

    state_dir = args.state_dir or default_state_dir()
    path = Path(state_dir) / records.STATE_KEY_FILE
    if not path.exists():
        # Never generate one here: a new key would sign a checkpoint no verifier trusts.
        raise RecordError(f"no signing key: {path} does not exist; pass --signing-key or --policy")
    return records.load_signing_key(key_file=path)


def _open(args: argparse.Namespace, policy: RecordingPolicy | None) -> LocalStore | S3Store:
    url = str(args.store)
    if not url.startswith("s3://"):
        store = open_store(url)
        if not Path(store.url).is_dir():
            raise StoreError(f"{url}: no such directory")
        return store
    endpoint = getattr(args, "s3_endpoint_url", None) or (policy.s3_endpoint_url if policy else None)
    store = open_store(url, endpoint_url=endpoint, object_lock_mode=policy.object_lock_mode if policy else None,
                       kms_key_id=policy.kms_key_id if policy else None)
    assert isinstance(store, S3Store)
    if not store.locks_objects and store.object_lock_enabled():
        # The prune checkpoint must be locked like everything else, or verify flags it.
        raise StoreError(f"{url}: the bucket uses Object Lock; pass --policy with [recording] object_lock_mode "
                         "and retention_days so the prune checkpoint is locked too")
    return store


def _retained(store: Any, key: str, now: float) -> bool:
    r = store.retention(key)
    return r is not None and r.until is not None and r.until.timestamp() > now


def run(args: argparse.Namespace, *, now: float | None = None) -> int:
    now = time.time() if now is None else now
    try:
        policy, state_dir = recording_policy_of(args.policy) if args.policy is not None else (None, None)
        if args.older_than <= 0:
            print("gatehouse prune: --older-than must be more than 0 days", file=sys.stderr)
            return 2
        store = _open(args, policy)

        # Retention: the policy's, and what each chain declared when it was written.
        floors: list[tuple[int, str]] = []
        if policy is not None and policy.retention_days:
            floors.append((policy.retention_days, f"the policy {args.policy}"))
        for rec in records.iter_records(store, kinds=("start",)):
            days = (rec.get("gateway") or {}).get("retention_days")
            if isinstance(days, int):
                floors.append((days, f"chain {rec['chain']['id']}"))
        if floors:
            days, source = max(floors)
            if args.older_than < days:
                print(f"gatehouse prune: refusing: records younger than {days} days are under retention "
                      f"(retention_days from {source}); --older-than {args.older_than:g} would remove some",
                      file=sys.stderr)
                return 2
        lock_days = max((d for d, _ in floors), default=None)
        if store.locks_objects and not lock_days:
            print("gatehouse prune: the store locks objects: the policy needs [recording] retention_days",
                  file=sys.stderr)
            return 2

        trusted, _ = trusted_keys_for(args, policy, state_dir)
        key = _signing_key(args, policy)
        if trusted is not None and key.key_id not in trusted:
            print(f"gatehouse prune: the signing key {key.key_id} is not among the trusted keys; verify would "
                  "reject its prune checkpoints", file=sys.stderr)
            return 2
        before = verify_store(store, trusted_keys=trusted)
        if not before.ok:
            print("gatehouse prune: refusing: the store does not verify; pruning could hide the evidence:",
                  file=sys.stderr)
            for p in before.problems:
                print(f"  FAIL {p}", file=sys.stderr)
            return 1
        if trusted is None and key.key_id not in before.trusted_key_ids:
            print(f"gatehouse prune: the signing key {key.key_id} is not a key of this store", file=sys.stderr)
            return 2
        return _prune(args, store, key, now, lock_days, trusted)
    except (PolicyError, RecordError, StoreError) as e:
        print(f"gatehouse prune: {e}", file=sys.stderr)
        return 2


def _prune(args: argparse.Namespace, store: Any, key: SigningKey, now: float, lock_days: int | None,
           trusted: Any) -> int:
    cutoff = now - args.older_than * DAY
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
            at = records.parse_iso_time(records.parse_json(data)["chain"]["at"])
            contiguous = not doomed or seq == doomed[-1][0] + 1
            if at < cutoff and contiguous and not (store.locks_objects and _retained(store, k, now)):
                doomed.append((seq, k, records.sha256_ref(data)))
                continue
            rest = i
            break
        for _, k in items[rest:]:
            keep_refs.update(records.blob_refs(records.parse_json(store.get(k))))
        if not doomed:
            continue
        last_seq, _, last_hash = doomed[-1]
        print(f"chain {chain}: {'would remove' if args.dry_run else 'removing'} records {doomed[0][0]}..{last_seq}")
        if args.dry_run:
            removed += len(doomed)
            continue
        # The signed prune point goes first: an interrupted prune still verifies.
        until = datetime.fromtimestamp(now, UTC) + timedelta(days=lock_days or 0)
        store.put(records.checkpoint_key(chain, last_seq, prune=True),
                  records.make_checkpoint(chain_id=chain, seq=last_seq, head=last_hash, key=key, at=now, kind="prune"),
                  retain_until=until)
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
    keep_hex = {records.ref_hex(r) for r in keep_refs}
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
            if args.dry_run:
                if not (store.locks_objects and _retained(store, k, now)):
                    removed_blobs += 1
                continue
            store.delete(k)
            removed_blobs += 1
        except StillRetained:
            kept_locked += 1
        except NotFound:
            continue

    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {removed} record(s) and {removed_blobs} unreferenced blob(s)"
          + (f"; {kept_locked} unreferenced blob(s) are still locked" if kept_locked else ""))
    if args.dry_run:
        return 0
    after = verify_store(store, trusted_keys=trusted)
    if not after.ok:  # would be a bug in prune: say so loudly
        for p in after.problems:
            print(f"FAIL {p}", file=sys.stderr)
        return 1
    print(f"verify after prune: OK ({after.summary()})")
    return 0
