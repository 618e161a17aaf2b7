"""`gatehouse prune STORE --older-than DAYS`: remove old records from a store, verifiably.

The command line of `gatehouse.recording.prune` (what is removed, and what is refused): it
resolves the store, the signing key and the trusted keys from the arguments and the policy,
and says what was done.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gatehouse.cli.common import default_state_dir
from gatehouse.cli.store_access import add_store_arguments, open_recording_store, recording_policy_of, trusted_keys_for
from gatehouse.policy.reader import PolicyError
from gatehouse.recording import prune
from gatehouse.recording.canonical import RecordError
from gatehouse.recording.config import RecordingPolicy
from gatehouse.recording.signing import STATE_KEY_FILE, SigningKey, load_signing_key
from gatehouse.recording.stores import LocalStore, S3Store, StoreError
from gatehouse.recording.verify import verify_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune",
        help="remove records older than N days from a recording store, verifiably",
        description=(
            "Remove records appended more than --older-than DAYS ago, leaving a signed checkpoint so that "
            "`gatehouse verify` still passes on what remains, and the blobs no remaining record uses. Refuses to "
            "remove anything inside the retention period (the policy's [recording] retention_days, and the one "
            "each chain declared), and refuses a store that does not verify. On S3 it writes delete markers on "
            "objects whose Object Lock retention has passed; a lifecycle rule removes the old versions."
        ),
        epilog="examples:\n  gatehouse prune recordings/ --older-than 400 --policy policies/prod.toml\n"
        "  gatehouse prune s3://audit/gatehouse --older-than 400 --policy policies/prod.toml --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="a recording directory or s3://bucket/prefix")
    p.add_argument("--older-than", type=float, required=True, metavar="DAYS", help="age of the records to remove")
    p.add_argument("--policy", type=Path, help="policy file: retention, signing key, trusted keys, S3 settings")
    p.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help="key that signs the prune checkpoint (default: the policy's, else the state directory's)",
    )
    p.add_argument("--state-dir", type=Path, help="the gateway's state directory (default ~/.gatehouse)")
    add_store_arguments(p, public_key_help="a trusted public key for the verification before pruning; may be repeated")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.set_defaults(func=run)


def _signing_key(args: argparse.Namespace, policy: RecordingPolicy | None) -> SigningKey:
    if args.signing_key is not None:
        return load_signing_key(key_file=args.signing_key)
    if policy is not None and (policy.signing_key_file or policy.signing_key_env):
        return load_signing_key(key_file=policy.signing_key_file, key_env=policy.signing_key_env)
    state_dir = args.state_dir or default_state_dir()
    path = Path(state_dir) / STATE_KEY_FILE
    if not path.exists():
        # Never generate one here: a new key would sign a checkpoint no verifier trusts.
        raise RecordError(f"no signing key: {path} does not exist; pass --signing-key or --policy")
    return load_signing_key(key_file=path)


def _open(args: argparse.Namespace, policy: RecordingPolicy | None) -> LocalStore | S3Store:
    url = str(args.store)
    store = open_recording_store(url, policy, endpoint_url=args.s3_endpoint_url, writes=True)
    if isinstance(store, S3Store) and not store.locks_objects and store.object_lock_enabled():
        # The prune checkpoint must be locked like everything else, or verify flags it.
        raise StoreError(
            f"{url}: the bucket uses Object Lock; pass --policy with [recording] object_lock_mode "
            "and retention_days so the prune checkpoint is locked too"
        )
    return store


def run(args: argparse.Namespace, *, now: float | None = None) -> int:
    now = time.time() if now is None else now
    try:
        policy, state_dir = recording_policy_of(args.policy)
        if args.older_than <= 0:
            print("gatehouse prune: --older-than must be more than 0 days", file=sys.stderr)
            return 2
        store = _open(args, policy)
        policy_retention = (
            (policy.retention_days, f"the policy {args.policy}")
            if policy is not None and policy.retention_days
            else None
        )
        lock_days = prune.retention_floor(store, older_than_days=args.older_than, policy_retention=policy_retention)
        trusted, _ = trusted_keys_for(args.public_key, policy, state_dir)
        key = _signing_key(args, policy)
        prune.check_prunable(store, key, trusted)

        def said(chain: str, first: int, last: int) -> None:
            print(f"chain {chain}: {'would remove' if args.dry_run else 'removing'} records {first}..{last}")

        result = prune.prune_store(
            store,
            key,
            older_than_days=args.older_than,
            now=now,
            lock_days=lock_days,
            dry_run=args.dry_run,
            on_chain=said,
        )
        verb = "would remove" if args.dry_run else "removed"
        print(
            f"{verb} {result.records} record(s) and {result.blobs} unreferenced blob(s)"
            + (f"; {result.kept_locked} unreferenced blob(s) are still locked" if result.kept_locked else "")
        )
        if args.dry_run:
            return 0
        after = verify_store(store, trusted_keys=trusted)
        if not after.ok:  # would be a bug in prune: say so loudly
            for p in after.problems:
                print(f"FAIL {p}", file=sys.stderr)
            return 1
        print(f"verify after prune: OK ({after.summary()})")
        return 0
    except prune.StoreDoesNotVerify as e:
        print(f"gatehouse prune: refusing: {e}:", file=sys.stderr)
        for p in e.problems:
            print(f"  FAIL {p}", file=sys.stderr)
        return 1
    except prune.UnderRetention as e:
        print(f"gatehouse prune: refusing: {e}; --older-than {args.older_than:g} would remove some", file=sys.stderr)
        return 2
    except (PolicyError, RecordError, StoreError, prune.PruneRefused) as e:
        print(f"gatehouse prune: {e}", file=sys.stderr)
        return 2
