"""Token verification (gatehouse.identity): issuer config, the attack suite, key rotation, outages.

Keys are served by a real HTTP server on 127.0.0.1 (discovery document + JWKS) so that fetching,
caching, refetching on an unknown kid and outages are exercised through urllib as in production.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from support.idp_server import IdP, jwk_of, jwks_of
from gatehouse.policy.reader import PolicyError, Section
from gatehouse.identity.tokens import (
    MAX_TOKEN_BYTES,
    FetchRequired,
    IssuerConfig,
    TokenConfigError,
    TokenError,
    TokenVerifier,
    claim_at,
    looks_like_jwt,
    parse_issuers,
    parse_proxy_authorization,
)
from support.tokens import AUD, RSA_A, claims_for, sign


# -- keys and tokens -------------------------------------------------------------------------

RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_EVIL = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_A = ec.generate_private_key(ec.SECP256R1())
ED_A = ed25519.Ed25519PrivateKey.generate()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()






def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds




@pytest.fixture
def idp() -> Iterator[IdP]:
    server = IdP(jwks_of((RSA_A, "a"), (EC_A, "ec"), (ED_A, "ed")))
    yield server
    server.down()


def issuer_cfg(iss: str, **kw: Any) -> IssuerConfig:
    table: dict[str, Any] = {"name": "corp", "issuer": iss, "audience": AUD}
    table.update(kw)
    return parse_issuers([Section(table, "policy.toml", "issuers[0]", Path("/tmp"))])[0]


def verifier_for(idp: IdP, clock: Clock | None = None, **kw: Any) -> TokenVerifier:
    return TokenVerifier([issuer_cfg(idp.issuer, **kw)], clock=clock or Clock())


def refused(v: TokenVerifier, token: str, **kw: Any) -> TokenError:
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


# -- configuration -----------------------------------------------------------------------------


def parse(*tables: dict[str, Any]) -> tuple[IssuerConfig, ...]:
    return parse_issuers([Section(t, "p.toml", f"issuers[{i}]", Path("/etc/gatehouse")) for i, t in enumerate(tables)])


BASE = {"name": "corp", "issuer": "https://login.example.com", "audience": "gatehouse"}


def test_config_defaults() -> None:
    (cfg,) = parse(BASE)
    assert cfg.algorithms == ("RS256", "ES256", "EdDSA")
    assert cfg.key_source == "discovery"
    assert cfg.discovery_url == "https://login.example.com/.well-known/openid-configuration"
    assert cfg.audience == ("gatehouse",)
    assert cfg.subject_claim == "sub" and cfg.groups_claim == "groups" and cfg.user_claim is None
    assert cfg.leeway_seconds == 30


def test_config_full() -> None:
    (cfg,) = parse({**BASE, "audience": ["a", "b"], "jwks_file": "keys/jwks.json", "algorithms": ["ES256"],
                    "required_claims": {"repository_owner": "acme", "ref": ["refs/heads/main", "refs/heads/prod"]},
                    "groups_claim": ["realm_access", "roles"], "static_groups": ["ci"], "user_claim": "email",
                    "leeway_seconds": 5, "jwks_cache_seconds": 600})
    assert cfg.jwks_file == Path("/etc/gatehouse/keys/jwks.json")
    assert cfg.key_source == "jwks_file"
    assert cfg.required_claims == (("repository_owner", "acme"), ("ref", ("refs/heads/main", "refs/heads/prod")))
    assert cfg.groups_claim == ("realm_access", "roles")


@pytest.mark.parametrize("table, key, words", [
    ({**BASE, "algorithms": ["none"]}, "issuers[0].algorithms[0]", "never"),
    ({**BASE, "algorithms": ["RS256", "NONE"]}, "issuers[0].algorithms[1]", "never"),
    ({**BASE, "algorithms": ["HS256"]}, "issuers[0].algorithms", "hmac_secret_env"),
    ({**BASE, "hmac_secret_env": "X"}, "issuers[0].hmac_secret_env", "no HMAC"),
    ({**BASE, "algorithms": ["RS1"]}, "issuers[0].algorithms[0]", "unsupported"),
    ({**BASE, "jwks_uri": "https://x/jwks", "jwks_file": "j.json"}, "issuers[0].jwks_file", "one key source"),
    ({**BASE, "jwks_uri": "http://idp.example.com/jwks"}, "issuers[0].jwks_uri", "https"),
    ({**BASE, "issuer": "corp-idp"}, "issuers[0].issuer", "jwks_uri or jwks_file"),
    ({**BASE, "algorithms": ["HS256"], "hmac_secret_env": "S", "jwks_file": "j.json"}, "issuers[0].jwks_file", "never be used"),
    ({**BASE, "audience": []}, "issuers[0].audience", "audience"),
    ({**BASE, "jwks_url": "https://x"}, "issuers[0].jwks_url", "unknown key"),
    ({**BASE, "name": "a b"}, "issuers[0].name", "letters"),
    ({**BASE, "required_claims": {"ref": {"x": 1}}}, "issuers[0].required_claims.ref", "expected"),
    ({**BASE, "leeway_seconds": -1}, "issuers[0].leeway_seconds", "at least"),
])
def test_config_errors(table: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse(table)
    assert info.value.key == key
    assert words in info.value.message
    assert str(info.value).startswith(f"p.toml: {key}: ")


def test_config_duplicate_names() -> None:
    with pytest.raises(PolicyError) as info:
        parse(BASE, {**BASE, "issuer": "https://other.example.com"})
    assert info.value.key == "issuers[1].name" and "duplicate" in info.value.message


def test_config_loopback_http_allowed() -> None:
    (cfg,) = parse({**BASE, "issuer": "http://127.0.0.1:9999"})
    assert cfg.key_source == "discovery"


def test_hmac_secret_from_environment() -> None:
    (cfg,) = parse({**BASE, "algorithms": ["HS256"], "hmac_secret_env": "GH_SECRET"})
    with pytest.raises(TokenConfigError, match="GH_SECRET"):
        TokenVerifier([cfg], environ={})
    with pytest.raises(TokenConfigError, match="at least 32"):
        TokenVerifier([cfg], environ={"GH_SECRET": "short"})
    secret = "s" * 32
    v = TokenVerifier([cfg], environ={"GH_SECRET": secret})
    ident = v.verify(sign(claims_for(BASE["issuer"], aud="gatehouse"), secret, kid=None, alg="HS256"))
    assert ident.subject == "alice"


# -- happy paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key, kid, alg", [(RSA_A, "a", "RS256"), (EC_A, "ec", "ES256"), (ED_A, "ed", "EdDSA")])
def test_verifies_through_discovery(idp: IdP, key: Any, kid: str, alg: str) -> None:
    v = verifier_for(idp)
    ident = v.verify(sign(claims_for(idp.issuer, jti="tok-1"), key, kid, alg))
    assert (ident.issuer, ident.issuer_name, ident.subject) == (idp.issuer, "corp", "alice")
    assert ident.email == "alice@example.com" and ident.groups == ("developers",)
    assert ident.token_id == "tok-1"
    assert idp.hits[:2] == ["/.well-known/openid-configuration", "/jwks"]


def test_explicit_jwks_uri_and_file(idp: IdP, tmp_path: Path) -> None:
    token = sign(claims_for(idp.issuer))
    assert TokenVerifier([issuer_cfg(idp.issuer, jwks_uri=idp.issuer + "/jwks")]).verify(token).subject == "alice"
    assert "/.well-known/openid-configuration" not in idp.hits
    f = tmp_path / "jwks.json"
    f.write_text(json.dumps(jwks_of((RSA_A, "a"))))
    assert TokenVerifier([issuer_cfg(idp.issuer, jwks_file=str(f))]).verify(token).subject == "alice"


def test_token_id_is_hash_without_jti(idp: IdP) -> None:
    token = sign(claims_for(idp.issuer))
    ident = verifier_for(idp).verify(token)
    assert ident.token_id == "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    assert ident.expires_at is not None


def test_claims_mapping(idp: IdP) -> None:
    claims = claims_for(idp.issuer, sub=None, groups=None, email=None, uid="u-42", mail="bob@example.com",
                        display="Bob", **{"https://example.com/groups": ["sre", "dev"],
                                          "https://example.com/claims": {"teams": ["payments"]},
                                          "realm_access": {"roles": ["admin"]}})
    token = sign(claims)
    for groups_claim, expected in [("https://example.com/groups", ("sre", "dev", "ci")),
                                   ("https://example.com/claims.teams", ("payments", "ci")),
                                   ("realm_access.roles", ("admin", "ci")),
                                   (["realm_access", "roles"], ("admin", "ci")),
                                   ("missing.path", ("ci",))]:
        v = verifier_for(idp, subject_claim="uid", email_claim="mail", name_claim="display",
                         groups_claim=groups_claim, static_groups=["ci"])
        ident = v.verify(token)
        assert (ident.subject, ident.email, ident.name) == ("u-42", "bob@example.com", "Bob")
        assert ident.groups == expected, groups_claim


def test_claim_at_paths() -> None:
    c = {"a.b": 1, "a": {"b": 2, "c.d": {"e": 3}}, "x": [1]}
    assert claim_at(c, "a.b") == 1
    assert claim_at(c, ("a", "b")) == 2
    assert claim_at(c, "a.c.d.e") == 3
    assert claim_at(c, "x.y") is None and claim_at(c, "nope") is None


def test_required_claims(idp: IdP) -> None:
    v = verifier_for(idp, required_claims={"repository_owner": "acme", "ref": ["refs/heads/main", "refs/tags/v1"],
                                           "runner_environment": "github-hosted"})
    ok = claims_for(idp.issuer, repository_owner="acme", ref="refs/tags/v1", runner_environment="github-hosted")
    assert v.verify(sign(ok)).subject == "alice"
    err = refused(v, sign({**ok, "repository_owner": "evil"}))
    assert err.check == "claims" and "'repository_owner'" in err.message and '"acme"' in err.message
    err = refused(v, sign({k: x for k, x in ok.items() if k != "ref"}))
    assert err.check == "claims" and "no 'ref' claim" in err.message
    # A list claim must contain the value; types are not coerced.
    v2 = verifier_for(idp, required_claims={"groups": "developers", "level": 2, "admin": True})
    assert v2.verify(sign(claims_for(idp.issuer, level=2, admin=True))).subject == "alice"
    assert refused(v2, sign(claims_for(idp.issuer, level="2", admin=True))).check == "claims"
    assert refused(v2, sign(claims_for(idp.issuer, level=2, admin=1))).check == "claims"


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
    cfgs = parse_issuers([
        Section({"name": "gha-infra", "issuer": idp.issuer, "audience": AUD,
                 "required_claims": {"repository": "acme/infra"}, "static_groups": ["ci-infra"]}, "p", "issuers[0]"),
        Section({"name": "gha-web", "issuer": idp.issuer, "audience": AUD,
                 "required_claims": {"repository": "acme/web"}, "static_groups": ["ci-web"]}, "p", "issuers[1]"),
    ])
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


def test_attack_unknown_kid(idp: IdP) -> None:
    clock = Clock()
    v = verifier_for(idp, clock)
    v.verify(sign(claims_for(idp.issuer)))
    clock.advance(60)
    err = refused(v, sign(claims_for(idp.issuer), RSA_EVIL, kid="other"))
    assert err.check == "unknown_key" and '"other"' not in err.message  # the unverified kid is not echoed
    assert idp.jwks_fetches == 2  # refetched once on the unknown kid...
    for _ in range(5):
        assert refused(v, sign(claims_for(idp.issuer), RSA_EVIL, kid=f"k{_}")).check == "unknown_key"
    assert idp.jwks_fetches == 2  # ...and not again within the rate limit


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


@pytest.mark.parametrize("garbage", [
    "garbage", "a.b", "a.b.c", "a.b.c.d", "....", "é.é.é", "eyJ.eyJ.sig", "Bearer x.y.z",
    forge({"alg": "RS256"}, {"iss": "x"}) + "=",  # padding is not base64url
    b64(b"[1,2]") + "." + b64(b"{}") + ".sig",  # header not an object
    b64(b'{"alg":"RS256"}') + "." + b64(b"not json") + ".c2ln",
    b64(b'{"alg":"RS256"}') + "." + b64(b"[" * 5000 + b"]" * 5000) + ".c2ln",  # deep nesting
    b64(b'{"typ":"JWT"}') + "." + b64(b"{}") + ".c2ln",  # no alg
    b64(b'{"alg":"RS256","crit":["exp"]}') + "." + b64(b"{}") + ".c2ln",
    b64(b'{"alg":"RS256","b64":false}') + "." + b64(b"{}") + ".c2ln",
    "a.b.c.d.e",  # a JWE
])
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


def test_attack_basic_without_password() -> None:
    for creds in (b"just-a-user", b"user:", b"user:   "):
        with pytest.raises(TokenError) as info:
            parse_proxy_authorization("Basic " + base64.b64encode(creds).decode())
        assert info.value.check == "no_password"
        assert "password" in info.value.message and "HTTPS_PROXY=http://gatehouse:TOKEN@" in info.value.message
    for bad in ("Basic !!!", "Digest abc", "Bearer", "Basic"):
        with pytest.raises(TokenError):
            parse_proxy_authorization(bad)
    assert parse_proxy_authorization("Basic " + base64.b64encode(b"bob:t.o.k").decode()) == ("t.o.k", "bob")
    assert parse_proxy_authorization("bearer  t.o.k ") == ("t.o.k", None)


def test_jwks_with_symmetric_or_private_keys(tmp_path: Path) -> None:
    secret = b"k" * 32
    f = tmp_path / "jwks.json"
    f.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "s", "k": b64(secret)}]}))
    cfg = issuer_cfg("https://idp.example.com", jwks_file=str(f))
    v = TokenVerifier([cfg])
    err = refused(v, sign(claims_for("https://idp.example.com"), secret, kid="s", alg="HS256"))
    assert err.check == "algorithm"
    err = refused(v, sign(claims_for("https://idp.example.com"), RSA_A, kid="s"))
    assert err.check == "no_keys" and "no usable public signing key" in err.message
    # A JWKS that wrongly publishes a private key: only its public half is used.
    priv = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_A)) | {"kid": "a"}
    priv.pop("key_ops", None)
    f.write_text(json.dumps({"keys": [priv]}))
    assert TokenVerifier([cfg]).verify(sign(claims_for("https://idp.example.com"))).subject == "alice"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.from_regex(r"[A-Za-z0-9_\-]{0,40}\.[A-Za-z0-9_\-]{0,40}\.[A-Za-z0-9_\-]{0,40}")))
def test_fuzz_only_token_errors(value: str) -> None:
    v = TokenVerifier([issuer_cfg("https://idp.example.com", jwks_uri="https://idp.example.com/jwks")],
                      fetch=lambda url: b'{"keys": []}')
    with pytest.raises(TokenError):
        v.verify(value)


# -- key rotation, outages, the event-loop fast path ---------------------------------------------------


def test_key_rotation_one_refetch(idp: IdP) -> None:
    clock = Clock()
    v = verifier_for(idp, clock)
    assert v.verify(sign(claims_for(idp.issuer))).subject == "alice"
    assert idp.jwks_fetches == 1
    idp.jwks = jwks_of((RSA_B, "b"))  # the IdP rotates: new key b, old key a withdrawn
    new_token = sign(claims_for(idp.issuer, sub="bob"), RSA_B, kid="b")
    clock.advance(5)  # within the rate limit of the start-up fetch: not refetched yet
    assert refused(v, new_token).check == "unknown_key"
    clock.advance(30)
    assert v.verify(new_token).subject == "bob"
    assert idp.jwks_fetches == 2
    # The cached result of the old token is not trusted past the key change.
    assert refused(v, sign(claims_for(idp.issuer))).check == "unknown_key"


def test_idp_down_cached_keys_still_work(idp: IdP) -> None:
    clock = Clock()
    v = verifier_for(idp, clock)
    token = sign(claims_for(idp.issuer, exp=int(clock.now) + 7 * 86400))
    v.verify(token)
    idp.down()
    clock.advance(7200)  # past the cache TTL: a refresh is due but the IdP is down
    assert v.verify(token).subject == "alice"
    assert v.verify(sign(claims_for(idp.issuer, exp=int(clock.now) + 600), EC_A, "ec", "ES256")).subject == "alice"
    (cache,) = v.key_caches()
    assert cache.last_error is not None and cache.keys is not None
    # An unknown kid while the IdP is down is refused, not a crash.
    clock.advance(60)
    assert refused(v, sign(claims_for(idp.issuer), RSA_B, kid="b")).check == "unknown_key"


def test_idp_unreachable_at_start(idp: IdP) -> None:
    clock = Clock()
    v = verifier_for(idp, clock)
    idp.down()
    warnings = v.prefetch()
    assert len(warnings) == 1 and "'corp'" in warnings[0] and "could not load signing keys" in warnings[0]
    err = refused(v, sign(claims_for(idp.issuer)))
    assert err.check == "no_keys" and "OIDC discovery" in err.message


def test_prefetch_ok_and_status(idp: IdP) -> None:
    v = verifier_for(idp)
    assert v.prefetch() == []
    (status,) = v.key_status()
    assert status["keys"] == 3 and status["source"] == "discovery" and status["last_error"] is None


def test_discovery_issuer_mismatch(idp: IdP) -> None:
    cfg = issuer_cfg(idp.issuer + "/tenant")  # the document says idp.issuer: refused (OIDC Discovery 4.3)
    v = TokenVerifier([cfg])
    assert v.prefetch() and "names issuer" in v.prefetch()[0]


def test_fast_path_never_fetches(idp: IdP) -> None:
    clock = Clock()
    v = verifier_for(idp, clock)
    token = sign(claims_for(idp.issuer, exp=int(clock.now) + 86400))
    with pytest.raises(FetchRequired):
        v.verify(token, allow_fetch=False)
    assert idp.hits == []
    v.verify(token)  # what the addon does in a worker thread
    other = sign(claims_for(idp.issuer, sub="carol", exp=int(clock.now) + 86400), EC_A, "ec", "ES256")
    assert v.verify(other, allow_fetch=False).subject == "carol"  # cached keys: inline
    # Stale keys keep verifying inline; the refresh happens in a background thread.
    clock.advance(3600 + 1)
    fresh = sign(claims_for(idp.issuer, sub="dave", exp=int(clock.now) + 600))
    assert v.verify(fresh, allow_fetch=False).subject == "dave"
    (cache,) = v.key_caches()
    cache.join_background(5)
    assert idp.jwks_fetches == 2 and cache.keys is not None and cache.keys.loaded_at == clock.now
    # An unknown kid needs the network: not on the fast path.
    clock.advance(60)
    with pytest.raises(FetchRequired):
        v.verify(sign(claims_for(idp.issuer), RSA_B, kid="b"), allow_fetch=False)


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


def test_jwks_file_reread_on_unknown_kid(tmp_path: Path) -> None:
    clock = Clock()
    f = tmp_path / "jwks.json"
    f.write_text(json.dumps(jwks_of((ED_A, "ed"))))
    v = TokenVerifier([issuer_cfg("gatehouse-dev", jwks_file=str(f))], clock=clock)
    assert v.verify(sign(claims_for("gatehouse-dev", now=clock.now), ED_A, "ed", "EdDSA"), allow_fetch=False)
    new = ed25519.Ed25519PrivateKey.generate()
    f.write_text(json.dumps(jwks_of((new, "ed2"))))
    clock.advance(31)
    ident = v.verify(sign(claims_for("gatehouse-dev", now=clock.now), new, "ed2", "EdDSA"), allow_fetch=False)
    assert ident.subject == "alice"


def test_missing_jwks_file_is_a_warning(tmp_path: Path) -> None:
    v = TokenVerifier([issuer_cfg("gatehouse-dev", jwks_file=str(tmp_path / "absent.json"))])
    assert "could not load" in v.prefetch()[0]
    assert refused(v, sign(claims_for("gatehouse-dev"), ED_A, "ed", "EdDSA")).check == "no_keys"


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


# -- the CI policy examples -----------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"


def fake_idp(issuer: str, key: Any = RSA_A, kid: str = "gh") -> Any:
    docs = {issuer + "/.well-known/openid-configuration": {"issuer": issuer, "jwks_uri": issuer + "/jwks"},
            issuer + "/jwks": jwks_of((key, kid))}
    return lambda url: json.dumps(docs[url]).encode()


def test_github_actions_example() -> None:
    from gatehouse.policy.loader import load_policy

    policy = load_policy(EXAMPLES / "github-actions.toml")
    gh = "https://token.actions.githubusercontent.com"
    v = TokenVerifier(policy.issuers, fetch=fake_idp(gh))
    base = {"iss": gh, "aud": "https://gatehouse.acme.example", "iat": int(time.time()), "exp": int(time.time()) + 300,
            "repository_owner": "acme", "repository_owner_id": "1234567", "runner_environment": "github-hosted",
            "workflow_ref": "acme/infra/.github/workflows/review.yml@refs/heads/main", "jti": "x"}
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
    claims = {"iss": gl, "aud": "https://gatehouse.acme.example", "iat": int(time.time()),
              "exp": int(time.time()) + 3600, "sub": "project_path:acme/platform/infra:ref_type:branch:ref:main",
              "namespace_path": "acme/platform", "project_id": "23456789", "project_path": "acme/platform/infra",
              "ref": "main", "ref_type": "branch", "ref_protected": "true", "user_email": "dev@acme.example"}
    ident = v.verify(sign(claims, kid="gl"))
    assert (ident.issuer_name, ident.groups, ident.email) == ("gitlab-infra-protected", ("ci-deploy",), "dev@acme.example")
    assert v.verify(sign(claims | {"ref_protected": "false"}, kid="gl")).groups == ("ci",)
    err = refused(v, sign(claims | {"ref_protected": "false", "namespace_path": "evil"}, kid="gl"))
    assert err.check == "claims"
