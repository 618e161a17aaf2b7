"""Header allowlists (gatehouse.wire.headers); the Credentials addon that applies the request's is
tested in tests/mitm/test_credentials.py."""

from __future__ import annotations

import random

import pytest

from gatehouse.wire import headers
from support.secrets import fake_secret

PAT = fake_secret("github-pat", random.Random(7))
JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


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
