"""Token verification (gatehouse.identity.verifier): the happy paths, the attack suite, the
verified-token cache, and the CI policy examples.

Keys are served by a real HTTP server on 127.0.0.1 (discovery document + JWKS, see conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.identity.config import parse_issuers
from gatehouse.identity.errors import TokenError
from gatehouse.identity.jws import MAX_TOKEN_BYTES, looks_like_jwt
from gatehouse.identity.proxyauth import parse_proxy_authorization
from gatehouse.identity.verifier import TokenConfigError, TokenVerifier
from gatehouse.policy.reader import Section
from support.idp_server import IdP, jwk_of, jwks_of
from support.tokens import (
    AUD,
    EC_A,
    ED_A,
    RSA_A,
    RSA_EVIL,
    Clock,
    b64,
    claims_for,
    forge,
    issuer_cfg,
    refused,
    sign,
    verifier_for,
)

HMAC_ISSUER = "https://login.example.com"


def test_hmac_secret_from_environment() -> None:
    cfg = issuer_cfg(HMAC_ISSUER, audience="gatehouse", algorithms=["HS256"], hmac_secret_env="GH_SECRET")
    with pytest.raises(TokenConfigError, match="GH_SECRET"):
        TokenVerifier([cfg], environ={})
    with pytest.raises(TokenConfigError, match="at least 32"):
        TokenVerifier([cfg], environ={"GH_SECRET": "short"})
    secret = "s" * 32
    v = TokenVerifier([cfg], environ={"GH_SECRET": secret})
    ident = v.verify(sign(claims_for(HMAC_ISSUER, aud="gatehouse"), secret, kid=None, alg="HS256"))
    assert ident.subject == "alice"


# -- happy paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key, kid, alg", [(RSA_A, "a", "RS256"), (EC_A, "ec", "ES256"), (ED_A, "ed", "EdDSA")])
def test_verifies_through_discovery(idp: IdP, key: Any, kid: str, alg: str) -> None:
    v = verifier_for(idp)
    ident = v.verify(sign(claims_for(idp.issuer, jti="tok-1"), key, kid, alg))
    assert (ident.issuer, ident.issuer_name, ident.subject) == (idp.issuer, "corp", "alice")
    assert ident.email == "alice@example.com" and ident.groups == ("developers",)
    assert ident.token_id == "tok-1"
    assert idp.hits[:2] == ["/.well-known/openid-configuration", "/jwks"]


def test_token_id_is_hash_without_jti(idp: IdP) -> None:
    token = sign(claims_for(idp.issuer))
    ident = verifier_for(idp).verify(token)
    assert ident.token_id == "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    assert ident.expires_at is not None


def test_user_claim(idp: IdP) -> None:
    v = verifier_for(idp, user_claim="email")
    token = sign(claims_for(idp.issuer))
    assert v.verify(token, user="alice@example.com").subject == "alice"
    assert v.verify(token).subject == "alice"  # in-request tokens carry no user name
    err = refused(v, token, user="bob@example.com")
    assert err.check == "user" and "'email'" in err.message
    # Without user_claim the user part is ignored.
    assert verifier_for(idp).verify(token, user="whatever").subject == "alice"


def test_several_entries_for_one_issuer(idp: IdP) -> None:
    cfgs = parse_issuers(
        [
            Section(
                {
                    "name": "gha-infra",
                    "issuer": idp.issuer,
                    "audience": AUD,
                    "required_claims": {"repository": "acme/infra"},
                    "static_groups": ["ci-infra"],
                },
                "p",
                "issuers[0]",
            ),
            Section(
                {
                    "name": "gha-web",
                    "issuer": idp.issuer,
                    "audience": AUD,
                    "required_claims": {"repository": "acme/web"},
                    "static_groups": ["ci-web"],
                },
                "p",
                "issuers[1]",
            ),
        ]
    )
    v = TokenVerifier(cfgs)
    assert v.verify(sign(claims_for(idp.issuer, repository="acme/web"))).groups == ("developers", "ci-web")
    assert v.verify(sign(claims_for(idp.issuer, repository="acme/infra"))).issuer_name == "gha-infra"
    err = refused(v, sign(claims_for(idp.issuer, repository="acme/other")))
    assert err.check == "claims"
    assert idp.jwks_fetches == 1  # one key cache for the shared source


# -- the attack suite ------------------------------------------------------------------------------


def test_attack_alg_none(idp: IdP) -> None:
    v = verifier_for(idp)
    for alg in ("none", "None", "NONE"):
        token = forge({"alg": alg, "kid": "a"}, claims_for(idp.issuer))
        err = refused(v, token)
        assert err.check == "algorithm" and "never accepted" in err.message
    assert idp.hits == []  # refused before any key was looked up


def test_attack_hs256_with_rsa_public_key_as_secret(idp: IdP) -> None:
    pem = RSA_A.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": "a", "typ": "JWT"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_for(idp.issuer)).encode())}"
    token = signing_input + "." + b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    err = refused(verifier_for(idp), token)
    assert err.check == "algorithm" and "HS256" in err.message and "RS256" in err.message
    # Even an issuer that allows HS256 only ever uses its configured secret, never a JWKS key.
    cfg = issuer_cfg(idp.issuer, algorithms=["RS256", "HS256"], hmac_secret_env="SECRET")
    v = TokenVerifier([cfg], environ={"SECRET": "x" * 40})
    assert refused(v, token).check == "signature"
    # And the JWK form of the public key as the secret fails the same way.
    n_secret = json.dumps(jwk_of(RSA_A, "a")).encode()
    token2 = signing_input + "." + b64(hmac.new(n_secret, signing_input.encode(), hashlib.sha256).digest())
    assert refused(v, token2).check == "signature"


def test_attack_expired(idp: IdP) -> None:
    clock = Clock()
    v = verifier_for(idp, clock)
    exp = int(clock.now) - 3600
    err = refused(v, sign(claims_for(idp.issuer, iat=exp - 600, exp=exp)))
    assert err.check == "expired"
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp)) in err.message
    assert "60 min ago" in err.message and "gatehouse token" in err.message


def test_leeway(idp: IdP) -> None:
    clock = Clock()
    v = verifier_for(idp, clock, leeway_seconds=30)
    assert v.verify(sign(claims_for(idp.issuer, exp=int(clock.now) - 20))).subject == "alice"
    assert refused(v, sign(claims_for(idp.issuer, exp=int(clock.now) - 40))).check == "expired"
    assert v.verify(sign(claims_for(idp.issuer, nbf=int(clock.now) + 20))).subject == "alice"


def test_attack_nbf_in_future(idp: IdP) -> None:
    clock = Clock()
    err = refused(verifier_for(idp, clock), sign(claims_for(idp.issuer, nbf=int(clock.now) + 3600)))
    assert err.check == "not_yet_valid" and "nbf" in err.message and "clock" in err.message


def test_attack_iat_in_future(idp: IdP) -> None:
    clock = Clock()
    err = refused(verifier_for(idp, clock), sign(claims_for(idp.issuer, iat=int(clock.now) + 3600)))
    assert err.check == "issued_in_future"


def test_attack_no_exp(idp: IdP) -> None:
    err = refused(verifier_for(idp), sign(claims_for(idp.issuer, exp=None)))
    assert err.check == "claims" and "no expiry" in err.message
    err = refused(verifier_for(idp), sign(claims_for(idp.issuer, exp="tomorrow")))
    assert err.check == "claims"


def test_attack_wrong_issuer(idp: IdP) -> None:
    v = verifier_for(idp)
    err = refused(v, sign(claims_for("https://evil.example.com")))
    # The trusted issuers are named; the token's own (unverified) issuer is never echoed.
    assert err.check == "issuer" and "evil.example" not in err.message and idp.issuer in err.message
    no_iss = claims_for(idp.issuer)
    del no_iss["iss"]
    err = refused(v, sign(no_iss))
    assert err.check == "issuer" and "no issuer" in err.message
    # The iss of a trusted issuer with a trailing slash is another issuer.
    assert refused(v, sign(claims_for(idp.issuer + "/"))).check == "issuer"


def test_attack_wrong_audience(idp: IdP) -> None:
    v = verifier_for(idp)
    err = refused(v, sign(claims_for(idp.issuer, aud="https://other-api.example")))
    assert err.check == "audience" and AUD in err.message
    assert refused(v, sign(claims_for(idp.issuer, aud=None))).check == "audience"
    assert refused(v, sign(claims_for(idp.issuer, aud=["x", "y"]))).check == "audience"
    assert v.verify(sign(claims_for(idp.issuer, aud=["x", AUD]))).subject == "alice"


def test_attack_payload_altered_after_signing(idp: IdP) -> None:
    token = sign(claims_for(idp.issuer, groups=["developers"]))
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = ["admins"]
    altered = f"{head}.{b64(json.dumps(claims).encode())}.{sig}"
    err = refused(verifier_for(idp), altered)
    assert err.check == "signature" and "altered" in err.message


def test_attack_untrusted_key_reusing_trusted_kid(idp: IdP) -> None:
    v = verifier_for(idp)
    err = refused(v, sign(claims_for(idp.issuer), RSA_EVIL, kid="a"))
    assert err.check == "signature"
    # An EC key under an RSA key's kid, and RS256 under the EC key's kid: wrong key type.
    assert refused(v, sign(claims_for(idp.issuer), EC_A, kid="a", alg="ES256")).check == "signature"
    assert refused(v, sign(claims_for(idp.issuer), RSA_A, kid="ec")).check == "signature"
    assert idp.jwks_fetches == 1  # a known kid never triggers a refetch


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "....",
        "é.é.é",
        "eyJ.eyJ.sig",
        "Bearer x.y.z",
        forge({"alg": "RS256"}, {"iss": "x"}) + "=",  # padding is not base64url
        b64(b"[1,2]") + "." + b64(b"{}") + ".sig",  # header not an object
        b64(b'{"alg":"RS256"}') + "." + b64(b"not json") + ".c2ln",
        b64(b'{"alg":"RS256"}') + "." + b64(b"[" * 5000 + b"]" * 5000) + ".c2ln",  # deep nesting
        b64(b'{"typ":"JWT"}') + "." + b64(b"{}") + ".c2ln",  # no alg
        b64(b'{"alg":"RS256","crit":["exp"]}') + "." + b64(b"{}") + ".c2ln",
        b64(b'{"alg":"RS256","b64":false}') + "." + b64(b"{}") + ".c2ln",
        "a.b.c.d.e",  # a JWE
    ],
)
def test_attack_garbage(idp: IdP, garbage: str) -> None:
    err = refused(verifier_for(idp), garbage)
    assert err.check == "malformed"
    assert idp.hits == []


def test_attack_one_megabyte_token(idp: IdP) -> None:
    big = "eyJ" + "A" * (1024 * 1024)
    v = verifier_for(idp)
    t0 = time.perf_counter()
    err = refused(v, big)
    assert time.perf_counter() - t0 < 0.01
    assert err.check == "too_large" and str(MAX_TOKEN_BYTES) in err.message
    assert not looks_like_jwt(big)
    with pytest.raises(TokenError) as info:
        parse_proxy_authorization("Basic " + "A" * (1024 * 1024))
    assert info.value.check == "too_large"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=300), st.from_regex(r"[A-Za-z0-9_\-]{0,40}\.[A-Za-z0-9_\-]{0,40}\.[A-Za-z0-9_\-]{0,40}"))
)
def test_fuzz_only_token_errors(value: str) -> None:
    v = TokenVerifier(
        [issuer_cfg("https://idp.example.com", jwks_uri="https://idp.example.com/jwks")],
        fetch=lambda url: b'{"keys": []}',
    )
    with pytest.raises(TokenError):
        v.verify(value)


# -- the verified-token cache ----------------------------------------------------------------------


def test_result_cache_rechecks_expiry(idp: IdP) -> None:
    clock = Clock()
    v = verifier_for(idp, clock)
    token = sign(claims_for(idp.issuer, exp=int(clock.now) + 100))
    first = v.verify(token)
    assert v.verify(token) is first  # cached: no new signature check
    clock.advance(200)
    assert refused(v, token).check == "expired"
    assert v.check_expiry is not None
    with pytest.raises(TokenError) as info:
        v.check_expiry(first)
    assert info.value.check == "expired"


def test_result_cache_is_bounded(idp: IdP) -> None:
    v = TokenVerifier([issuer_cfg(idp.issuer)], cache_size=1)
    first, second = sign(claims_for(idp.issuer)), sign(claims_for(idp.issuer, sub="bob"))
    ident = v.verify(first)
    assert v.verify(first) is ident
    v.verify(second)  # takes the only place
    assert v.verify(first) is not ident and v.verify(first) == ident
    uncached = TokenVerifier([issuer_cfg(idp.issuer)], cache_size=0)
    assert uncached.verify(first) is not uncached.verify(first)


def test_concurrent_verification(idp: IdP) -> None:
    v = verifier_for(idp)
    tokens = [sign(claims_for(idp.issuer, sub=f"u{i}")) for i in range(20)]
    results: list[str] = []

    def work(t: str) -> None:
        results.append(v.verify(t).subject)

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"u{i}" for i in range(20))
    assert idp.jwks_fetches == 1


# -- the CI policy examples ------------------------------------------------------------------------


EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"


def fake_idp(issuer: str, key: Any = RSA_A, kid: str = "gh") -> Any:
    docs = {
        issuer + "/.well-known/openid-configuration": {"issuer": issuer, "jwks_uri": issuer + "/jwks"},
        issuer + "/jwks": jwks_of((key, kid)),
    }
    return lambda url: json.dumps(docs[url]).encode()


def test_github_actions_example() -> None:
    from gatehouse.policy.loader import load_policy

    policy = load_policy(EXAMPLES / "github-actions.toml")
    gh = "https://token.actions.githubusercontent.com"
    v = TokenVerifier(policy.issuers, fetch=fake_idp(gh))
    base = {
        "iss": gh,
        "aud": "https://gatehouse.acme.example",
        "iat": int(time.time()),
        "exp": int(time.time()) + 300,
        "repository_owner": "acme",
        "repository_owner_id": "1234567",
        "runner_environment": "github-hosted",
        "workflow_ref": "acme/infra/.github/workflows/review.yml@refs/heads/main",
        "jti": "x",
    }
    main = base | {"sub": "repo:acme/infra:ref:refs/heads/main", "repository": "acme/infra", "ref": "refs/heads/main"}
    ident = v.verify(sign(main, kid="gh"))
    assert (ident.issuer_name, ident.groups) == ("github-acme-infra-main", ("ci-release",))
    assert ident.name == "acme/infra/.github/workflows/review.yml@refs/heads/main"
    branch = main | {"sub": "repo:acme/infra:ref:refs/heads/feature", "ref": "refs/heads/feature"}
    assert v.verify(sign(branch, kid="gh")).groups == ("ci",)
    other_org = branch | {"repository_owner": "evil", "repository_owner_id": "666"}
    err = refused(v, sign(other_org, kid="gh"))
    assert err.check == "claims" and "repository_owner_id" in err.message
    assert refused(v, sign(main | {"aud": "https://github.com/acme"}, kid="gh")).check == "audience"


def test_gitlab_ci_example() -> None:
    from gatehouse.policy.loader import load_policy

    policy = load_policy(EXAMPLES / "gitlab-ci.toml")
    gl = "https://gitlab.com"
    v = TokenVerifier(policy.issuers, fetch=fake_idp(gl, kid="gl"))
    claims = {
        "iss": gl,
        "aud": "https://gatehouse.acme.example",
        "iat": int(time.time()),
        "exp": int(time.time()) + 3600,
        "sub": "project_path:acme/platform/infra:ref_type:branch:ref:main",
        "namespace_path": "acme/platform",
        "project_id": "23456789",
        "project_path": "acme/platform/infra",
        "ref": "main",
        "ref_type": "branch",
        "ref_protected": "true",
        "user_email": "dev@acme.example",
    }
    ident = v.verify(sign(claims, kid="gl"))
    assert (ident.issuer_name, ident.groups, ident.email) == (
        "gitlab-infra-protected",
        ("ci-deploy",),
        "dev@acme.example",
    )
    assert v.verify(sign(claims | {"ref_protected": "false"}, kid="gl")).groups == ("ci",)
    err = refused(v, sign(claims | {"ref_protected": "false", "namespace_path": "evil"}, kid="gl"))
    assert err.check == "claims"
