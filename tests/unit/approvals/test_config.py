"""The ``[approvals]`` section (gatehouse.approvals.config)."""

from __future__ import annotations

import tomllib

import pytest

from gatehouse.approvals.config import ApprovalsPolicy, parse_approvals
from gatehouse.policy.reader import PolicyError, Section


def approvals(text: str) -> ApprovalsPolicy:
    root = Section(tomllib.loads(text), "p.toml")
    policy = parse_approvals(root.section("approvals"))
    return policy


def test_absent_section_gives_the_defaults():
    assert parse_approvals(None) == ApprovalsPolicy()
    p = ApprovalsPolicy()
    assert (p.mode, p.timeout_seconds, p.on_timeout, p.grant_seconds, p.approvals_required) == (
        "hold",
        300.0,
        "retry",
        3600.0,
        1,
    )


def test_every_key():
    p = approvals(
        "[approvals]\n"
        'approvers = ["sre", "security"]\nmode = "retry"\ntimeout_seconds = 540\non_timeout = "deny"\n'
        'grant_seconds = 600\napprovals_required = 2\nnotify_url = "https://hooks.slack.com/services/T/B/x"\n'
    )
    assert p == ApprovalsPolicy(
        approvers=("sre", "security"),
        mode="retry",
        timeout_seconds=540.0,
        on_timeout="deny",
        grant_seconds=600.0,
        approvals_required=2,
        notify_url="https://hooks.slack.com/services/T/B/x",
    )


def test_plain_http_webhook_only_to_this_machine():
    assert (
        approvals('[approvals]\nnotify_url = "http://127.0.0.1:9999/hook"\n').notify_url == "http://127.0.0.1:9999/hook"
    )


@pytest.mark.parametrize(
    "body, key, says",
    [
        ("timeout_seconds = 541", "approvals.timeout_seconds", "clients abandon it"),
        ("timeout_seconds = 0", "approvals.timeout_seconds", "more than 0"),
        ("timeout_seconds = -5", "approvals.timeout_seconds", "more than 0"),
        ("grant_seconds = 0", "approvals.grant_seconds", "more than 0"),
        ("approvals_required = 0", "approvals.approvals_required", "at least 1"),
        ('mode = "wait"', "approvals.mode", "'hold', 'retry'"),
        ('on_timeout = "allow"', "approvals.on_timeout", "'retry', 'deny'"),
        ('approvers = "sre"', "approvals.approvers", "an array of strings"),
        ('approvers = [""]', "approvals.approvers[0]", "must not be empty"),
        ('notify_url = "ftp://x/y"', "approvals.notify_url", "https://"),
        ('notify_url = "http://hooks.example.com/secret-path"', "approvals.notify_url", "https://"),
        ("aprovers = []", "approvals.aprovers", "unknown key"),
    ],
)
def test_refusals_name_the_key(body: str, key: str, says: str):
    with pytest.raises(PolicyError) as e:
        approvals(f"[approvals]\n{body}\n")
    assert e.value.file == "p.toml" and e.value.key == key
    assert says in e.value.message


def test_the_timeout_refusal_says_why():
    with pytest.raises(PolicyError) as e:
        approvals("[approvals]\ntimeout_seconds = 600\n")
    assert "600 s" in e.value.message and "300 s" in e.value.message and "retry" in e.value.message


def test_a_refused_webhook_url_is_not_repeated():
    # Its path may be the secret (Slack webhooks): policy errors are printed and logged.
    with pytest.raises(PolicyError) as e:
        approvals('[approvals]\nnotify_url = "http://hooks.example.com/T0/B0/s3cr3t"\n')
    assert "s3cr3t" not in str(e.value)
