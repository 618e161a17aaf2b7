"""The host matcher (gatehouse.common.hosts) that every feature uses for the policy's host lists."""

from __future__ import annotations

import pytest

from gatehouse.common.hosts import host_matches, normalise_host


@pytest.mark.parametrize(
    "host, expected",
    [
        ("api.anthropic.com", "api.anthropic.com"),
        ("API.Anthropic.COM", "api.anthropic.com"),
        ("api.anthropic.com.", "api.anthropic.com"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_normalise_host(host, expected):
    assert normalise_host(host) == expected


@pytest.mark.parametrize(
    "host, patterns, expected",
    [
        # A name without glob characters matches that one name, in any case, with or without the root dot.
        ("statsig.anthropic.com", ["statsig.anthropic.com"], True),
        ("Statsig.Anthropic.com.", ["statsig.anthropic.com"], True),
        ("statsig.anthropic.com", ["STATSIG.anthropic.com."], True),
        ("anthropic.com", ["statsig.anthropic.com"], False),
        ("evil-statsig.anthropic.com", ["statsig.anthropic.com"], False),
        # "*.suffix": every name under the suffix (`*` crosses dots), never the suffix itself.
        ("o1.ingest.sentry.io", ["*.sentry.io"], True),
        ("x.sentry.io", ["*.sentry.io"], True),
        ("sentry.io", ["*.sentry.io"], False),
        ("evilsentry.io", ["*.sentry.io"], False),
        ("sentry.io.evil.com", ["*.sentry.io"], False),
        # Other globs, as the policy reference says: `?`, `[...]`, `*` anywhere.
        ("registry-1.example", ["registry-?.example"], True),
        ("statsig2.anthropic.com", ["statsig*.anthropic.com"], True),
        ("anything.example", ["*"], True),
        # Several patterns: any one; none: nothing matches.
        ("github.com", ["*.sentry.io", "github.com"], True),
        ("github.com", [], False),
    ],
)
def test_host_matches(host, patterns, expected):
    assert host_matches(host, patterns) is expected
