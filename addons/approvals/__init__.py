"""Approvals: a human's yes or no on a tool call or an access request, shared through the store.

A rule that says ``approve`` files an approval request (`service.ApprovalService.request`); an
approver in one of the rule's approver groups decides it through the gateway's own API
(`api`, served on `INTERNAL_HOST`, used by `gatehouse approvals`); the flow that asked waits for
the decision (mode ``hold``) or the identical call passes once later (mode ``retry``). Every
object is write-once in the recording store under ``approvals/`` (`store`), so replicas that
share a store share approvals. `config` parses ``[approvals]``, `model` holds the documents,
`notify` announces requests (a log line and a Slack-compatible webhook).

Pure core: no mitmproxy here (the adapters are `gatehouse.mitm.approvals` and `.commands`).
"""

from __future__ import annotations

# The reserved host of the approvals API: answered by the gateway itself, never sent upstream.
INTERNAL_HOST = "gatehouse.internal"
# The header a request's session id comes from (Claude Code's), kept with an approval request.
SESSION_HEADER = "x-claude-code-session-id"
