"""State shared by the addons of one gateway: the loaded policy and the effective upstream."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from gatehouse.approvals.service import ApprovalService
from gatehouse.masking.masker import Masker
from gatehouse.policy.gateway import DEFAULT_UPSTREAM
from gatehouse.policy.loader import Policy


@dataclass
class GatewayState:
    policy: Policy | None = None
    upstream: SplitResult = urlsplit(DEFAULT_UPSTREAM)
    # The policy's masker (None: masking off), shared by every addon that scans what it passes
    # (log redaction, gatehouse.mitm.logsafety, masks every log line with it too).
    masker: Masker | None = None
    # The approvals store and waiters (None: no rule of the policy asks a human), shared by the
    # commands adapter (holds tool calls), Access (just-in-time grants) and the approvals API.
    approvals: ApprovalService | None = None

    def require_policy(self) -> Policy:
        if self.policy is None:
            raise RuntimeError("the gateway policy is not loaded")
        return self.policy
