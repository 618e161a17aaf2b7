"""Signed test tokens and the verifier around them: fixed keys, claims for an issuer, signing with
any key or header, forged tokens, a settable clock, and issuer entries parsed as the policy does."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gatehouse.identity.config import IssuerConfig, parse_issuers
from gatehouse.identity.errors import TokenError
from gatehouse.identity.verifier import TokenVerifier
from gatehouse.policy.reader import Section
from support.idp_server import IdP

AUD = "https://gatehouse.example/api"

RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_EVIL = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_A = ec.generate_private_key(ec.SECP256R1())
ED_A = ed25519.Ed25519PrivateKey.generate()


def claims_for(iss: str, now: float | None = None, **over: Any) -> dict[str, Any]:
    now = time.time() if now is None else now
    c = {
        "iss": iss,
        "aud": AUD,
        "sub": "alice",
        "iat": int(now),
        "exp": int(now) + 600,
        "email": "alice@example.com",
        "groups": ["developers"],
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(
    claims: dict[str, Any],
    key: Any = RSA_A,
    kid: str | None = "a",
    alg: str = "RS256",
    headers: dict[str, Any] | None = None,
) -> str:
    h = dict(headers or {})
    if kid is not None:
        h["kid"] = kid
    return jwt.encode(claims, key, algorithm=alg, headers=h)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A token with any header and claims, and a signature of our choosing (none by default)."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


class Clock:
    """A clock a test sets (`now`) or moves on (`advance`)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def issuer_cfg(iss: str, **kw: Any) -> IssuerConfig:
    """One ``[[issuers]]`` entry named corp for `iss` and `AUD`, with the keys of `kw` added."""
    table: dict[str, Any] = {"name": "corp", "issuer": iss, "audience": AUD}
    table.update(kw)
    return parse_issuers([Section(table, "policy.toml", "issuers[0]", Path("/tmp"))])[0]


def verifier_for(idp: IdP, clock: Clock | None = None, **kw: Any) -> TokenVerifier:
    """A verifier trusting `idp` (one `issuer_cfg` entry), on `clock`."""
    return TokenVerifier([issuer_cfg(idp.issuer, **kw)], clock=clock or Clock())


def refused(v: TokenVerifier, token: str, **kw: Any) -> TokenError:
    """The TokenError `v.verify(token)` raises, after checking that its message does not quote the token."""
    with pytest.raises(TokenError) as info:
        v.verify(token, **kw)
    err = info.value
    assert_no_token(str(err), token)
    return err


def assert_no_token(text: str, token: str) -> None:
    """Neither the token nor any of its parts (longer than a kid) appears in text."""
    assert token not in text
    for part in token.split("."):
        if len(part) > 24:
            assert part not in text
            assert part[:24] not in text
