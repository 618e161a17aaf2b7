"""The Identity addon (gatehouse.mitm.identity) driven through mitmproxy's hook dispatch (taddons, tflow)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import hooks, http
from mitmproxy.proxy.layers.http import HttpConnectHook, HttpRequestHeadersHook
from mitmproxy.proxy.server_hooks import ClientDisconnectedHook
from mitmproxy.test import taddons

from gatehouse.exchange import METADATA_KEY
from gatehouse.identity import devissuer
from gatehouse.identity.config import parse_issuers
from gatehouse.identity.verifier import TokenVerifier
from gatehouse.mitm.identity import IdentityAddon
from gatehouse.policy.reader import Section
from support.flows import API, api_flow, connect_flow, fire
from support.idp_server import IdP, jwks_of
from support.tokens import RSA_A, Clock, claims_for, sign

PASSTHROUGH = "github.com"
REAL_API_KEY = "sk-ant-api03-" + "x" * 40


class Env:
    """A dev issuer on disk, a verifier over it, the addon, and helpers to make flows."""

    def __init__(self, tmp: Path, **issuer: Any) -> None:
        self.state = tmp / "state"
        self.jwks = tmp / "dev.jwks.json"
        devissuer.ensure_dev_issuer(self.state, self.jwks)
        table = {
            "name": "dev",
            "issuer": devissuer.DEV_ISSUER,
            "audience": devissuer.DEV_AUDIENCE,
            "algorithms": ["EdDSA"],
            "jwks_file": str(self.jwks),
            **issuer,
        }
        self.clock = Clock()
        self.verifier = TokenVerifier(parse_issuers([Section(table, "p.toml", "issuers[0]")]), clock=self.clock)
        self.addon = IdentityAddon()
        self.addon.configure_verifier(self.verifier, api_hosts={API}, passthrough_hosts={PASSTHROUGH})

    def token(self, sub: str = "alice", groups: tuple[str, ...] = ("developers",), ttl: int = 3600, **kw: Any) -> str:
        return devissuer.mint_token(
            self.state, subject=sub, groups=groups, ttl_seconds=ttl, clock=lambda: self.clock.now, **kw
        )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def error_of(flow: http.HTTPFlow) -> dict[str, Any]:
    assert flow.response is not None
    return json.loads(flow.response.content)["error"]


def assert_refused_401(flow: http.HTTPFlow, *words: str) -> str:
    assert flow.response is not None and flow.response.status_code == 401
    err = error_of(flow)
    assert err["type"] == "authentication_error"
    assert flow.response.headers["x-should-retry"] == "false"
    ex = flow.metadata[METADATA_KEY]
    assert ex.refused and ex.identity is None and ex.decisions[-1].stage == "identity"
    for w in words:
        assert w in err["message"], (w, err["message"])
    return err["message"]


def assert_token_nowhere(flow: http.HTTPFlow, token: str) -> None:
    state = json.dumps(flow.get_state(), default=repr)
    for part in token.split("."):
        if len(part) > 24:
            assert part not in state
            assert part not in repr(flow.metadata)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def tctx() -> Iterator[taddons.context]:
    with taddons.context() as ctx:
        yield ctx


# -- CONNECT with proxy credentials -----------------------------------------------------------------


def test_connect_credentials_bind_the_tunnel(tctx: taddons.context, env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = env.token(groups=("developers", "sre"))
    conn = connect_flow(headers={"proxy-authorization": basic("gatehouse", token)})
    flows = [api_flow(tunnel=conn) for _ in range(3)]

    fire(tctx, env.addon, HttpConnectHook(conn))
    for f in flows:
        fire(tctx, env.addon, HttpRequestHeadersHook(f))
    assert conn.response is None and "proxy-authorization" not in conn.request.headers
    for f in flows:
        assert f.response is None
        ident = f.metadata[METADATA_KEY].identity
        assert (ident.subject, ident.groups, ident.issuer_name) == ("alice", ("developers", "sre"), "dev")
        assert f.metadata[METADATA_KEY].decisions[-1].action == "allow"
        assert_token_nowhere(f, token)
    assert_token_nowhere(conn, token)
    assert token not in caplog.text and token.split(".")[2] not in caplog.text


def test_bearer_proxy_credentials(tctx: taddons.context, env: Env) -> None:
    conn = connect_flow(headers={"proxy-authorization": "Bearer " + env.token(sub="bob")})
    f = api_flow(tunnel=conn)

    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(f))
    assert f.metadata[METADATA_KEY].identity.subject == "bob"


def test_connect_without_credentials_opens_api_tunnel_then_401(tctx: taddons.context, env: Env) -> None:
    conn = connect_flow()
    f = api_flow(headers={"x-api-key": REAL_API_KEY}, tunnel=conn)

    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(f))
    assert conn.response is None  # never a 407 for the API host
    msg = assert_refused_401(f, "No Gatehouse token", "gatehouse token", "client's own key is not a Gatehouse token")
    assert REAL_API_KEY not in msg


def test_connect_with_expired_credentials_then_401_on_requests(
    tctx: taddons.context, env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token = env.token(ttl=60)
    env.clock.now += 3600
    conn = connect_flow(headers={"proxy-authorization": basic("gatehouse", token)})
    f = api_flow(tunnel=conn)

    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(f))
    assert conn.response is None
    assert_refused_401(f, "proxy credentials", "expired at", "gatehouse token")
    assert "expired" in caplog.text and token not in caplog.text
    assert_token_nowhere(f, token)


def test_tunnel_identity_expiry_rechecked_per_flow(tctx: taddons.context, env: Env) -> None:
    conn = connect_flow(headers={"proxy-authorization": basic("gatehouse", env.token(ttl=600))})
    early, late = api_flow(tunnel=conn), api_flow(tunnel=conn)

    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(early))
    env.clock.now += 3600
    fire(tctx, env.addon, HttpRequestHeadersHook(late))
    assert early.response is None
    assert_refused_401(late, "expired at")


def test_basic_without_password_on_connect(tctx: taddons.context, env: Env) -> None:
    conn = connect_flow(headers={"proxy-authorization": "Basic " + base64.b64encode(b"alice").decode()})
    f = api_flow(tunnel=conn)

    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(f))
    assert conn.response is None
    assert_refused_401(f, "no password", "HTTPS_PROXY=http://gatehouse:TOKEN@")


@pytest.mark.parametrize("host, kind", [(PASSTHROUGH, "passthrough host"), ("example.org", "host")])
def test_other_hosts_need_valid_proxy_credentials(tctx: taddons.context, env: Env, host: str, kind: str) -> None:
    bare = connect_flow(host)
    bad = connect_flow(host, headers={"proxy-authorization": basic("gatehouse", "not.a.jwt")})
    good = connect_flow(host, headers={"proxy-authorization": basic("gatehouse", env.token())})

    for f in (bare, bad, good):
        fire(tctx, env.addon, HttpConnectHook(f))
    for f in (bare, bad):
        assert f.response is not None and f.response.status_code == 407
        assert f.response.headers["proxy-authenticate"] == 'Basic realm="gatehouse"'
        assert f.metadata[METADATA_KEY].refused
    assert f"{kind} {host}" in error_of(bare)["message"]
    assert "malformed" in error_of(bad)["message"]
    assert good.response is None


# -- tokens inside the tunnel ---------------------------------------------------------------------------


def test_api_key_helper_token_overrides_the_tunnel(tctx: taddons.context, env: Env) -> None:
    """apiKeyHelper sends the token as x-api-key and Authorization: the fresh token wins."""
    stale = env.token(sub="old", ttl=60)
    conn = connect_flow(headers={"proxy-authorization": basic("gatehouse", stale)})
    env.clock.now += 3600  # the HTTPS_PROXY token expired; the helper's is fresh
    fresh = env.token(sub="alice")
    f = api_flow(headers={"x-api-key": fresh, "authorization": f"Bearer {fresh}"}, tunnel=conn)

    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(f))
    assert f.response is None
    assert f.metadata[METADATA_KEY].identity.subject == "alice"
    assert f.metadata[METADATA_KEY].decisions[-1].detail["source"] == "x-api-key"
    assert "x-api-key" not in f.request.headers and "authorization" not in f.request.headers
    assert_token_nowhere(f, fresh)


@pytest.mark.parametrize(
    "headers, source",
    [
        (lambda t: {"x-gatehouse-token": t}, "x-gatehouse-token"),
        (lambda t: {"authorization": f"Bearer {t}"}, "authorization"),
        (lambda t: {"x-api-key": t}, "x-api-key"),
    ],
)
def test_in_request_token_without_tunnel(tctx: taddons.context, env: Env, headers: Any, source: str) -> None:
    token = env.token(sub="carol")
    f = api_flow(headers=headers(token))

    fire(tctx, env.addon, HttpRequestHeadersHook(f))
    assert f.response is None
    assert f.metadata[METADATA_KEY].identity.subject == "carol"
    assert f.metadata[METADATA_KEY].decisions[-1].detail["source"] == source
    for name in ("x-gatehouse-token", "authorization", "x-api-key"):
        assert name not in f.request.headers
    assert_token_nowhere(f, token)


def test_gatehouse_header_wins_and_real_api_key_is_left(tctx: taddons.context, env: Env) -> None:
    token = env.token(sub="dave")
    f = api_flow(headers={"x-gatehouse-token": token, "x-api-key": REAL_API_KEY})

    fire(tctx, env.addon, HttpRequestHeadersHook(f))
    assert f.metadata[METADATA_KEY].identity.subject == "dave"
    # Not a JWT: left for the Credentials addon, which replaces it with the gateway's key.
    assert f.request.headers["x-api-key"] == REAL_API_KEY
    assert "x-gatehouse-token" not in f.request.headers


def test_invalid_request_token_is_refused_despite_valid_tunnel(tctx: taddons.context, env: Env) -> None:
    conn = connect_flow(headers={"proxy-authorization": basic("gatehouse", env.token())})
    token = env.token()
    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    f = api_flow(headers={"x-gatehouse-token": tampered}, tunnel=conn)

    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(f))
    assert_refused_401(f, "x-gatehouse-token", "signature")
    assert "x-gatehouse-token" not in f.request.headers


def test_untrusted_jwt_in_api_key_falls_back_to_tunnel(tctx: taddons.context, env: Env) -> None:
    foreign = sign(claims_for("https://other-idp.example.com"), RSA_A)
    conn = connect_flow(headers={"proxy-authorization": basic("gatehouse", env.token(sub="erin"))})
    ok = api_flow(headers={"x-api-key": foreign}, tunnel=conn)
    alone = api_flow(headers={"x-api-key": foreign})

    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(ok), HttpRequestHeadersHook(alone))
    assert ok.metadata[METADATA_KEY].identity.subject == "erin"
    assert "x-api-key" not in ok.request.headers  # a JWT is never forwarded as an API key
    assert_refused_401(alone, "No Gatehouse token", "from an issuer that this gateway does not trust")
    assert "other-idp" not in alone.response.text  # an unverified claim is never echoed


def test_plain_http_proxy_request(tctx: taddons.context, env: Env) -> None:
    token = env.token(sub="frank")
    f = api_flow(headers={"proxy-authorization": basic("gatehouse", token)}, host="api.example.internal")

    fire(tctx, env.addon, HttpRequestHeadersHook(f))
    assert f.metadata[METADATA_KEY].identity.subject == "frank"
    assert "proxy-authorization" not in f.request.headers


def test_user_claim_on_proxy_credentials(tctx: taddons.context, tmp_path: Path) -> None:
    env = Env(tmp_path, user_claim="sub")
    token = env.token(sub="alice")
    good = connect_flow(headers={"proxy-authorization": basic("alice", token)})
    bad = connect_flow(headers={"proxy-authorization": basic("mallory", token)})
    f_good, f_bad = api_flow(tunnel=good), api_flow(tunnel=bad)

    for c, f in ((good, f_good), (bad, f_bad)):
        fire(tctx, env.addon, HttpConnectHook(c), HttpRequestHeadersHook(f))
    assert f_good.metadata[METADATA_KEY].identity.subject == "alice"
    assert_refused_401(f_bad, "proxy user name", "'sub'")


def test_huge_header_refused_cheaply(tctx: taddons.context, env: Env) -> None:
    huge = "eyJ" + "A" * (1024 * 1024)
    flows = [
        api_flow(headers={"x-gatehouse-token": huge}),
        api_flow(headers={"x-api-key": huge}),
        api_flow(headers={"authorization": "Bearer " + huge}),
    ]
    conn = connect_flow(headers={"proxy-authorization": "Basic " + huge})
    inner = api_flow(tunnel=conn)

    t0 = time.perf_counter()
    for f in flows:
        fire(tctx, env.addon, HttpRequestHeadersHook(f))
    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(inner))
    assert time.perf_counter() - t0 < 0.5
    for f in flows + [inner]:
        assert_refused_401(f, "bytes long")
    assert conn.response is None


def test_duplicate_token_headers(tctx: taddons.context, env: Env) -> None:
    f = api_flow(headers=[("x-gatehouse-token", env.token(sub="a")), ("x-gatehouse-token", env.token(sub="b"))])

    fire(tctx, env.addon, HttpRequestHeadersHook(f))
    assert_refused_401(f, "sent 2 times")


def test_refused_flow_gets_the_exchange_id_and_reason(tctx: taddons.context, env: Env) -> None:
    f = api_flow(headers={"x-gatehouse-token": "garbage"})

    fire(tctx, env.addon, HttpRequestHeadersHook(f))
    assert_refused_401(f, "malformed", "not a signed JWT")
    ex = f.metadata[METADATA_KEY]
    assert f.response.headers["x-gatehouse-exchange-id"] == ex.exchange_id
    assert ex.decisions[-1].rule == "identity.malformed"


# -- lifecycle ----------------------------------------------------------------------------------------


def test_no_verifier_means_no_identity_required(tctx: taddons.context, env: Env) -> None:
    env.addon.configure_verifier(None, api_hosts={API}, passthrough_hosts=set())
    conn = connect_flow(PASSTHROUGH, headers={"proxy-authorization": "Basic abc"})
    f = api_flow(headers={"x-gatehouse-token": "t", "x-api-key": REAL_API_KEY})

    fire(tctx, env.addon, HttpConnectHook(conn), HttpRequestHeadersHook(f))
    assert conn.response is None and f.response is None
    assert METADATA_KEY not in f.metadata
    assert "x-gatehouse-token" not in f.request.headers and f.request.headers["x-api-key"] == REAL_API_KEY


def test_client_disconnect_forgets_the_tunnel(tctx: taddons.context, env: Env) -> None:
    conn = connect_flow(headers={"proxy-authorization": basic("gatehouse", env.token())})
    later = api_flow(tunnel=conn)

    fire(tctx, env.addon, HttpConnectHook(conn))
    assert conn.client_conn.id in env.addon._tunnels
    fire(tctx, env.addon, ClientDisconnectedHook(conn.client_conn))
    assert env.addon._tunnels == {}
    fire(tctx, env.addon, HttpRequestHeadersHook(later))
    assert_refused_401(later, "No Gatehouse token")


def test_policy_reload_drops_tunnels_of_changed_issuers(tctx: taddons.context, env: Env, tmp_path: Path) -> None:
    conn = connect_flow(headers={"proxy-authorization": basic("gatehouse", env.token())})
    same, changed = api_flow(tunnel=conn), api_flow(tunnel=conn)

    fire(tctx, env.addon, HttpConnectHook(conn))
    # Same issuers, new verifier: the tunnel stays.
    env.addon.configure_verifier(
        TokenVerifier(env.verifier.issuers, clock=env.clock), api_hosts={API}, passthrough_hosts=set()
    )
    fire(tctx, env.addon, HttpRequestHeadersHook(same))
    other = Env(tmp_path / "other", static_groups=["x"])
    env.addon.configure_verifier(other.verifier, api_hosts={API}, passthrough_hosts=set())
    fire(tctx, env.addon, HttpRequestHeadersHook(changed))
    assert same.response is None
    assert_refused_401(changed, "trusted issuers changed")


def test_keys_fetched_off_the_event_loop(
    tctx: taddons.context, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Discovery + JWKS over HTTP: the first verification runs in a worker thread."""
    idp = IdP(jwks_of((RSA_A, "a")))
    try:
        cfg = parse_issuers(
            [
                Section(
                    {"name": "corp", "issuer": idp.issuer, "audience": "https://gatehouse.example/api"},
                    "p.toml",
                    "issuers[0]",
                )
            ]
        )
        env = Env(tmp_path)
        env.verifier = TokenVerifier(cfg)
        env.addon.configure_verifier(env.verifier, api_hosts={API}, passthrough_hosts=set())
        token = sign(claims_for(idp.issuer))
        f1, f2 = api_flow(headers={"x-api-key": token}), api_flow(headers={"x-api-key": token})
        threads: list[str] = []
        real_verify = env.verifier.verify

        def spy(*a: Any, **kw: Any) -> Any:
            import threading

            threads.append(threading.current_thread().name)
            return real_verify(*a, **kw)

        env.verifier.verify = spy  # type: ignore[method-assign]

        fire(tctx, env.addon, HttpRequestHeadersHook(f1), HttpRequestHeadersHook(f2))
        assert f1.metadata[METADATA_KEY].identity.issuer_name == "corp"
        assert f2.metadata[METADATA_KEY].identity.issuer_name == "corp"
        # f1: inline attempt (FetchRequired), then a worker thread; f2: inline, keys cached.
        assert threads[0] == "MainThread" and threads[1] != "MainThread" and threads[2:] == ["MainThread"]
    finally:
        idp.down()


def test_running_prefetches_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    idp = IdP(jwks_of((RSA_A, "a")))
    idp.down()
    cfg = parse_issuers([Section({"name": "corp", "issuer": idp.issuer, "audience": "x"}, "p.toml", "issuers[0]")])
    addon = IdentityAddon()
    addon.configure_verifier(TokenVerifier(cfg), api_hosts={API}, passthrough_hosts=set())

    async def main() -> None:
        with taddons.context(addon) as tctx:
            await tctx.master.addons.invoke_addon(addon, hooks.RunningHook())
            assert addon._prefetch_task is not None
            await addon._prefetch_task

    asyncio.run(main())
    assert "could not load signing keys" in caplog.text and "'corp'" in caplog.text
