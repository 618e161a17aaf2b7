"""The policy file: TOML, validated into frozen dataclasses.

Every key the gateway reads is read here (or by a section parser this module calls), and
every key it does not know is refused with the file and key path. A section this build does
not enforce is refused too: a security policy that is not enforced must not look enforced.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

from gatehouse.access.endpoints import Endpoint, EndpointSyntaxError
from gatehouse.policy.reader import PolicyError, Section, read_toml
from gatehouse.recording.config import RecordingPolicy, parse_recording
from gatehouse.masking.rules import MaskingPolicy, parse_masking
from gatehouse.identity.tokens import IssuerConfig, parse_issuers

API_HOST = "api.anthropic.com"
DEFAULT_UPSTREAM = f"https://{API_HOST}"
# What Claude Code and the SDKs need; every other method and path is refused unless the
# policy opens it (docs/security.md).
DEFAULT_ENDPOINT_ENTRIES = (
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "GET /v1/models*",
    "GET /api/claude_code/*",
    # Claude Code's own calls when nonessential traffic is on: feature flags, bootstrap,
    # the MCP registry and event logging (observed from 2.1.197). Their JSON bodies are
    # scanned like any other.
    "GET /api/claude_cli/*",
    "GET /api/claude_code_penguin_mode",
    "GET /mcp-registry/*",
    "POST /api/eval/*",
    "POST /api/event_logging/*",
)
DEFAULT_ALLOWED_ENDPOINTS = tuple(Endpoint.parse(e) for e in DEFAULT_ENDPOINT_ENTRIES)
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # the API's own request size limit
DEFAULT_STATE_DIR = "~/.gatehouse"


@dataclass(frozen=True)
class GatewayPolicy:
    upstream: str | None = None
    state_dir: Path = Path(DEFAULT_STATE_DIR).expanduser()
    other_hosts: str = "deny"
    passthrough_hosts: tuple[str, ...] = ()
    allowed_endpoints: tuple[Endpoint, ...] = DEFAULT_ALLOWED_ENDPOINTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True)
class KeySource:
    """Where the gateway's Claude API key comes from: an environment variable or a file."""

    env: str | None = None
    file: Path | None = None

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"


@dataclass(frozen=True)
class CredentialsPolicy:
    default: KeySource = KeySource(env="ANTHROPIC_API_KEY")
    # Per-group overrides, in policy order: the first group of the caller's that has one wins.
    groups: Mapping[str, KeySource] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class GroupPolicy:
    name: str
    models: tuple[str, ...] = ("*",)
    endpoints: tuple[Endpoint, ...] | None = None  # None: the gateway's allowed_endpoints

    def allows_model(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, p) for p in self.models)


@dataclass(frozen=True)
class Policy:
    path: Path
    sha256: str
    gateway: GatewayPolicy
    credentials: CredentialsPolicy
    groups: Mapping[str, GroupPolicy]
    issuers: tuple[IssuerConfig, ...] = ()
    masking: MaskingPolicy | None = None
    recording: RecordingPolicy | None = None


def validate_upstream(value: str, file: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyError(file, key, f"must be an http:// or https:// base URL; got {value!r}")
    if parts.query or parts.fragment:
        raise PolicyError(file, key, "must not have a query or fragment")
    return value.rstrip("/")


def _parse_endpoints(sec: Section, key: str, default: tuple[str, ...] | None) -> tuple[Endpoint, ...] | None:
    entries = sec.str_list(key, default)
    if entries is None:
        return None
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(Endpoint.parse(entry))
        except EndpointSyntaxError as e:
            raise PolicyError(sec.file, f"{sec.key_path(key)}[{i}]", str(e)) from None
    return tuple(out)


def _parse_gateway(sec: Section | None) -> GatewayPolicy:
    if sec is None:
        return GatewayPolicy()
    upstream = sec.str("upstream", None)
    if upstream is not None:
        upstream = validate_upstream(upstream, sec.file, sec.key_path("upstream"))
    endpoints = _parse_endpoints(sec, "allowed_endpoints", DEFAULT_ENDPOINT_ENTRIES)
    assert endpoints is not None
    g = GatewayPolicy(
        upstream=upstream,
        state_dir=sec.path_value("state_dir", Path(DEFAULT_STATE_DIR).expanduser()),
        other_hosts=sec.str("other_hosts", "deny", choices=("deny", "passthrough")),
        passthrough_hosts=tuple(h.lower() for h in sec.str_list("passthrough_hosts", ())),
        allowed_endpoints=endpoints,
        max_body_bytes=sec.int("max_body_bytes", DEFAULT_MAX_BODY_BYTES, min=1024),
    )
    sec.done()
    return g


def _parse_key_source(sec: Section, default: KeySource | None) -> KeySource:
    env = sec.str("api_key_env", None)
    file = sec.path_value("api_key_file", None)
    if env and file:
        raise sec.error("api_key_file", "set either api_key_env or api_key_file, not both")
    if env:
        return KeySource(env=env)
    if file:
        return KeySource(file=file)
    if default is None:
        raise sec.error("", "needs api_key_env or api_key_file")
    return default


def _parse_credentials(sec: Section | None, group_names: set[str]) -> CredentialsPolicy:
    if sec is None:
        return CredentialsPolicy()
    default = _parse_key_source(sec, KeySource(env="ANTHROPIC_API_KEY"))
    overrides: dict[str, KeySource] = {}
    for name, gsec in sec.named_sections("groups").items():
        if group_names and name not in group_names:
            raise gsec.error("", f"group {name!r} is not defined in [groups]")
        overrides[name] = _parse_key_source(gsec, None)
        gsec.done()
    sec.done()
    return CredentialsPolicy(default=default, groups=MappingProxyType(overrides))


def _parse_groups(root: Section, allowed_endpoints: tuple[str, ...]) -> dict[str, GroupPolicy]:
    groups = {}
    for name, gsec in root.named_sections("groups").items():
        endpoints = _parse_endpoints(gsec, "endpoints", None)
        groups[name] = GroupPolicy(name=name, models=gsec.str_list("models", ("*",)), endpoints=endpoints)
        gsec.done()
    return groups


def parse_policy(data: dict[str, Any], path: Path, raw: bytes = b"") -> Policy:
    root = Section(data, path, "", Path(path).resolve().parent)
    gateway = _parse_gateway(root.section("gateway"))
    groups = _parse_groups(root, gateway.allowed_endpoints)
    credentials = _parse_credentials(root.section("credentials"), set(groups))

    # Sections whose parsers live with the feature that enforces them.
    issuers = parse_issuers(root.sections("issuers"))
    if groups and not issuers:
        # Groups come from verified tokens; without an issuer nobody is in any group.
        raise root.error("groups", "groups need at least one [[issuers]] entry to take members from")

    masking = parse_masking(root.section("masking"))

    recording = parse_recording(root.section("recording"), base_dir=root.base_dir)

    # Tool-call rules and approvals are designed (DESIGN.md) but not built in this version.
    root.unsupported("commands")
    root.unsupported("approvals")
    root.done()
    return Policy(
        path=Path(path),
        sha256=hashlib.sha256(raw).hexdigest(),
        gateway=gateway,
        credentials=credentials,
        groups=MappingProxyType(groups),
        issuers=issuers,
        masking=masking,
        recording=recording,
    )


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raises `PolicyError` naming the file and key."""
    data, raw = read_toml(Path(path))
    return parse_policy(data, Path(path), raw)
