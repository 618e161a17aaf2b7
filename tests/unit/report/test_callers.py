"""Clients and identities as the report names them, and which are CI jobs."""

from __future__ import annotations

from gatehouse.report.callers import describe_client, describe_identity


def test_client_descriptions() -> None:
    d = describe_client
    assert d({"user_agent": "claude-cli/2.1.197 (external, cli)", "app": "cli"})["label"] == "Claude Code 2.1.197"
    gha = d({"user_agent": "claude-cli/1.0.80 (external, claude-code-github-action)"})
    assert gha["label"] == "Claude Code 1.0.80 (GitHub Action)" and gha["ci"]
    assert d({"user_agent": "claude-cli/2.0.1 (external, sdk-ts)"})["label"] == "Claude Code 2.0.1 (TypeScript SDK)"
    assert d({"user_agent": "Anthropic/Python 0.69.0"})["label"] == "Python SDK 0.69.0"
    assert d({"user_agent": "Anthropic/JS 0.60.0"})["label"] == "TypeScript SDK 0.60.0"
    assert d({"user_agent": "curl/8.0"})["kind"] == "other"


def test_ci_identities() -> None:
    gha = describe_identity(
        {
            "issuer": "https://token.actions.githubusercontent.com",
            "subject": "repo:acme/api:ref:refs/heads/main",
            "groups": [],
        }
    )
    assert gha["ci"] and gha["label"] == "repo:acme/api:ref:refs/heads/main"
    assert describe_identity({"issuer": "https://idp", "subject": "svc", "groups": ["ci"]})["ci"]
    assert not describe_identity({"issuer": "https://idp", "subject": "alice", "groups": ["dev"]})["ci"]
