"""The policy loader (gatehouse.policy.loader): defaults, paths, what spans sections, unsupported
sections, and `gatehouse policy check`. Each section's own checks are tested next to its parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gatehouse.policy.gateway import DEFAULT_ALLOWED_ENDPOINTS
from gatehouse.policy.loader import load_policy
from gatehouse.policy.reader import PolicyError

REPO = Path(__file__).resolve().parents[3]
ISSUER_TEXT = '[[issuers]]\nname = "corp"\nissuer = "https://login.example.com"\naudience = "gatehouse"\n\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.toml"
    p.write_text(text)
    return p


def test_defaults(tmp_path):
    policy = load_policy(write(tmp_path, ""))
    assert policy.gateway.allowed_endpoints == DEFAULT_ALLOWED_ENDPOINTS
    assert policy.gateway.max_body_bytes == 32 * 1024 * 1024
    assert policy.gateway.other_hosts == "deny"
    assert policy.gateway.state_dir == Path("~/.gatehouse").expanduser()
    assert policy.credentials.default.env == "ANTHROPIC_API_KEY"
    assert len(policy.sha256) == 64


def test_relative_paths_resolve_against_policy_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "p.toml"
    p.write_text('[gateway]\nstate_dir = "state"\n[credentials]\napi_key_file = "keys/claude.key"\n')
    policy = load_policy(p)
    assert policy.gateway.state_dir == tmp_path / "sub" / "state"
    assert policy.credentials.default.file == tmp_path / "sub" / "keys" / "claude.key"


@pytest.mark.parametrize(
    "text, key, message",
    [
        (
            '[[commands.rules]]\nid = "x"\ntool = "Bash"\naction = "approve"\nmessage = "m"\napprovers = ["sre"]\n',
            "commands.rules[0]",
            "needs at least one [[issuers]] entry",
        ),
        (
            ISSUER_TEXT + '[[commands.rules]]\nid = "x"\ntool = "Bash"\naction = "approve"\nmessage = "m"\n',
            "commands.rules[0]",
            "an approve rule needs approvers",
        ),
        (
            ISSUER_TEXT + '[[access.rules]]\nid = "x"\nmodels = ["claude-opus-*"]\naction = "approve"\n',
            "access.rules[0]",
            "an approve rule needs approvers",
        ),
        ("[approvals]\ntimeout_seconds = 600\n", "approvals.timeout_seconds", "540"),
        ("[wat]\n", "wat", "unknown key"),
        ("[gateway\n", "", "not valid TOML"),
        ('[groups.dev]\nmodels = ["claude-*"]\n', "groups", "at least one [[issuers]] entry"),
        (
            '[[issuers]]\nname = "corp"\nissuer = "https://login.example.com"\naudience = "gatehouse"\n'
            '[groups.dev]\n[credentials.groups.ops]\napi_key_env = "OPS_KEY"\n',
            "credentials.groups.ops",
            "group 'ops' is not defined in [groups]",
        ),
    ],
)
def test_refusals_name_file_and_key(tmp_path, text, key, message):
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    assert str(e.value).startswith(f"{path}: {key}: " if key else f"{path}: ")
    assert message in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.toml")


def test_shipped_policies_are_valid():
    for name in ("quickstart.toml", "reference.toml"):
        load_policy(REPO / "policies" / name)


def test_policy_check_cli(tmp_path):
    good = write(tmp_path, "")
    r = subprocess.run(
        [sys.executable, "-m", "gatehouse.cli.main", "policy", "check", str(good)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nmax_body_bytes = -5\n")
    r = subprocess.run(
        [sys.executable, "-m", "gatehouse.cli.main", "policy", "check", str(bad)], capture_output=True, text=True
    )
    assert r.returncode == 1
    assert f"{bad}: gateway.max_body_bytes: must be at least 1024" in r.stderr
