"""The Credentials addon (gatehouse.mitm.credentials) through mitmproxy's hook dispatch: the
caller's credentials never go upstream, the gateway's key does, and without a key nothing does."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.addons.dumper import Dumper
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons

from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from gatehouse.mitm.credentials import Credentials
from gatehouse.mitm.flowutil import exchange_of
from gatehouse.mitm.state import GatewayState
from support.flows import API, ISSUER, api_flow, fire, gateway_state, identify, refusal
from support.harness import CALLER_KEY, GATEWAY_KEY
from support.secrets import FINGERPRINT_KEY, SAMPLE_JWT, fake_secret

SRE_KEY = "sk-ant-gateway-sre-key-abcdefghij"
PAT = fake_secret("github-pat", random.Random(7))
CALLER_HEADERS = [
    ("x-api-key", CALLER_KEY),
    ("authorization", f"Bearer {CALLER_KEY}"),
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "tools-2024-05-16"),
    ("user-agent", "claude-cli/2.1"),
    ("x-custom-tracking", "abc"),
]
GROUPS = (
    ISSUER
    + """
[groups.developers]
[groups.sre]
[credentials.groups.sre]
api_key_env = "GH_TEST_SRE_KEY"
"""
)


@pytest.fixture
def tctx():
    with taddons.context() as ctx:
        yield ctx


@pytest.fixture(autouse=True)
def gateway_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", GATEWAY_KEY)
    monkeypatch.delenv("GH_TEST_SRE_KEY", raising=False)
    monkeypatch.delenv("GH_TEST_KEY", raising=False)


def credentials(tmp_path: Path, policy: str = "") -> Credentials:
    return Credentials(gateway_state(tmp_path, policy))


def sent(tctx, addon: Credentials, flow: http.HTTPFlow) -> http.Headers:
    fire(tctx, addon, HttpRequestHook(flow))
    return flow.request.headers


def injected(flow: http.HTTPFlow):
    [d] = [d for d in exchange_of(flow).decisions if d.stage == "credentials"]
    assert d.action == "inject"
    return d


# -- the key ------------------------------------------------------------------------------------


def test_the_gateway_key_replaces_the_callers(tmp_path, tctx):
    f = api_flow(headers=CALLER_HEADERS)
    headers = sent(tctx, credentials(tmp_path), f)
    assert f.response is None
    assert headers.get_all("x-api-key") == [GATEWAY_KEY]
    assert "authorization" not in headers
    assert CALLER_KEY not in str(f.request.headers) and CALLER_KEY not in repr(f.metadata)
    d = injected(f)
    assert d.reason == "gateway key from environment variable ANTHROPIC_API_KEY" and d.detail["group"] is None
    assert GATEWAY_KEY not in repr(f.metadata)


def test_only_allowlisted_headers_go_upstream_and_the_rest_is_named(tmp_path, tctx):
    f = api_flow(headers=CALLER_HEADERS)
    headers = sent(tctx, credentials(tmp_path), f)
    assert headers["anthropic-version"] == "2023-06-01" and headers["anthropic-beta"] == "tools-2024-05-16"
    assert headers["user-agent"] == "claude-cli/2.1"
    assert "x-custom-tracking" not in headers
    [drop] = [d for d in exchange_of(f).decisions if d.stage == "headers"]
    assert drop.action == "drop" and drop.rule == "header_allowlist"
    assert set(drop.detail["dropped"]) == {"x-api-key", "authorization", "x-custom-tracking"}


def test_a_credential_in_an_allowed_header_is_dropped(tmp_path, tctx):
    f = api_flow(headers=[("x-stainless-meta", CALLER_KEY), ("x-claude-code-session-id", "s-1")])
    headers = sent(tctx, credentials(tmp_path), f)
    assert "x-stainless-meta" not in headers and headers["x-claude-code-session-id"] == "s-1"
    [drop] = [d for d in exchange_of(f).decisions if d.stage == "headers"]
    assert drop.detail["credentials"] == ["x-stainless-meta"]


def test_the_key_env_var_is_the_one_the_policy_names(tmp_path, tctx, monkeypatch):
    monkeypatch.setenv("GH_TEST_KEY", "sk-ant-from-the-named-variable-0000")
    f = api_flow(headers=CALLER_HEADERS)
    headers = sent(tctx, credentials(tmp_path, '[credentials]\napi_key_env = "GH_TEST_KEY"\n'), f)
    assert headers.get_all("x-api-key") == ["sk-ant-from-the-named-variable-0000"]
    assert injected(f).reason == "gateway key from environment variable GH_TEST_KEY"


def test_the_key_may_come_from_a_file(tmp_path, tctx):
    key_file = tmp_path / "claude.key"
    key_file.write_text(f"{GATEWAY_KEY}-from-file\n")
    f = api_flow(headers=CALLER_HEADERS)
    headers = sent(tctx, credentials(tmp_path, f'[credentials]\napi_key_file = "{key_file}"\n'), f)
    assert headers.get_all("x-api-key") == [f"{GATEWAY_KEY}-from-file"]
    assert injected(f).reason == f"gateway key from file {key_file}"


def test_a_group_override_gives_its_members_their_own_key(tmp_path, tctx, monkeypatch):
    monkeypatch.setenv("GH_TEST_SRE_KEY", SRE_KEY)
    addon = credentials(tmp_path, GROUPS)
    sre, dev = api_flow(headers=CALLER_HEADERS), api_flow(headers=CALLER_HEADERS)
    identify(sre, "developers", "sre")
    identify(dev, "developers")
    assert sent(tctx, addon, sre).get_all("x-api-key") == [SRE_KEY]
    assert injected(sre).detail["group"] == "sre"
    assert sent(tctx, addon, dev).get_all("x-api-key") == [GATEWAY_KEY]
    assert injected(dev).detail["group"] is None


def test_of_several_overrides_the_first_in_policy_order_wins(tmp_path, tctx, monkeypatch):
    monkeypatch.setenv("GH_TEST_SRE_KEY", SRE_KEY)
    monkeypatch.setenv("GH_TEST_KEY", "sk-ant-gateway-dev-key-0123456789")
    policy = GROUPS + '[credentials.groups.developers]\napi_key_env = "GH_TEST_KEY"\n'
    f = api_flow()
    identify(f, "developers", "sre")  # the token's order does not decide
    assert sent(tctx, credentials(tmp_path, policy), f)["x-api-key"] == SRE_KEY
    assert injected(f).detail["group"] == "sre"


def test_the_key_is_read_per_request_so_a_rotated_key_applies_at_once(tmp_path, tctx, monkeypatch):
    addon = credentials(tmp_path)
    first, second = api_flow(), api_flow()
    sent(tctx, addon, first)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-rotated-key-0123456789")
    assert sent(tctx, addon, second)["x-api-key"] == "sk-ant-rotated-key-0123456789"
    assert first.request.headers["x-api-key"] == GATEWAY_KEY


def test_a_secret_in_an_allowed_header_is_masked_with_the_states_masker(tmp_path, tctx):
    state = gateway_state(tmp_path)
    state.masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    f = api_flow(
        path="/v1/messages",
        body=b"{}",
        headers={
            "x-api-key": CALLER_KEY,
            "cookie": "c=1",
            "x-forwarded-token": SAMPLE_JWT,
            "user-agent": f"ua {PAT}",
            "anthropic-version": "2023-06-01",
        },
    )
    h = sent(tctx, Credentials(state), f)
    assert f.response is None
    assert h["x-api-key"] == GATEWAY_KEY and h.get_all("x-api-key") == [GATEWAY_KEY]
    assert "cookie" not in h and "x-forwarded-token" not in h and SAMPLE_JWT not in str(h.fields)
    assert PAT not in h["user-agent"] and h["anthropic-version"] == "2023-06-01"
    ex = exchange_of(f)
    [d] = [d for d in ex.decisions if d.stage == "headers"]
    assert set(d.detail["dropped"]) >= {"x-api-key", "cookie", "x-forwarded-token"}
    assert [x.rule for x in ex.request_findings] == ["github-pat"]


# -- no key: refused, not forwarded ---------------------------------------------------------------

ASK = ". Ask your gateway operator to configure [credentials] in the policy."


def assert_not_forwarded(f: http.HTTPFlow) -> None:
    assert "x-api-key" not in f.request.headers and "authorization" not in f.request.headers
    assert not [d for d in exchange_of(f).decisions if d.stage == "credentials" and d.action == "inject"]


def test_a_missing_key_env_var_refuses_with_a_clear_error(tmp_path, tctx, monkeypatch, caplog):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    f = api_flow(headers=CALLER_HEADERS)
    sent(tctx, credentials(tmp_path), f)
    message = refusal(f, 500, "api_error")
    assert message == "the gateway has no Claude API key: environment variable ANTHROPIC_API_KEY is not set" + ASK
    assert_not_forwarded(f)
    assert "ANTHROPIC_API_KEY is not set" in caplog.text


def test_a_blank_key_counts_as_missing(tmp_path, tctx, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "  \n")
    f = api_flow(headers=CALLER_HEADERS)
    sent(tctx, credentials(tmp_path), f)
    assert "ANTHROPIC_API_KEY is not set" in refusal(f, 500, "api_error")
    assert_not_forwarded(f)


def test_a_missing_group_key_refuses_its_members_only(tmp_path, tctx):
    addon = credentials(tmp_path, GROUPS)
    sre, dev = api_flow(), api_flow()
    identify(sre, "sre")
    identify(dev, "developers")
    sent(tctx, addon, sre)
    sent(tctx, addon, dev)
    assert "environment variable GH_TEST_SRE_KEY is not set" in refusal(sre, 500, "api_error")
    assert dev.response is None and dev.request.headers["x-api-key"] == GATEWAY_KEY


def test_an_unreadable_key_file_refuses(tmp_path, tctx):
    missing = tmp_path / "nope.key"
    f = api_flow(headers=CALLER_HEADERS)
    sent(tctx, credentials(tmp_path, f'[credentials]\napi_key_file = "{missing}"\n'), f)
    message = refusal(f, 500, "api_error")
    assert message == f"the gateway has no Claude API key: cannot read {missing} (No such file or directory)" + ASK
    assert_not_forwarded(f)


def test_an_empty_key_file_refuses(tmp_path, tctx):
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    f = api_flow()
    sent(tctx, credentials(tmp_path, f'[credentials]\napi_key_file = "{empty}"\n'), f)
    assert refusal(f, 500, "api_error") == f"the gateway has no Claude API key: {empty} is empty" + ASK
    assert_not_forwarded(f)


# -- where the key goes ---------------------------------------------------------------------------


def test_the_request_is_routed_to_the_api_explicitly(tmp_path, tctx):
    f = api_flow(path="/v1/messages?beta=true")
    f.request.scheme, f.request.port = "http", 80  # what the client said does not decide where the key goes
    sent(tctx, credentials(tmp_path), f)
    assert (f.request.scheme, f.request.host, f.request.port, f.request.path) == (
        "https",
        API,
        443,
        "/v1/messages?beta=true",
    )


def test_the_request_goes_to_the_policys_upstream(tmp_path, tctx):
    f = api_flow(path="/v1/messages?beta=true", headers=[("host", API)])
    sent(tctx, credentials(tmp_path, '[gateway]\nupstream = "http://127.0.0.1:8089/base/"\n'), f)
    assert (f.request.scheme, f.request.host, f.request.port, f.request.path) == (
        "http",
        "127.0.0.1",
        8089,
        "/base/v1/messages?beta=true",
    )
    assert f.request.headers.get_all("host") == ["127.0.0.1:8089"]
    assert f.request.headers["x-api-key"] == GATEWAY_KEY


def test_trailers_never_go_upstream(tmp_path, tctx):
    f = api_flow()
    f.request.trailers = http.Headers(x_api_key=CALLER_KEY)
    sent(tctx, credentials(tmp_path), f)
    assert f.request.trailers is None


# -- flows it leaves alone -------------------------------------------------------------------------


def test_a_passthrough_flow_is_untouched(tmp_path, tctx):
    addon = credentials(tmp_path, '[gateway]\npassthrough_hosts = ["registry.example"]\n')
    f = api_flow("GET", "/pkg", host="registry.example", scheme="http", port=80, headers=CALLER_HEADERS)
    before = f.request.get_state()
    sent(tctx, addon, f)
    assert f.request.get_state() == before
    assert f.response is None and not exchange_of(f).decisions


def test_a_refused_flow_gets_no_key(tmp_path, tctx):
    f = api_flow(headers=CALLER_HEADERS)
    f.response = http.Response.make(403, b"refused earlier")
    sent(tctx, credentials(tmp_path), f)
    assert f.request.headers["x-api-key"] == CALLER_KEY  # never replaced: nothing goes upstream
    assert not exchange_of(f).decisions


def test_no_policy_fails_closed(tctx):
    f = api_flow(headers=CALLER_HEADERS)
    sent(tctx, Credentials(GatewayState()), f)
    assert refusal(f, 500, "api_error") == (
        "Gatehouse could not process this request (credentials failed) and did not forward it."
    )


# -- the log ---------------------------------------------------------------------------------------


def test_flow_detail_that_would_log_the_key_is_lowered(tmp_path, caplog):
    addon = credentials(tmp_path)
    caplog.set_level(logging.WARNING)
    with taddons.context(addon, Dumper()) as tctx:
        tctx.configure(addon, flow_detail=3)
        assert tctx.options.flow_detail == 1
    assert "flow_detail > 1 would log the injected API key" in caplog.text
