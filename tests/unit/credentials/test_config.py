"""The ``[credentials]`` section (gatehouse.credentials.config): the default key source and group overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gatehouse.credentials.config import CredentialsPolicy, KeySource, parse_credentials
from gatehouse.policy.reader import PolicyError, Section


def credentials_section(text: str) -> Section | None:
    return Section(tomllib.loads(text), "/etc/gatehouse/p.toml").section("credentials")


def test_absent_section_reads_anthropic_api_key():
    assert parse_credentials(None, set()) == CredentialsPolicy()
    assert CredentialsPolicy().default == KeySource(env="ANTHROPIC_API_KEY")


def test_default_and_group_overrides_in_policy_order():
    creds = parse_credentials(
        credentials_section(
            '[credentials]\napi_key_file = "keys/claude.key"\n'
            '[credentials.groups.sre]\napi_key_env = "SRE_KEY"\n[credentials.groups.ci]\napi_key_file = "/run/ci.key"\n'
        ),
        {"sre", "ci", "developers"},
    )
    assert creds.default == KeySource(file=Path("/etc/gatehouse/keys/claude.key"))
    assert list(creds.groups.items()) == [
        ("sre", KeySource(env="SRE_KEY")),
        ("ci", KeySource(file=Path("/run/ci.key"))),
    ]
    assert creds.default.describe() == "file /etc/gatehouse/keys/claude.key"
    assert creds.groups["sre"].describe() == "environment variable SRE_KEY"


def test_without_a_source_the_default_stays():
    creds = parse_credentials(credentials_section("[credentials]\n"), set())
    assert creds.default == KeySource(env="ANTHROPIC_API_KEY")


@pytest.mark.parametrize(
    "text, groups, key, message",
    [
        ('[credentials]\napi_key_env = "A"\napi_key_file = "f"\n', set(), "credentials.api_key_file", "not both"),
        ("[credentials.groups.sre]\n", {"sre"}, "credentials.groups.sre", "needs api_key_env or api_key_file"),
        (
            '[credentials.groups.ops]\napi_key_env = "OPS_KEY"\n',
            {"sre"},
            "credentials.groups.ops",
            "group 'ops' is not defined in [groups]",
        ),
        ('[credentials]\napi_key = "sk-ant-x"\n', set(), "credentials.api_key", "unknown key"),
        (
            '[credentials.groups.sre]\napi_key_env = "K"\nextra = 1\n',
            {"sre"},
            "credentials.groups.sre.extra",
            "unknown key",
        ),
    ],
)
def test_refusals_name_file_and_key(text, groups, key, message):
    with pytest.raises(PolicyError) as e:
        parse_credentials(credentials_section(text), groups)
    assert str(e.value).startswith(f"/etc/gatehouse/p.toml: {key}: ")
    assert message in str(e.value)
