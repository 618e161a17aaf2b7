"""The policy file: TOML, validated into one frozen `Policy`.

Each section is parsed by the feature that enforces it (``[gateway]``: gatehouse.policy.gateway,
``[[issuers]]``: gatehouse.identity.config, ``[groups]``: gatehouse.access.config,
``[credentials]``: gatehouse.credentials.config, ``[masking]``, ``[recording]``); this module
composes them and checks what spans sections. Every key the gateway does not know is refused
with the file and key path. A section this build does not enforce is refused too: a security
policy that is not enforced must not look enforced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gatehouse.access.config import GroupPolicy, parse_groups
from gatehouse.credentials.config import CredentialsPolicy, parse_credentials
from gatehouse.identity.config import IssuerConfig, parse_issuers
from gatehouse.masking.config import MaskingPolicy, parse_masking
from gatehouse.policy.gateway import GatewayPolicy, parse_gateway
from gatehouse.policy.reader import Section, read_toml
from gatehouse.recording.config import RecordingPolicy, parse_recording


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


def parse_policy(data: dict[str, Any], path: Path, raw: bytes = b"") -> Policy:
    root = Section(data, path, "", Path(path).resolve().parent)
    gateway = parse_gateway(root.section("gateway"))
    groups = parse_groups(root)
    credentials = parse_credentials(root.section("credentials"), set(groups))
    issuers = parse_issuers(root.sections("issuers"))
    if groups and not issuers:
        # Groups come from verified tokens; without an issuer nobody is in any group.
        raise root.error("groups", "groups need at least one [[issuers]] entry to take members from")

    masking = parse_masking(root.section("masking"))

    recording = parse_recording(root.section("recording"), base_dir=root.base_dir)

    # Tool-call rules and approvals are not built yet: refused until they are, so that a policy
    # written for them is never taken as enforced.
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
