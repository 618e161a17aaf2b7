"""Key rotation and an IdP outage, through a real mitmdump: verification follows the JWKS."""

from __future__ import annotations

import time

import anthropic
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from support.harness import sdk_client
from support.idp_server import IdP, jwks_of

pytestmark = pytest.mark.e2e
AUDIENCE = "gatehouse-rotation"
OLD = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NEW = rsa.generate_private_key(public_exponent=65537, key_size=2048)
# The verifier refetches keys for an unknown kid at most once per 30 s (DESIGN: rate-limited).
REFETCH_GAP = 31


def token(idp: IdP, key, kid: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {"iss": idp.issuer, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600},
        key,
        algorithm="RS256",
        headers={"kid": kid},
    )


def call(gw, tok: str):
    return sdk_client(gw, token=tok).messages.create(
        model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )


def test_rotation_then_outage(gateway_factory, upstream):
    idp = IdP(jwks_of((OLD, "old")))
    try:
        gw = gateway_factory(f'[[issuers]]\nname = "corp"\nissuer = "{idp.issuer}"\naudience = "{AUDIENCE}"\n')
        assert call(gw, token(idp, OLD, "old")).content
        # The IdP rotates: a token signed by the new key names a kid the gateway has not seen.
        idp.jwks = jwks_of((OLD, "old"), (NEW, "new"))
        time.sleep(REFETCH_GAP)
        fetches = idp.jwks_fetches
        assert call(gw, token(idp, NEW, "new")).content
        assert idp.jwks_fetches == fetches + 1  # exactly one refetch
        # The IdP goes down: tokens signed by cached keys keep working.
        idp.down()
        assert call(gw, token(idp, NEW, "new")).content
        assert call(gw, token(idp, OLD, "old")).content
        # A key nobody published is still refused.
        rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with pytest.raises(anthropic.AuthenticationError):
            call(gw, token(idp, rogue, "new"))
    finally:
        idp.down()
