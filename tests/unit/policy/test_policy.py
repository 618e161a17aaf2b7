"""The policy loader: defaults, validation messages naming file and key, unsupported sections."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gatehouse.access.endpoints import Endpoint, allowed
from gatehouse.policy.loader import DEFAULT_ALLOWED_ENDPOINTS, load_policy
from gatehouse.policy.reader import PolicyError

REPO = Path(__file__).resolve().parents[3]


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


@pytest.mark.parametrize("text, key, message", [
    ('[gateway]\nmax_body_bytes = "big"\n', "gateway.max_body_bytes", "expected an integer, got a string"),
    ('[gateway]\nother_hosts = "allow"\n', "gateway.other_hosts", "must be one of 'deny', 'passthrough'"),
    ('[gateway]\nupstream = "ftp://x"\n', "gateway.upstream", "http:// or https://"),
    ('[gateway]\nallowed_endpoints = ["v1/messages"]\n', "gateway.allowed_endpoints[0]", "must start with '/'"),
    ('[gateway]\nlisten = 1\n', "gateway.listen", "unknown key"),
    ('[credentials]\napi_key_env = "A"\napi_key_file = "f"\n', "credentials.api_key_file", "not both"),
    ('[[commands.rules]]\nid = "x"\n', "commands", "not supported by this version"),
    ('[approvals]\napprovers = ["sre"]\n', "approvals", "not supported by this version"),
    ('[wat]\n', "wat", "unknown key"),
    ('[gateway\n', "", "not valid TOML"),
])
def test_refusals_name_file_and_key(tmp_path, text, key, message):
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    assert str(e.value).startswith(f"{path}: {key}: " if key else f"{path}: ")
    assert message in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.toml")


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


@pytest.mark.parametrize("entry, methods, pattern", [
    ("POST /v1/files", {"POST"}, "/v1/files"),
    ("get,post /v1/files*", {"GET", "POST"}, "/v1/files*"),
    ("/v1/messages", {"POST"}, "/v1/messages"),        # a known endpoint takes the API's method
    ("/v1/models*", {"GET"}, "/v1/models*"),
    ("/v1/organizations/*", {"GET"}, "/v1/organizations/*"),  # an unknown one: GET only
])
def test_endpoint_entries(entry, methods, pattern):
    e = Endpoint.parse(entry)
    assert e.methods == methods and e.pattern == pattern


@pytest.mark.parametrize("entry, message", [
    ("FETCH /v1/x", "unknown HTTP method FETCH"),
    ("POST v1/x", "must start with '/'"),
])
def test_bad_endpoint_entries_name_the_key(tmp_path, entry, message):
    path = write(tmp_path, f'[gateway]\nallowed_endpoints = ["/v1/messages", "{entry}"]\n')
    with pytest.raises(PolicyError) as e:
        load_policy(path)
    assert "gateway.allowed_endpoints[1]" in str(e.value) and message in str(e.value)


def test_shipped_policies_are_valid():
    for name in ("quickstart.toml", "reference.toml"):
        load_policy(REPO / "policies" / name)


def test_policy_check_cli(tmp_path):
    good = write(tmp_path, "")
    r = subprocess.run([sys.executable, "-m", "gatehouse.cli.main", "policy", "check", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nmax_body_bytes = -5\n')
    r = subprocess.run([sys.executable, "-m", "gatehouse.cli.main", "policy", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{bad}: gateway.max_body_bytes: must be at least 1024" in r.stderr
