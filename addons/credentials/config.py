"""The policy's ``[credentials]`` section: where the gateway's Claude API key comes from.

One default source (``api_key_env`` or ``api_key_file``; ``ANTHROPIC_API_KEY`` when the
section is absent) and per-group overrides in ``[credentials.groups.NAME]``. Only where a key
is read from is configured here; reading it is `gatehouse.credentials.keys`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gatehouse.policy.reader import Section


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


def parse_credentials(sec: Section | None, group_names: set[str]) -> CredentialsPolicy:
    """The ``[credentials]`` section; a group override must name a group of ``[groups]`` (when there are any)."""
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
