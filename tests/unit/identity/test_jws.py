"""Compact JWS parsing (gatehouse.identity.jws): telling a token from an API key, and the unverified issuer."""

from __future__ import annotations

import pytest

from gatehouse.identity.jws import looks_like_jwt, unverified_issuer
from support.tokens import b64, claims_for, forge, sign


def test_looks_like_jwt():
    assert looks_like_jwt(sign(claims_for("https://idp.example.com")))
    assert looks_like_jwt(forge({"alg": "none"}, {}))
    for not_a_token in (
        "sk-ant-api03-" + "x" * 40,
        "a.b.c",
        b64(b'{"typ":"JWT"}') + ".e30.",
        None,
        42,
        "eyJhbGciOiJSUzI1NiJ9.e30.sig.extra",
    ):
        assert not looks_like_jwt(not_a_token), not_a_token


@pytest.mark.parametrize(
    "token, iss",
    [
        (forge({"alg": "RS256"}, {"iss": "https://idp.example.com"}), "https://idp.example.com"),
        (forge({"alg": "RS256"}, {"iss": 7}), None),
        (forge({"alg": "RS256"}, {}), None),
        ("not-a-token", None),
        ("a.!!!.c", None),
    ],
)
def test_unverified_issuer(token, iss):
    assert unverified_issuer(token) == iss
