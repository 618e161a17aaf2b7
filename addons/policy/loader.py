"""The policy file: TOML, validated into one frozen `Policy`.

Each section is parsed by the feature that enforces it (``[gateway]``: gatehouse.policy.gateway,
``[[issuers]]``: gatehouse.identity.config, ``[groups]``: gatehouse.access.config,
``[credentials]``: gatehouse.credentials.config, ``[masking]``, ``[recording]``,
``[commands]``: gatehouse.commands.config, ``[approvals]``: gatehouse.approvals.config,
``[[access.rules]]``: gatehouse.access.rules); this module composes them and checks what spans
sections (an approve rule needs approvers and an issuer to know people by). Every key the
gateway does not know is refused with the file and key path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gatehouse.access.config import GroupPolicy, parse_groups
from gatehouse.access.rules import AccessRule, parse_access_rules
from gatehouse.approvals.config import ApprovalsPolicy, parse_approvals
from gatehouse.commands.config import CommandsPolicy, parse_commands
from gatehouse.credentials.config import CredentialsPolicy, parse_credentials
from gatehouse.identity.config import IssuerConfig, parse_issuers
from gatehouse.masking.config import MaskingPolicy, parse_masking
from gatehouse.policy.gateway import GatewayPolicy, parse_gateway
from gatehouse.policy.reader import PolicyError, Section, read_toml
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
    commands: CommandsPolicy | None = None
    approvals: ApprovalsPolicy = ApprovalsPolicy()
    access_rules: tuple[AccessRule, ...] = ()

    @property
    def uses_approvals(self) -> bool:
        """Whether some rule can ask a human: the gateway then runs the approvals store and API."""
        if self.access_rules:
            return True
        c = self.commands
        return c is not None and (c.default == "approve" or any(r.action == "approve" for r in c.rules))


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

    approvals_sec = root.section("approvals")
    approvals = parse_approvals(approvals_sec)
    commands = parse_commands(root.section("commands"))
    access_rules = parse_access_rules(root)
    _check_approvers(root, approvals, commands, access_rules, has_issuers=bool(issuers))
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
        commands=commands,
        approvals=approvals,
        access_rules=access_rules,
    )


def _check_approvers(
    root: Section,
    approvals: ApprovalsPolicy,
    commands: CommandsPolicy | None,
    access_rules: tuple[AccessRule, ...],
    *,
    has_issuers: bool,
) -> None:
    """Every rule that can ask a human must name who decides, and people must be known by a
    verified token: without an issuer nobody could approve, nor be told apart from another."""
    asking: list[tuple[str, tuple[str, ...] | None]] = []
    if commands is not None:
        for i, r in enumerate(commands.rules):
            if r.action == "approve":
                where = f"commands.rules[{i}]" if r.source == "policy" else f"commands.packs ({r.source}, rule {r.id})"
                asking.append((where, r.approvers))
            if r.groups and not has_issuers:
                raise root.error(
                    f"commands.rules[{i}].groups",
                    "rule groups need at least one [[issuers]] entry to take members from",
                )
        if commands.default == "approve":
            asking.append(("commands.default", None))
    for i, a in enumerate(access_rules):
        asking.append((f"access.rules[{i}]", a.approvers))
    for where, approvers in asking:
        if not has_issuers:
            raise PolicyError(
                root.file,
                where,
                "an approve rule needs at least one [[issuers]] entry: approvers and requesters "
                "are known by their verified tokens",
            )
        if not (approvers or approvals.approvers):
            raise PolicyError(
                root.file, where, "an approve rule needs approvers: set `approvers` on the rule or in [approvals]"
            )


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raises `PolicyError` naming the file and key."""
    data, raw = read_toml(Path(path))
    return parse_policy(data, Path(path), raw)
