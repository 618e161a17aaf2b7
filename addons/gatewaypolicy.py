"""Loads the policy named by `gateway_policy` and applies the upstream override.

A bad policy raises `OptionsError` in `configure`: mitmdump logs it and, because an error
was logged during start-up, exits non-zero before serving anyone (DESIGN.md).
"""

from __future__ import annotations

import logging
from typing import Callable
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions

from addons.core.policy import DEFAULT_UPSTREAM, Policy, load_policy, validate_upstream
from addons.core.policyfile import PolicyError
from addons.state import GatewayState

log = logging.getLogger(__name__)


class PolicyLoader:
    def __init__(self, state: GatewayState, on_policy: list[Callable[[Policy], None]] | None = None) -> None:
        self.state = state
        # Called in order with each newly loaded policy, to configure the other addons.
        self.on_policy = on_policy or []

    def load(self, loader) -> None:
        loader.add_option(
            "gateway_policy", str, "",
            "Path of the Gatehouse policy file (TOML). Required: the gateway refuses to start without one.",
        )
        loader.add_option(
            "gateway_upstream", str, "",
            "Base URL (http:// or https://) that replaces https://api.anthropic.com as the upstream "
            "for API traffic; wins over the policy's [gateway] upstream.",
        )

    def configure(self, updated: set[str]) -> None:
        if not ({"gateway_policy", "gateway_upstream"} & updated):
            return
        if not ctx.options.gateway_policy:
            raise exceptions.OptionsError(
                "Gatehouse needs a policy: --set gateway_policy=policies/quickstart.toml"
            )
        try:
            policy = load_policy(ctx.options.gateway_policy)
            upstream = policy.gateway.upstream
            if ctx.options.gateway_upstream:
                upstream = validate_upstream(ctx.options.gateway_upstream, "--set gateway_upstream", "gateway_upstream")
            for hook in self.on_policy:
                hook(policy)
        except PolicyError as e:
            raise exceptions.OptionsError(str(e)) from None
        self.state.policy = policy
        self.state.upstream = urlsplit(upstream or DEFAULT_UPSTREAM)
        self.state.upstream_overridden = upstream is not None
        if upstream is not None and ctx.options.connection_strategy != "lazy":
            # Eager would connect to api.anthropic.com on CONNECT; the override goes elsewhere.
            ctx.options.update(connection_strategy="lazy")
        log.info(f"gatehouse: policy {policy.path} loaded (sha256 {policy.sha256[:12]}), upstream {upstream or DEFAULT_UPSTREAM}")
