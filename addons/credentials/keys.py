"""The gateway-held Claude API key: which one applies to a caller, and reading it."""

from __future__ import annotations

import os
from collections.abc import Mapping

from gatehouse.credentials.config import KeySource
from gatehouse.exchange import Identity
from gatehouse.policy.loader import Policy


class MissingKey(Exception):
    """No key could be read from the configured source. The message names the source, never a value."""


def key_source_for(policy: Policy, identity: Identity | None) -> tuple[KeySource, str | None]:
    """The key source for this caller and the group whose override chose it (None: the default)."""
    if identity is not None and policy.credentials.groups:
        mine = set(identity.groups)
        for group, source in policy.credentials.groups.items():
            if group in mine:
                return source, group
    return policy.credentials.default, None


def read_key(source: KeySource, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    if source.env:
        value = environ.get(source.env, "").strip()
        if not value:
            raise MissingKey(f"the gateway has no Claude API key: environment variable {source.env} is not set")
        return value
    assert source.file is not None
    try:
        value = source.file.read_text().strip()
    except OSError as e:
        raise MissingKey(f"the gateway has no Claude API key: cannot read {source.file} ({e.strerror})") from None
    if not value:
        raise MissingKey(f"the gateway has no Claude API key: {source.file} is empty")
    return value
