"""Identity, end to end through a real mitmdump: tokens on CONNECT and per request, attacks,
groups, and Claude Code with HTTPS_PROXY credentials and apiKeyHelper."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import sys
import time
from pathlib import Path

import anthropic
import httpx2 as httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from support.fake_upstream import claude_code_tool_responder
from support.harness import GATEWAY_KEY, run_claude, sdk_client
from support.rawwire import dev_issuer_gateway, gatehouse_token
from support.tokens import claims_for

pytestmark = pytest.mark.e2e

ISSUER = "https://idp.test.example"
AUDIENCE = "gatehouse-e2e"
MODEL_OK = "claude-sonnet-4-6"
TRUSTED = rsa.generate_private_key(public_exponent=65537, key_size=2048)
UNTRUSTED = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**over) -> dict:
    """alice's claims from ISSUER for AUDIENCE, valid for 10 minutes from now (None drops one)."""
    now = int(time.time())
    over = {"iss": ISSUER, "aud": AUDIENCE, "nbf": now, "jti": f"j{now}", **over}
    return claims_for(over.pop("iss"), now, **over)


def sign(c: dict, key=TRUSTED, kid: str = "k1", alg: str = "RS256") -> str:
    return jwt.encode(c, key, algorithm=alg, headers={"kid": kid})


def forge(header: dict, c: dict, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(c).encode())}.{b64(signature)}"


def hs256_with_public_key() -> str:
    """The classic key-confusion attack: HMAC keyed with the issuer's RSA public key."""
    pem = TRUSTED.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims()).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def altered_payload() -> str:
    head, _, sig = sign(claims()).split(".")
    return f"{head}.{b64(json.dumps(claims(sub='mallory', groups=['admins'])).encode())}.{sig}"


POLICY = f"""
[[issuers]]
name = "corp"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["RS256"]
jwks_file = "jwks.json"
email_claim = "email"
groups_claim = "groups"

[groups.developers]
models = ["claude-sonnet-*"]
"""


