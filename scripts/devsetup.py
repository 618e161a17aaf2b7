"""Start-up preparation for the quick start: the local development issuer's keys."""

from __future__ import annotations

from pathlib import Path

from gatehouse.cli.cmd_token import pick_dev_issuer
from gatehouse.identity.devissuer import ensure_dev_issuer
from gatehouse.policy.loader import Policy


def prepare_quickstart(policy: Policy, policy_path: Path, gateway: str) -> list[str]:
    """Create the dev issuer's key pair and JWKS if the policy trusts a local issuer.

    Returns lines telling the user how to get a token; nothing when the policy has none.
    """
    if not policy.issuers:
        return []
    try:
        cfg = pick_dev_issuer(policy.issuers, None)
    except ValueError:
        return []  # a real IdP: tokens come from it, not from `gatehouse token`
    ensure_dev_issuer(policy.gateway.state_dir, cfg.jwks_file)
    groups = ",".join(policy.groups) or "developers"
    return [
        "# the policy trusts the local development issuer: get a token, then point the shell at the gateway",
        f'TOKEN="$(gatehouse token --policy {policy_path} --sub "$USER" --groups {groups} --print)"',
        f'eval "$(gatehouse env --policy {policy_path} --gateway {gateway} --token "$TOKEN")"',
    ]
