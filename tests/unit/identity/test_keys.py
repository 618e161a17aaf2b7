"""Signing keys (gatehouse.identity.keys): key sources, what a JWKS may hold, refetch on an unknown
kid, rotation, outages, and the event-loop fast path.

Keys are served by a real HTTP server on 127.0.0.1 (discovery document + JWKS, see conftest.py) so
that fetching, caching, refetching on an unknown kid and outages are exercised through urllib as
in production.
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gatehouse.identity.keys import FetchRequired
from gatehouse.identity.verifier import TokenVerifier
from support.idp_server import IdP, jwks_of
from support.tokens import (
    EC_A,
    ED_A,
    RSA_A,
    RSA_B,
    RSA_EVIL,
    Clock,
    b64,
    claims_for,
    issuer_cfg,
    refused,
    sign,
    verifier_for,
)


def test_explicit_jwks_uri_and_file(idp: IdP, tmp_path: Path) -> None:
    token = sign(claims_for(idp.issuer))
    assert TokenVerifier([issuer_cfg(idp.issuer, jwks_uri=idp.issuer + "/jwks")]).verify(token).subject == "alice"
    assert "/.well-known/openid-configuration" not in idp.hits
    f = tmp_path / "jwks.json"
    f.write_text(json.dumps(jwks_of((RSA_A, "a"))))
    assert TokenVerifier([issuer_cfg(idp.issuer, jwks_file=str(f))]).verify(token).subject == "alice"


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


# -- key rotation, outages, the event-loop fast path -----------------------------------------------


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
