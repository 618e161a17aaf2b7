"""The ``[[issuers]]`` tables (gatehouse.identity.config): defaults, and every refusal naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatehouse.identity.config import IssuerConfig, parse_issuers
from gatehouse.policy.reader import PolicyError, Section


def parse(*tables: dict[str, Any]) -> tuple[IssuerConfig, ...]:
    return parse_issuers([Section(t, "p.toml", f"issuers[{i}]", Path("/etc/gatehouse")) for i, t in enumerate(tables)])


BASE = {"name": "corp", "issuer": "https://login.example.com", "audience": "gatehouse"}


def test_config_defaults() -> None:
    (cfg,) = parse(BASE)
    assert cfg.algorithms == ("RS256", "ES256", "EdDSA")
    assert cfg.key_source == "discovery"
    assert cfg.discovery_url == "https://login.example.com/.well-known/openid-configuration"
    assert cfg.audience == ("gatehouse",)
    assert cfg.subject_claim == "sub" and cfg.groups_claim == "groups" and cfg.user_claim is None
    assert cfg.leeway_seconds == 30


def test_config_full() -> None:
    (cfg,) = parse(
        {
            **BASE,
            "audience": ["a", "b"],
            "jwks_file": "keys/jwks.json",
            "algorithms": ["ES256"],
            "required_claims": {"repository_owner": "acme", "ref": ["refs/heads/main", "refs/heads/prod"]},
            "groups_claim": ["realm_access", "roles"],
            "static_groups": ["ci"],
            "user_claim": "email",
            "leeway_seconds": 5,
            "jwks_cache_seconds": 600,
        }
    )
    assert cfg.jwks_file == Path("/etc/gatehouse/keys/jwks.json")
    assert cfg.key_source == "jwks_file"
    assert cfg.required_claims == (("repository_owner", "acme"), ("ref", ("refs/heads/main", "refs/heads/prod")))
    assert cfg.groups_claim == ("realm_access", "roles")


@pytest.mark.parametrize(
    "table, key, words",
    [
        ({**BASE, "algorithms": ["none"]}, "issuers[0].algorithms[0]", "never"),
        ({**BASE, "algorithms": ["RS256", "NONE"]}, "issuers[0].algorithms[1]", "never"),
        ({**BASE, "algorithms": ["HS256"]}, "issuers[0].algorithms", "hmac_secret_env"),
        ({**BASE, "hmac_secret_env": "X"}, "issuers[0].hmac_secret_env", "no HMAC"),
        ({**BASE, "algorithms": ["RS1"]}, "issuers[0].algorithms[0]", "unsupported"),
        ({**BASE, "jwks_uri": "https://x/jwks", "jwks_file": "j.json"}, "issuers[0].jwks_file", "one key source"),
        ({**BASE, "jwks_uri": "http://idp.example.com/jwks"}, "issuers[0].jwks_uri", "https"),
        ({**BASE, "issuer": "corp-idp"}, "issuers[0].issuer", "jwks_uri or jwks_file"),
        (
            {**BASE, "algorithms": ["HS256"], "hmac_secret_env": "S", "jwks_file": "j.json"},
            "issuers[0].jwks_file",
            "never be used",
        ),
        ({**BASE, "audience": []}, "issuers[0].audience", "audience"),
        ({**BASE, "jwks_url": "https://x"}, "issuers[0].jwks_url", "unknown key"),
        ({**BASE, "name": "a b"}, "issuers[0].name", "letters"),
        ({**BASE, "required_claims": {"ref": {"x": 1}}}, "issuers[0].required_claims.ref", "expected"),
        ({**BASE, "leeway_seconds": -1}, "issuers[0].leeway_seconds", "at least"),
    ],
)
def test_config_errors(table: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse(table)
    assert info.value.key == key
    assert words in info.value.message
    assert str(info.value).startswith(f"p.toml: {key}: ")


def test_config_duplicate_names() -> None:
    with pytest.raises(PolicyError) as info:
        parse(BASE, {**BASE, "issuer": "https://other.example.com"})
    assert info.value.key == "issuers[1].name" and "duplicate" in info.value.message


def test_config_loopback_http_allowed() -> None:
    (cfg,) = parse({**BASE, "issuer": "http://127.0.0.1:9999"})
    assert cfg.key_source == "discovery"
