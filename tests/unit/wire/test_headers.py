"""Header allowlists (gatehouse.wire.headers) and the Credentials addon that applies the request's."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow, tutils

from gatehouse.exchange import METADATA_KEY
from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from gatehouse.mitm.credentials import Credentials
from gatehouse.mitm.state import GatewayState
from gatehouse.policy.loader import load_policy
from gatehouse.wire import headers
from support.secrets import fake_secret

KEY = b"test-fingerprint-key-0123456789ab"
PAT = fake_secret("github-pat", random.Random(7))
JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
GATEWAY_KEY = "sk-ant-gateway-held-key-0123456789"


@pytest.fixture
def masker() -> Masker:
    return Masker(parse_masking(None), KEY)


def test_request_allowlist_keeps_what_clients_send(masker):
    sent = [
        ("Host", "api.anthropic.com"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "claude-code-20250219,context-1m-2025-08-07"),
        ("x-stainless-lang", "js"),
        ("x-stainless-retry-count", "0"),
        ("x-claude-code-session-id", "0b6c7c1e-1111-4222-8333-944445555666"),
        ("user-agent", "claude-cli/2.1.197 (external, sdk-cli)"),
        ("x-app", "cli"),
        ("content-type", "application/json"),
        ("content-length", "12"),
        ("accept-encoding", "gzip, br"),
    ]
    out = headers.filter_request(sent, masker)
    assert out.headers == sent and not out.changed


@pytest.mark.parametrize(
    "name, value, why",
    [
        ("cookie", "session=abc", "dropped"),
        ("x-custom", "anything", "dropped"),
        ("anthropic-api-key", "sk-ant-api03-abcdefghijklmnop", "dropped"),  # not an allowlisted name
        ("x-api-key", "sk-ant-api03-abcdefghijklmnop", "dropped"),
        ("authorization", "Bearer abc.def.ghi", "dropped"),
        ("user-agent", f"my-agent {JWT}", "credentials"),  # a token copied into an allowed header
        ("x-stainless-os", "Bearer 0123456789abcdef", "credentials"),
        ("anthropic-beta", "sk-ant-oat01-abcdefghijklmnop", "credentials"),
    ],
)
def test_credentials_never_leave_whatever_the_header(masker, name, value, why):
    out = headers.filter_request([(name, value), ("anthropic-version", "2023-06-01")], masker)
    assert out.headers == [("anthropic-version", "2023-06-01")]
    assert getattr(out, why) == [name]


def test_forwarded_values_are_masked(masker):
    out = headers.filter_request([("anthropic-beta", f"x,{PAT}"), ("x-claude-code-session-id", PAT)], masker)
    assert PAT not in str(out.headers)
    assert {f.where for f in out.findings} == {
        "request.headers.anthropic-beta",
        "request.headers.x-claude-code-session-id",
    }
    assert out.headers[0][1].startswith("x,[MASKED:github-pat:")


def test_response_allowlist(masker):
    out = headers.filter_response(
        [
            ("request-id", "req_1"),
            ("anthropic-ratelimit-unified-status", "allowed"),
            ("retry-after-ms", "10"),
            ("server", "envoy"),
            ("set-cookie", "a=b"),
            ("via", "1.1 lb"),
        ],
        masker,
    )
    assert [n for n, _ in out.headers] == ["request-id", "anthropic-ratelimit-unified-status", "retry-after-ms"]
    assert out.dropped == ["server", "set-cookie", "via"]


# -- the Credentials addon -------------------------------------------------------------------


def _state(tmp_path: Path, masker: Masker) -> GatewayState:
    p = tmp_path / "policy.toml"
    p.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n')
    return GatewayState(policy=load_policy(p), masker=masker)


def _flow(**hdrs: str) -> http.HTTPFlow:
    h = http.Headers(content_type="application/json", **hdrs)
    req = tutils.treq(
        host="api.anthropic.com",
        port=443,
        scheme=b"https",
        method=b"POST",
        path=b"/v1/messages",
        authority=b"api.anthropic.com",
        headers=h,
        content=b"{}",
    )
    return tflow.tflow(req=req)


def test_credentials_addon_forwards_only_allowlisted_headers_and_its_own_key(tmp_path, masker, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", GATEWAY_KEY)
    addon = Credentials(_state(tmp_path, masker))
    f = _flow(
        x_api_key="sk-ant-caller-key-should-never-leave",
        cookie="c=1",
        x_forwarded_token=JWT,
        user_agent=f"ua {PAT}",
        anthropic_version="2023-06-01",
    )
    with taddons.context(addon) as tctx:
        tctx.master.event_loop.run_until_complete(tctx.master.addons.invoke_addon(addon, HttpRequestHook(f)))
    assert f.response is None
    h = f.request.headers
    assert h["x-api-key"] == GATEWAY_KEY and h.get_all("x-api-key") == [GATEWAY_KEY]
    assert "cookie" not in h and "x-forwarded-token" not in h and JWT not in str(h.fields)
    assert PAT not in h["user-agent"] and h["anthropic-version"] == "2023-06-01"
    ex = f.metadata[METADATA_KEY]
    [d] = [d for d in ex.decisions if d.stage == "headers"]
    assert set(d.detail["dropped"]) >= {"x-api-key", "cookie", "x-forwarded-token"}
    assert [x.rule for x in ex.request_findings] == ["github-pat"]


@pytest.mark.parametrize("name", [f"x-stainless-{PAT}", f"X-Claude-Code-{PAT}", f"x-stainless-{JWT}"])
def test_a_name_admitted_by_its_prefix_is_scanned_too(masker, name):
    out = headers.filter_request([(name, "1")], masker)
    assert out.headers == [] and PAT not in str(out.credentials) and JWT not in str(out.credentials)


def test_dropped_names_are_masked_before_they_are_recorded(masker):
    out = headers.filter_request([(f"x-{PAT}", "1")], masker)
    assert out.headers == [] and len(out.dropped) == 1
    assert PAT not in out.dropped[0] and "[MASKED:github-pat:" in out.dropped[0]


def test_a_value_that_is_not_utf8_is_dropped_not_a_crash(masker):
    # mitmproxy decodes header bytes with surrogateescape: b"tr\xffue" arrives as "tr\udcffue"
    value = b"tr\xffue".decode("utf-8", "surrogateescape")
    out = headers.filter_response([("x-should-retry", value), ("request-id", "req-1")], masker)
    assert out.headers == [("request-id", "req-1")] and out.dropped == ["x-should-retry"]
    out = headers.filter_request([("user-agent", value)], masker)
    assert out.headers == [] and out.dropped == ["user-agent"]


def test_an_obsolete_line_folding_becomes_a_space(masker):
    out = headers.filter_request([("x-stainless-os", "Linux\r\n  x86"), ("user-agent", "a\rb")], masker)
    assert out.headers == [("x-stainless-os", "Linux x86")] and out.dropped == ["user-agent"]
