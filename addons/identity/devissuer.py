"""The local development issuer: Ed25519-signed tokens so the quick start works offline.

The private key is created on first use in the state directory (mode 0600, via
`statefiles.load_or_create`); its public half is written as a JWKS file where the policy's
dev issuer (``jwks_file``) looks for it. Anyone who can read the private key can mint tokens
for any user and group, so this issuer belongs in development policies only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatehouse.common import statefiles
from gatehouse.common.durable import replace_durable

#: The `iss` and `aud` of dev tokens when the policy does not say otherwise.
DEV_ISSUER = "gatehouse-dev"
DEV_AUDIENCE = "gatehouse"
DEV_ALGORITHM = "EdDSA"
KEY_FILENAME = "dev-issuer-ed25519.pem"
JWKS_FILENAME = "dev-issuer.jwks.json"
DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 30 * 86400


def key_path(state_dir: Path) -> Path:
    return Path(state_dir) / KEY_FILENAME


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _generate_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_or_create_key(state_dir: Path) -> Ed25519PrivateKey:
    """The dev issuer's signing key, created (mode 0600) on first use."""
    path = key_path(state_dir)
    pem = statefiles.load_or_create(path, _generate_pem)
    statefiles.check_private(path)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = _b64(raw)
    # RFC 7638 thumbprint: a stable kid derived from the key itself.
    thumb = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    kid = _b64(hashlib.sha256(thumb.encode()).digest())[:16]
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": DEV_ALGORITHM, "use": "sig"}


def public_jwks(key: Ed25519PrivateKey) -> dict[str, Any]:
    return {"keys": [public_jwk(key)]}


def ensure_dev_issuer(state_dir: Path, jwks_path: Path) -> None:
    """Create the dev key pair if missing and (re)write its public JWKS at `jwks_path` when it differs."""
    key = load_or_create_key(Path(state_dir))
    data = (json.dumps(public_jwks(key), indent=2) + "\n").encode()
    jwks_path = Path(jwks_path)
    try:
        if jwks_path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    jwks_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A public key: readable by the gateway whoever runs it.
    replace_durable(jwks_path, data, mode=0o644)


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d`` -> seconds."""
    m = _DURATION.match(text.lower())
    if not m:
        raise ValueError(f"not a duration: {text!r} (examples: 30m, 1h, 8h, 2d)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def mint_token(
    state_dir: Path,
    *,
    subject: str,
    groups: Iterable[str] = (),
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    email: str | None = None,
    name: str | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """A dev token signed with the state directory's key (created if missing)."""
    if not subject or not subject.strip():
        raise ValueError("the subject must not be empty")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"the lifetime must be between 1 s and {MAX_TTL_SECONDS // 86400} days")
    key = load_or_create_key(Path(state_dir))
    now = int(clock())
    header = {"alg": DEV_ALGORITHM, "typ": "JWT", "kid": public_jwk(key)["kid"]}
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject.strip(),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": secrets.token_hex(12),
        "groups": list(dict.fromkeys(g.strip() for g in groups if g.strip())),
    }
    if email:
        claims["email"] = email
    if name:
        claims["name"] = name
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(claims, separators=(",", ":")).encode())
    )
    return signing_input + "." + _b64(key.sign(signing_input.encode("ascii")))
