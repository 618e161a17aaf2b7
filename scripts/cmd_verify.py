"""`gatehouse verify STORE`: check every signature, chain link, checkpoint and blob of a store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gatehouse.cli.store_access import add_store_arguments, open_recording_store, recording_policy_of, trusted_keys_for
from gatehouse.policy.reader import PolicyError
from gatehouse.recording.canonical import RecordError
from gatehouse.recording.stores import StoreError
from gatehouse.recording.verify import verify_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="verify a recording store (signatures, chains, checkpoints, blobs, Object Lock)",
        description=(
            "Verify a recording store: every record's and checkpoint's Ed25519 signature against the trusted "
            "public keys, every chain link, that no record is missing after the newest signed checkpoint or "
            "between runs, every blob's hash, and on S3 that each object carries Object Lock retention. "
            "Trusted keys come from --public-key or the policy's [recording] public_keys (or its signing key); "
            "without either, the keys published in the store are used, which proves the store is consistent, "
            "not who wrote it. Exits 0 when all checks hold, 1 naming each record and check that failed, "
            "2 when the store cannot be read."
        ),
        epilog="examples:\n  gatehouse verify recordings/\n"
        "  gatehouse verify s3://audit-bucket/gatehouse --policy policies/prod.toml\n"
        "  AWS_ENDPOINT_URL_S3=http://127.0.0.1:9000 gatehouse verify s3://b/p --public-key rec.pub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", nargs="?", help="a directory or s3://bucket/prefix (default: the policy's store)")
    p.add_argument("--policy", type=Path, help="policy file whose [recording] section names keys and S3 endpoint")
    add_store_arguments(p, public_key_help="a trusted public key (PEM); may be repeated")
    p.add_argument("--no-retention", action="store_true", help="skip the S3 Object Lock checks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        policy, state_dir = recording_policy_of(args.policy)
        if args.store is None and policy is None:
            print("gatehouse verify: name a STORE or a --policy whose [recording] store to verify", file=sys.stderr)
            return 2
        url = args.store if args.store is not None else policy.store  # type: ignore[union-attr]
        trusted, trust_desc = trusted_keys_for(args.public_key, policy, state_dir)
        store = open_recording_store(url, policy, endpoint_url=args.s3_endpoint_url)
        print(f"Verifying {store.url}")
        if trusted is None:
            print(
                "Trusted keys: none given (--public-key or the policy's public_keys); using the keys published "
                "in the store. This proves the store is consistent, not that the gateway wrote it."
            )
        result = verify_store(
            store,
            trusted_keys=trusted,
            trust="store" if trusted is None else "file",
            check_retention=False if args.no_retention else None,
        )
    except (PolicyError, RecordError, StoreError) as e:
        print(f"gatehouse verify: {e}", file=sys.stderr)
        return 2
    if trusted is not None:
        print(f"Trusted keys: {', '.join(result.trusted_key_ids)} ({trust_desc})")
    elif result.trusted_key_ids:
        print(f"Keys published in the store: {', '.join(result.trusted_key_ids)}")
    for p in result.problems:
        print(f"FAIL {p}")
    for n in result.notes:
        print(f"note: {n}")
    print(f"Checked: {result.summary()}")
    if result.ok:
        print("OK: every check passed" + (" (consistency only: no trusted key given)" if trusted is None else ""))
        return 0
    print(f"FAILED: {len(result.problems)} problem(s)")
    return 1
