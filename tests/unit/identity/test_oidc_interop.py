"""Interop with a real OpenID Provider (npm `oidc-provider`): discovery, JWKS, client-credentials tokens.

Skipped when node or the package is missing, unless CI is set: then it fails, so that a CI run
never passes without having talked to a real provider.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gatehouse.identity.config import parse_issuers
from gatehouse.identity.errors import TokenError
from gatehouse.identity.verifier import TokenVerifier
from gatehouse.policy.reader import Section
from support.oidc_provider import OidcProvider, missing_reason

RESOURCE = "https://gatehouse.test/api"


@pytest.fixture(scope="module")
def op() -> Iterator[OidcProvider]:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the OpenID Provider cannot run: {reason}", pytrace=False)
        pytest.skip(f"oidc-provider unavailable: {reason}")
    with OidcProvider(resource=RESOURCE, groups=["ci-bots", "deployers"]) as provider:
        yield provider


def verifier(op: OidcProvider, **kw: object) -> TokenVerifier:
    table = {"name": "op", "issuer": op.issuer, "audience": RESOURCE, **kw}
    return TokenVerifier(parse_issuers([Section(table, "policy.toml", "issuers[0]")]))


def claims(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def test_token_from_client_credentials_verifies_through_discovery(op: OidcProvider) -> None:
    v = verifier(op, static_groups=["ci"])
    assert v.prefetch() == []
    token = op.client_credentials_token()
    ident = v.verify(token, allow_fetch=False)  # keys came from discovery -> jwks_uri at prefetch
    c = claims(token)
    assert c["aud"] == RESOURCE and c["iss"] == op.issuer
    assert ident.issuer == op.issuer and ident.subject == c["sub"] == op.client_id
    assert ident.groups == ("ci-bots", "deployers", "ci")
    assert ident.token_id == c["jti"]
    (status,) = v.key_status()
    assert status["source"] == "discovery" and status["keys"] == 1


def test_token_for_another_resource_is_wrong_audience(op: OidcProvider) -> None:
    with pytest.raises(TokenError) as info:
        verifier(op).verify(op.client_credentials_token(resource="https://other.test/api"))
    assert info.value.check == "audience"


def test_token_it_did_not_sign_fails(op: OidcProvider) -> None:
    v = verifier(op)
    genuine = op.client_credentials_token()
    v.verify(genuine)
    impostor_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        claims(genuine) | {"sub": "admin"}, impostor_key, algorithm="RS256", headers={"kid": op.kid, "typ": "at+jwt"}
    )
    with pytest.raises(TokenError) as info:
        v.verify(forged)
    assert info.value.check == "signature"
    assert forged not in info.value.message
    unknown = jwt.encode(claims(genuine), impostor_key, algorithm="RS256", headers={"kid": "not-the-op"})
    with pytest.raises(TokenError) as info:
        v.verify(unknown)
    assert info.value.check == "unknown_key"


def test_required_claims_against_provider_claims(op: OidcProvider) -> None:
    token = op.client_credentials_token()
    assert verifier(op, required_claims={"client_id": op.client_id}).verify(token).subject == op.client_id
    with pytest.raises(TokenError) as info:
        verifier(op, required_claims={"client_id": "someone-else"}).verify(token)
    assert info.value.check == "claims"


# -- through a real mitmdump ---------------------------------------------------------------------


@pytest.mark.e2e
def test_provider_tokens_pass_the_gateway_and_forgeries_do_not(op: OidcProvider, gateway_factory, upstream) -> None:
    import anthropic

    from support.harness import sdk_client

    gw = gateway_factory(
        f'[[issuers]]\nname = "op"\nissuer = "{op.issuer}"\naudience = "{RESOURCE}"\n'
        f'static_groups = ["ci"]\n\n[groups.ci]\nmodels = ["claude-*"]\n'
    )
    genuine = op.client_credentials_token()
    msg = sdk_client(gw, token=genuine).messages.create(
        model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content
    impostor_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        claims(genuine) | {"sub": "admin"}, impostor_key, algorithm="RS256", headers={"kid": op.kid, "typ": "at+jwt"}
    )
    with pytest.raises(anthropic.AuthenticationError) as e:
        sdk_client(gw, token=forged).messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert "signature" in e.value.response.json()["error"]["message"]
    assert len(upstream.requests.messages()) == 1
    gw.stop()
    assert genuine not in gw.log() and forged not in gw.log()
