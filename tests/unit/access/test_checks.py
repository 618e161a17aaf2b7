"""Where a host's traffic goes (gatehouse.access.checks.route_host): the API host, passthrough hosts, refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.access.checks import HostRoute, route_host
from gatehouse.policy.loader import parse_policy


def policy(**gateway):
    return parse_policy({"gateway": gateway}, Path("p.toml"))


@pytest.mark.parametrize("host", ["api.anthropic.com", "API.anthropic.com", "api.anthropic.com."])
def test_the_api_host_is_intercepted(host):
    assert route_host(policy(), host) is HostRoute.API
    assert route_host(policy(other_hosts="passthrough", passthrough_hosts=["*"]), host) is HostRoute.API


@pytest.mark.parametrize(
    "host, route",
    [
        ("statsig.anthropic.com", HostRoute.PASSTHROUGH),
        ("STATSIG.anthropic.com.", HostRoute.PASSTHROUGH),
        ("o1.ingest.sentry.io", HostRoute.PASSTHROUGH),
        ("sentry.io", HostRoute.DENY),
        ("anthropic.com", HostRoute.DENY),
        ("example.org", HostRoute.DENY),
    ],
)
def test_passthrough_hosts_are_globs(host, route):
    p = policy(passthrough_hosts=["statsig.anthropic.com", "*.sentry.io"])
    assert route_host(p, host) is route


def test_other_hosts_passthrough_tunnels_every_other_host():
    assert route_host(policy(other_hosts="passthrough"), "example.org") is HostRoute.PASSTHROUGH
    assert route_host(policy(), "example.org") is HostRoute.DENY
