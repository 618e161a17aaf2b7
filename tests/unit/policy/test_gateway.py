"""The ``[gateway]`` section (gatehouse.policy.gateway): refusals naming file and key, the upstream URL."""

from __future__ import annotations

import tomllib

import pytest

from gatehouse.policy.gateway import DEFAULT_ALLOWED_ENDPOINTS, parse_gateway, validate_upstream
from gatehouse.policy.reader import PolicyError, Section


def gateway_section(text: str) -> Section | None:
    return Section(tomllib.loads(text), "p.toml").section("gateway")


def test_absent_section_is_the_defaults():
    g = parse_gateway(None)
    assert g.upstream is None and g.other_hosts == "deny" and g.passthrough_hosts == ()
    assert g.allowed_endpoints == DEFAULT_ALLOWED_ENDPOINTS


def test_values():
    g = parse_gateway(
        gateway_section(
            '[gateway]\nupstream = "https://proxy.example.com/base/"\n'
            'other_hosts = "passthrough"\npassthrough_hosts = ["*.sentry.io"]\n'
            'allowed_endpoints = ["GET,POST /v1/files*"]\nmax_body_bytes = 2048\n'
        )
    )
    assert g.upstream == "https://proxy.example.com/base"
    assert (g.other_hosts, g.passthrough_hosts, g.max_body_bytes) == ("passthrough", ("*.sentry.io",), 2048)
    assert [str(e) for e in g.allowed_endpoints] == ["GET,POST /v1/files*"]


@pytest.mark.parametrize(
    "text, key, message",
    [
        ('[gateway]\nmax_body_bytes = "big"\n', "gateway.max_body_bytes", "expected an integer, got a string"),
        ('[gateway]\nother_hosts = "allow"\n', "gateway.other_hosts", "must be one of 'deny', 'passthrough'"),
        ('[gateway]\nupstream = "ftp://x"\n', "gateway.upstream", "http:// or https://"),
        ('[gateway]\nallowed_endpoints = ["v1/messages"]\n', "gateway.allowed_endpoints[0]", "must start with '/'"),
        ("[gateway]\nlisten = 1\n", "gateway.listen", "unknown key"),
    ],
)
def test_refusals_name_file_and_key(text, key, message):
    with pytest.raises(PolicyError) as e:
        parse_gateway(gateway_section(text))
    assert str(e.value).startswith(f"p.toml: {key}: ")
    assert message in str(e.value)


@pytest.mark.parametrize(
    "entry, message",
    [
        ("FETCH /v1/x", "unknown HTTP method FETCH"),
        ("POST v1/x", "must start with '/'"),
    ],
)
def test_bad_endpoint_entries_name_the_key(entry, message):
    with pytest.raises(PolicyError) as e:
        parse_gateway(gateway_section(f'[gateway]\nallowed_endpoints = ["/v1/messages", "{entry}"]\n'))
    assert "gateway.allowed_endpoints[1]" in str(e.value) and message in str(e.value)


@pytest.mark.parametrize(
    "value, message",
    [
        ("ftp://x", "must be an http:// or https:// base URL; got 'ftp://x'"),
        ("https://", "must be an http:// or https:// base URL; got 'https://'"),
        ("https://x.example/v1?beta=true", "must not have a query or fragment"),
        ("https://x.example/#top", "must not have a query or fragment"),
        ("http://[::1", "is not a URL"),
    ],
)
def test_validate_upstream_messages(value, message):
    with pytest.raises(PolicyError) as e:
        validate_upstream(value, "--set gateway_upstream", "gateway_upstream")
    assert str(e.value) == f"--set gateway_upstream: gateway_upstream: {message}"


def test_validate_upstream_drops_the_trailing_slash():
    assert validate_upstream("http://127.0.0.1:8000/", "p.toml", "gateway.upstream") == "http://127.0.0.1:8000"
