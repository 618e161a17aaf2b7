"""Fingerprints of masked secrets: ``[MASKED:<rule-id>:<fingerprint>]`` names a secret by a
keyed HMAC of it, so that the same secret always gives the same replacement (prompt caching
depends on it, and auditors can tell secrets apart) and nobody without the gateway's key can
test a guess against it. This module owns the key: from the environment variable the policy
names (all replicas agree), or generated once into the state directory.
"""

from __future__ import annotations

import hmac
import os
import secrets as _secrets
from pathlib import Path

from gatehouse.common.statefiles import check_private, load_or_create
from gatehouse.masking.config import MaskingPolicy

FINGERPRINT_CHARS = 6
FINGERPRINT_KEY_FILE = "fingerprint.key"
MIN_FINGERPRINT_SECRET_CHARS = 16


class FingerprintKeyError(Exception):
    """The fingerprint secret the policy names is missing or unusable."""


def fingerprint_key_for(policy: MaskingPolicy, state_dir: Path) -> bytes:
    """The key of the masking fingerprints.

    From the environment variable the policy names (`fingerprint_secret_env`), so that all
    replicas agree; otherwise generated on first run into ``<state_dir>/fingerprint.key``
    (mode 0600), the single-node default.
    """
    env = policy.fingerprint_secret_env
    if env:
        value = os.environ.get(env)
        if not value:
            raise FingerprintKeyError(
                f"masking.fingerprint_secret_env names {env}, which is not set: "
                f"set it to the same random value (at least {MIN_FINGERPRINT_SECRET_CHARS} characters) on every replica"
            )
        if len(value) < MIN_FINGERPRINT_SECRET_CHARS:
            raise FingerprintKeyError(
                f"{env} is too short: use at least {MIN_FINGERPRINT_SECRET_CHARS} random characters"
            )
        return value.encode("utf-8")
    path = Path(state_dir) / FINGERPRINT_KEY_FILE
    key = load_or_create(path, lambda: _secrets.token_bytes(32))
    check_private(path)
    if len(key) < 16:
        raise FingerprintKeyError(
            f"{path}: fingerprint key too short ({len(key)} bytes); delete it to generate a new one"
        )
    return key


def fingerprint(key: bytes, secret: str) -> str:
    """The fingerprint of `secret` under `key`."""
    return hmac.digest(key, secret.encode("utf-8", "surrogatepass"), "sha256").hex()[:FINGERPRINT_CHARS]


def mask_token(rule_id: str, fp: str) -> str:
    """What replaces a secret: ``[MASKED:<rule-id>:<fingerprint>]``."""
    return f"[MASKED:{rule_id}:{fp}]"
