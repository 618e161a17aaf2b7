"""`gatehouse verify STORE`: check every signature, chain link, checkpoint and blob of a store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gatehouse.policy.loader import load_policy
from gatehouse.policy.reader import PolicyError
from gatehouse.recording.canonical import RecordError
from gatehouse.recording.config import RecordingPolicy
from gatehouse.recording.signing import STATE_KEY_FILE, load_signing_key
from gatehouse.recording.stores import StoreError, open_store
from gatehouse.recording.verify import load_trusted_keys, verify_store


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
    p.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a trusted public key (PEM); may be repeated",
    )
    p.add_argument("--s3-endpoint-url", help="S3 endpoint (default: the policy's, else AWS_ENDPOINT_URL_S3)")
    p.add_argument("--no-retention", action="store_true", help="skip the S3 Object Lock checks")
    p.set_defaults(func=run)


def recording_policy_of(path: Path) -> tuple[RecordingPolicy, Path]:
    """The [recording] section of a policy file and its state dir, validated as the gateway does."""
    policy = load_policy(path)
    assert policy.recording is not None
    return policy.recording, policy.gateway.state_dir


def trusted_keys_for(
    args: argparse.Namespace, policy: RecordingPolicy | None, state_dir: Path | None = None
) -> tuple[dict | None, str]:
    """(keys, description); keys None means: fall back to the keys published in the store."""
    if args.public_key:
        keys = load_trusted_keys(args.public_key)
        return keys, f"{len(keys)} from --public-key"
    if policy is not None and policy.public_keys:
        keys = load_trusted_keys(policy.public_keys)
        return keys, f"{len(keys)} from the policy's [recording] public_keys"
    if policy is not None and (policy.signing_key_file or policy.signing_key_env):
        key = load_signing_key(key_file=policy.signing_key_file, key_env=policy.signing_key_env)
        return {key.key_id: key.public_key}, f"the policy's signing key ({key.source})"
    if policy is not None and state_dir is not None and (state_dir / STATE_KEY_FILE).is_file():
        # The single-node default: the key the gateway generated in its state dir (never created here).
        key = load_signing_key(state_dir=state_dir)
        return {key.key_id: key.public_key}, f"the gateway's generated signing key ({key.source})"
    return None, "none given"


def run(args: argparse.Namespace) -> int:
    policy, state_dir = None, None
    try:
        if args.policy is not None:
            policy, state_dir = recording_policy_of(args.policy)
        if args.store is None and policy is None:
            print("gatehouse verify: name a STORE or a --policy whose [recording] store to verify", file=sys.stderr)
            return 2
        url = args.store if args.store is not None else policy.store  # type: ignore[union-attr]
        endpoint = args.s3_endpoint_url or (policy.s3_endpoint_url if policy else None)
        trusted, trust_desc = trusted_keys_for(args, policy, state_dir)
        store = open_store(url, endpoint_url=endpoint if str(url).startswith("s3://") else None)
        if not str(url).startswith("s3://") and not Path(store.url).is_dir():
            print(f"gatehouse verify: {url}: no such directory", file=sys.stderr)
            return 2
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
