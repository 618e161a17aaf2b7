"""Endpoint entries (gatehouse.access.endpoints): method sets and path globs, deny by default."""

from __future__ import annotations

import pytest

from gatehouse.access.endpoints import Endpoint, allowed
from gatehouse.policy.gateway import DEFAULT_ALLOWED_ENDPOINTS


def test_endpoint_globs():
    pats = DEFAULT_ALLOWED_ENDPOINTS
    assert allowed("POST", "/v1/messages?beta=true", pats)
    assert allowed("POST", "/v1/messages/count_tokens", pats)
    assert allowed("GET", "/v1/models/claude-sonnet-4", pats)
    assert allowed("GET", "/api/claude_code/settings", pats)
    assert not allowed("POST", "/v1/messages/batches", pats)
    assert not allowed("GET", "/v1/files", pats)
    assert not allowed("GET", "/api/oauth/profile", pats)


def test_endpoints_are_allowed_per_method():
    pats = DEFAULT_ALLOWED_ENDPOINTS
    assert not allowed("GET", "/v1/messages", pats)
    assert not allowed("PUT", "/v1/messages", pats)
    assert not allowed("POST", "/v1/models", pats)
    assert not allowed("POST", "/api/claude_code/settings", pats)
    assert not allowed("DELETE", "/v1/models/x", pats)


@pytest.mark.parametrize(
    "entry, methods, pattern",
    [
        ("POST /v1/files", {"POST"}, "/v1/files"),
        ("get,post /v1/files*", {"GET", "POST"}, "/v1/files*"),
        ("/v1/messages", {"POST"}, "/v1/messages"),  # a known endpoint takes the API's method
        ("/v1/models*", {"GET"}, "/v1/models*"),
        ("/v1/organizations/*", {"GET"}, "/v1/organizations/*"),  # an unknown one: GET only
    ],
)
def test_endpoint_entries(entry, methods, pattern):
    e = Endpoint.parse(entry)
    assert e.methods == methods and e.pattern == pattern
