"""Proxy credentials (gatehouse.identity.proxyauth): Basic user:TOKEN and Bearer, and what is refused."""

from __future__ import annotations

import base64

import pytest

from gatehouse.identity.errors import TokenError
from gatehouse.identity.proxyauth import parse_proxy_authorization


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
