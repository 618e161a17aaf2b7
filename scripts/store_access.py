"""How `gatehouse verify`, `report` and `prune` get at a recording store, all in one way.

The three commands take a store (a directory or ``s3://bucket/prefix``), a policy whose
``[recording]`` section may name its S3 endpoint, Object Lock mode and keys, and trusted public
keys. This module owns the arguments they share, the order in which a trusted key is chosen
(--public-key, the policy's public keys, its signing key, the gateway's generated key) and
opening the store, so that what one command verifies is what the others read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gatehouse.policy.loader import load_policy
from gatehouse.recording.config import RecordingPolicy
from gatehouse.recording.signing import STATE_KEY_FILE, load_signing_key
from gatehouse.recording.stores import LocalStore, S3Store, StoreError, open_store
from gatehouse.recording.verify import load_trusted_keys


def add_store_arguments(p: argparse.ArgumentParser, *, public_key_help: str) -> None:
    """--public-key (repeated) and --s3-endpoint-url."""
    p.add_argument("--public-key", type=Path, action="append", default=[], metavar="FILE", help=public_key_help)
    p.add_argument("--s3-endpoint-url", help="S3 endpoint (default: the policy's, else AWS_ENDPOINT_URL_S3)")


def recording_policy_of(path: Path | None) -> tuple[RecordingPolicy | None, Path | None]:
    """The [recording] section of a policy file and its state dir, validated as the gateway
    does; (None, None) without a policy file."""
    if path is None:
        return None, None
    policy = load_policy(path)
    assert policy.recording is not None
    return policy.recording, policy.gateway.state_dir


def trusted_keys_for(
    public_keys: list[Path], policy: RecordingPolicy | None, state_dir: Path | None = None
) -> tuple[dict | None, str]:
    """(keys, description); keys None means: fall back to the keys published in the store."""
    if public_keys:
        keys = load_trusted_keys(public_keys)
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


def open_recording_store(
    url: str, policy: RecordingPolicy | None, *, endpoint_url: str | None, writes: bool = False
) -> LocalStore | S3Store:
    """The store at `url`: a directory, which must exist, or an S3 bucket at `endpoint_url`
    (else the policy's, else boto3's AWS_ENDPOINT_URL_S3). A command that `writes` opens the
    bucket with the policy's Object Lock mode and KMS key, so that what it adds is locked and
    encrypted as the gateway's own objects are."""
    if not url.startswith("s3://"):
        store = open_store(url)
        if not Path(store.url).is_dir():
            raise StoreError(f"{url}: no such directory")
        return store
    endpoint = endpoint_url or (policy.s3_endpoint_url if policy else None)
    if not writes:
        return open_store(url, endpoint_url=endpoint)
    return open_store(
        url,
        endpoint_url=endpoint,
        object_lock_mode=policy.object_lock_mode if policy else None,
        kms_key_id=policy.kms_key_id if policy else None,
    )