@pytest.fixture
def idgateway(gateway_factory):
    gw = gateway_factory(POLICY, start=False)
    jwk = json.loads(RSAAlgorithm.to_jwk(TRUSTED.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    (gw.policy_path.parent / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    return gw.start()


ATTACKS = {
    "alg_none": (forge({"alg": "none", "typ": "JWT"}, claims()), "alg: none"),
    "hs256_public_key": (hs256_with_public_key(), "HS256"),
    "expired": (
        sign(claims(iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "expired at",
    ),
    "nbf_future": (sign(claims(nbf=int(time.time()) + 3600)), "not valid before"),
    "wrong_iss": (sign(claims(iss="https://evil.example")), "does not trust"),
    "wrong_aud": (sign(claims(aud="someone-else")), "must be issued"),
    # The unverified kid is not echoed (a token's words are not trusted before its signature).
    "unknown_kid": (sign(claims(), kid="k-unknown"), "names a signing key (kid) that its issuer does not publish"),
    "altered_payload": (altered_payload(), "signature does not verify"),
    "untrusted_key_reusing_kid": (sign(claims(), key=UNTRUSTED), "signature does not verify"),
    "garbage": ("not-a-jwt-at-all", "not a signed JWT"),
}


def assert_refused_401(err: anthropic.APIStatusError, words: str, token: str) -> None:
    assert err.status_code == 401
    body = err.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert words in body["error"]["message"], body["error"]["message"]
    assert token not in err.response.text


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("where", ["proxy", "x-api-key", "bearer"])
def test_attack_tokens_are_refused(idgateway, upstream, name, where):
    token, words = ATTACKS[name]
    if where == "proxy":
        client = sdk_client(idgateway, token=token)
    elif where == "x-api-key":
        client = sdk_client(idgateway, api_key=None, default_headers={"x-api-key": token})
    else:
        client = sdk_client(idgateway, api_key=None, auth_token=token)
    with pytest.raises(anthropic.AuthenticationError) as e:
        client.messages.create(model=MODEL_OK, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    if where == "proxy" or name != "garbage":
        assert_refused_401(e.value, words, token)
    else:
        # A non-JWT API key in-tunnel is not a token at all: the caller simply has none.
        assert_refused_401(e.value, "No Gatehouse token was sent", token)
    assert "k-unknown" not in e.value.response.text and "evil.example" not in e.value.response.text
    assert not upstream.requests.messages()
    assert token not in idgateway.log()


def test_oversized_and_passwordless_proxy_credentials(idgateway, upstream):
    # A CONNECT to the API host is never refused (clients drop a 407's body): the oversized
    # credentials are refused on the first request in the tunnel, before any parsing.
    huge = base64.b64encode(b"gatehouse:" + b"a" * (1024 * 1024)).decode()
    proxy = httpx.Proxy(f"http://127.0.0.1:{idgateway.port}", headers={"Proxy-Authorization": f"Basic {huge}"})
    client = anthropic.Anthropic(
        api_key="x",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(
            proxy=proxy, verify=ssl.create_default_context(cafile=idgateway.ca_path)
        ),
    )
    with pytest.raises(anthropic.AuthenticationError) as e:
        client.messages.create(model=MODEL_OK, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert "at most" in e.value.response.json()["error"]["message"]
    # Basic credentials with a user and no password.
    client = anthropic.Anthropic(
        api_key="x",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(
            proxy=f"http://alice@127.0.0.1:{idgateway.port}",
            verify=ssl.create_default_context(cafile=idgateway.ca_path),
        ),
    )
    with pytest.raises(anthropic.AuthenticationError) as e:
        client.messages.create(model=MODEL_OK, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert "no password" in e.value.response.json()["error"]["message"]
    assert not upstream.requests.messages()
    assert idgateway.proc.poll() is None


def test_valid_token_on_connect_and_in_tunnel(idgateway, upstream):
    token = sign(claims())
    for client in (
        sdk_client(idgateway, token=token),
        sdk_client(idgateway, api_key=None, auth_token=token),
        sdk_client(idgateway, api_key=None, default_headers={"x-api-key": token}),
    ):
        msg = client.messages.create(model=MODEL_OK, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text
    for req in upstream.requests.messages():
        assert req.headers["x-api-key"] == GATEWAY_KEY
        assert "authorization" not in req.headers and "x-gatehouse-token" not in req.headers
        assert token not in json.dumps(dict(req.headers))
    idgateway.stop()
    assert token not in idgateway.log()
    # Nothing the gateway wrote to disk holds the token.
    for path in idgateway.workdir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_missing_token_explains_what_to_do(idgateway, upstream):
    with pytest.raises(anthropic.AuthenticationError) as e:
        sdk_client(idgateway).messages.create(
            model=MODEL_OK, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    msg = e.value.response.json()["error"]["message"]
    assert "No Gatehouse token was sent" in msg and "gatehouse token" in msg
    assert not upstream.requests.messages()


def test_group_policy_allows_and_refuses_models(idgateway, upstream):
    client = sdk_client(idgateway, token=sign(claims()))
    client.messages.create(model=MODEL_OK, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        client.messages.create(model="claude-opus-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert "claude-opus-4-5" in e.value.response.json()["error"]["message"]
    outsider = sdk_client(idgateway, token=sign(claims(sub="eve", groups=["contractors"])))
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        outsider.messages.create(model=MODEL_OK, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert "none of the groups" in e.value.response.json()["error"]["message"]
    assert [r.model for r in upstream.requests.messages()] == [MODEL_OK]


def test_passthrough_host_needs_credentials(gateway_factory):
    gw = gateway_factory(POLICY + '\n[gateway]\npassthrough_hosts = ["registry.example"]\n', start=False)
    jwk = json.loads(RSAAlgorithm.to_jwk(TRUSTED.public_key()))
    jwk.update(kid="k1")
    (gw.policy_path.parent / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    gw.start()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"CONNECT registry.example:443 HTTP/1.1\r\nHost: registry.example:443\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 407")


def dev_policy(gateway_factory):
    """A gateway trusting the local dev issuer, as the quick start does (not started)."""
    return dev_issuer_gateway(gateway_factory, start=False)


def test_claude_code_with_token_in_https_proxy(gateway_factory, upstream, tmp_path):
    gw, state = dev_policy(gateway_factory)
    token = gatehouse_token(gw.policy_path, "--sub", "alice", "--groups", "developers")
    gw.start()
    upstream.responder = claude_code_tool_responder("echo identity-ok")
    work = tmp_path / "w1"
    work.mkdir()
    r = run_claude(gw, work, "run the check", token=token, args=["--allowedTools", "Bash"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identity-ok" in json.loads(r.stdout)["result"]
    assert token not in gw.log()


def test_claude_code_without_token_shows_gateway_explanation(gateway_factory, upstream, tmp_path):
    gw, state = dev_policy(gateway_factory)
    gatehouse_token(gw.policy_path, "--sub", "x")  # creates the issuer key and JWKS
    gw.start()
    work = tmp_path / "w2"
    work.mkdir()
    r = run_claude(gw, work, "hello", timeout=120)
    print(r.stdout)
    assert r.returncode != 0
    assert "gatehouse token" in r.stdout + r.stderr
    assert not upstream.requests.messages()


def test_claude_code_api_key_helper_survives_token_expiry(gateway_factory, upstream, tmp_path):
    """apiKeyHelper prints a fresh short-lived token; turns keep working past the first token's expiry."""
    gw, state = dev_policy(gateway_factory)
    gatehouse_token(gw.policy_path, "--sub", "x")
    gw.start()
    gatehouse = Path(sys.executable).parent / "gatehouse"
    helper = tmp_path / "helper.sh"
    helper.write_text(
        f"#!/bin/sh\nexec {gatehouse} token --policy {gw.policy_path} --sub alice --groups developers --ttl 4s --print\n"
    )
    helper.chmod(0o755)
    work = tmp_path / "w3"
    work.mkdir()
    home = work / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text(json.dumps({"apiKeyHelper": str(helper)}))

    # Two tool turns separated by a command that outlives the first token.
    upstream.responder = claude_code_tool_responder("sleep 6 && echo helper-ok")
    r = run_claude(
        gw,
        work,
        "run it",
        args=["--allowedTools", "Bash"],
        timeout=180,
        ANTHROPIC_API_KEY=None,
        CLAUDE_CODE_API_KEY_HELPER_TTL_MS="1000",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "helper-ok" in json.loads(r.stdout)["result"]
    turns = upstream.requests.messages()
    assert len(turns) >= 2
    assert turns[-1].received_at - turns[0].received_at > 4  # the first token had expired by then
