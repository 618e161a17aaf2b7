"""Loads the policy named by `gateway_policy` and applies the upstream override.

A bad policy raises `OptionsError` in `configure`: mitmdump logs it and, because an error
was logged during start-up, exits non-zero before serving anyone.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions

import gatehouse
from gatehouse.approvals import INTERNAL_HOST
from gatehouse.approvals.notify import Notifier
from gatehouse.approvals.service import ApprovalService
from gatehouse.approvals.store import ApprovalStore
from gatehouse.credentials.keys import MissingKey, read_key
from gatehouse.identity.verifier import TokenConfigError, TokenVerifier
from gatehouse.masking.fingerprints import FingerprintKeyError
from gatehouse.masking.masker import build_masker
from gatehouse.mitm.identity import IdentityAddon
from gatehouse.mitm.masking import Masking
from gatehouse.mitm.recorder import Recorder
from gatehouse.mitm.state import GatewayState
from gatehouse.policy.gateway import API_HOST, DEFAULT_UPSTREAM, validate_upstream
from gatehouse.policy.loader import Policy, load_policy
from gatehouse.policy.reader import PolicyError
from gatehouse.recording.stores import StoreError, open_store

log = logging.getLogger(__name__)

BODY_LIMIT_MARGIN = 1024 * 1024


class PolicyLoader:
    """Loads the policy and hands each feature addon its part of it."""

    def __init__(self, state: GatewayState, *, identity: IdentityAddon, masking: Masking, recorder: Recorder) -> None:
        self.state = state
        self.identity = identity
        self.masking = masking
        self.recorder = recorder

    def apply(self, policy: Policy) -> None:
        """Configure the feature addons; raises PolicyError or TokenConfigError."""
        verifier = TokenVerifier(policy.issuers) if policy.issuers else None
        # Clients CONNECT to the API host even when the upstream is overridden.
        # The approvals API's host is answered inside the tunnel too: a refusal there must be a
        # readable 401, not a bare 407.
        self.identity.configure_verifier(
            verifier, api_hosts={API_HOST, INTERNAL_HOST}, passthrough_hosts=set(policy.gateway.passthrough_hosts)
        )
        # One masker for the wire and the recorder's copy: the same rules and fingerprints.
        masker = build_masker(policy.masking, policy.gateway.state_dir)
        self.masking.configure_masker(masker, policy.masking)
        self.state.masker = masker  # log lines are masked with it too (gatehouse.mitm.logsafety)
        if masker is not None and masker.enabled:
            # The stream guard (which text can be released) is built on first use: ~20 ms, paid
            # here rather than by the first streamed answer.
            masker.scanner.stream_guard.live_start(b"warm up")
        assert policy.recording is not None
        # Last: it opens the store and the spool, and checks S3 Object Lock.
        self.recorder.configure_recording(
            policy.recording,
            state_dir=policy.gateway.state_dir,
            masker=masker,
            policy_sha256=policy.sha256,
            gateway_version=gatehouse.__version__,
        )
        self.state.approvals = self._approvals(policy)

    @staticmethod
    def _approvals(policy: Policy) -> ApprovalService | None:
        """The approvals store lives beside the records (same store, prefix ``approvals/``):
        replicas that share a store share approvals."""
        if not policy.uses_approvals:
            return None
        rec = policy.recording
        assert rec is not None
        try:
            store = open_store(
                rec.store,
                endpoint_url=rec.s3_endpoint_url,
                object_lock_mode=rec.object_lock_mode,
                kms_key_id=rec.kms_key_id,
            )
        except StoreError as e:
            raise PolicyError(
                policy.path, "approvals", f"the approvals store (the recording store) cannot be opened: {e}"
            ) from None
        return ApprovalService(
            ApprovalStore(store, retain_days=rec.retention_days if rec.object_lock_mode else None),
            policy.approvals,
            notifier=Notifier(policy.approvals.notify_url),
        )

    def load(self, loader) -> None:
        loader.add_option(
            "gateway_policy",
            str,
            "",
            "Path of the Gatehouse policy file (TOML). Required: the gateway refuses to start without one.",
        )
        loader.add_option(
            "gateway_upstream",
            str,
            "",
            "Base URL (http:// or https://) that replaces https://api.anthropic.com as the upstream "
            "for API traffic; wins over the policy's [gateway] upstream.",
        )

    def configure(self, updated: set[str]) -> None:
        if not ({"gateway_policy", "gateway_upstream", "stream_large_bodies"} & updated):
            return
        if getattr(ctx.options, "stream_large_bodies", None):
            # Streamed request bodies leave before any addon has seen them.
            raise exceptions.OptionsError(
                "Gatehouse inspects every API body: mitmproxy's stream_large_bodies must not be set "
                "(bodies over [gateway] max_body_bytes are refused instead)"
            )
        if not ctx.options.gateway_policy:
            raise exceptions.OptionsError("Gatehouse needs a policy: --set gateway_policy=policies/quickstart.toml")
        try:
            policy = load_policy(ctx.options.gateway_policy)
            upstream = policy.gateway.upstream
            if ctx.options.gateway_upstream:
                upstream = validate_upstream(ctx.options.gateway_upstream, "--set gateway_upstream", "gateway_upstream")
            self.apply(policy)
        except (PolicyError, TokenConfigError, FingerprintKeyError) as e:
            raise exceptions.OptionsError(str(e)) from None
        self.state.policy = policy
        self.state.upstream = urlsplit(upstream or DEFAULT_UPSTREAM)
        # Bounds the memory a body can take before any hook runs (a chunked body has no
        # Content-Length to check): past max_body_bytes plus a margin, mitmproxy itself cuts it.
        # Bodies between the two get the gateway's own 413 from Access.
        limit = str(policy.gateway.max_body_bytes + BODY_LIMIT_MARGIN)
        if getattr(ctx.options, "body_size_limit", limit) != limit:
            ctx.options.update(body_size_limit=limit)
        if ctx.options.connection_strategy != "lazy":
            # Eager connects upstream on CONNECT, before any check: an unauthenticated client
            # could open upstream connections at will, and with an upstream override it would
            # connect to api.anthropic.com for nothing.
            ctx.options.update(connection_strategy="lazy")
        for source in (policy.credentials.default, *policy.credentials.groups.values()):
            try:
                read_key(source)
            except MissingKey as e:
                # A warning, not an error: mitmdump would exit on an error logged at start-up,
                # and the key may be provided later (a file written by a secrets agent).
                log.warning(f"gatehouse: {e}; API requests get an api_error until it is configured")
        log.info(
            f"gatehouse: policy {policy.path} loaded (sha256 {policy.sha256[:12]}), upstream {upstream or DEFAULT_UPSTREAM}"
        )
