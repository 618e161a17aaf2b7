"""Signed test tokens: a fixed RSA key, claims for an issuer, and signing with any key or header."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims_for(iss: str, now: float | None = None, **over: Any) -> dict[str, Any]:
    now = time.time() if now is None else now
    c = {"iss": iss, "aud": AUD, "sub": "alice", "iat": int(now), "exp": int(now) + 600,
         "email": "alice@example.com", "groups": ["developers"]}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(claims: dict[str, Any], key: Any = RSA_A, kid: str | None = "a", alg: str = "RS256",
         headers: dict[str, Any] | None = None) -> str:
    h = dict(headers or {})
    if kid is not None:
        h["kid"] = kid
    return jwt.encode(claims, key, algorithm=alg, headers=h)



AUD = "https://gatehouse.example/api"

