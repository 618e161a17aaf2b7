"""Commands: every tool call the model proposes is judged once, after masking, before the client
sees it: allowed, blocked (replaced by a notice), or held for an approver.

The rules are the pure core's (`gatehouse.commands`), the rewriting of a response is
`gatehouse.wire.toolcalls` (buffered) and the SSE pipeline's judge hook (streamed), and the
approvals are `gatehouse.approvals.service`. This addon decides which path a response takes:

- `request`: when an `approve` rule can apply to the caller, the response is buffered
  (`Exchange.buffer_response`): mitmproxy's stream modifier is synchronous, so only a buffered
  response can wait for a human. Every other caller keeps streaming.
- `responseheaders` (after Masking created the stream pipeline): the pipeline gets the judge,
  which allows or blocks each tool_use as it completes.
- `response` (after Masking masked the buffered body): each tool_use block is judged; a block
  rule replaces it; an approve rule files an approval request and, in mode ``hold``, waits for
  the decision (other flows go on), in mode ``retry`` replaces the call by a notice carrying the
  approval id at once. An identical call approved before passes once (the grant is claimed).

Each verdict is a ``Decision("commands", ...)`` and each answer of a human a
``Decision("approvals", ...)`` on the Exchange, in the shape the report renders.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from gatehouse.approvals import SESSION_HEADER
from gatehouse.approvals.model import ApprovalRequest, Status
from gatehouse.commands import notices
from gatehouse.commands.judge import Verdict, call_sha256, judge_call, may_need_approval
from gatehouse.exchange import Exchange
from gatehouse.mitm.flowutil import exchange_of, fail_closed, off_loop, refuse
from gatehouse.mitm.state import GatewayState
from gatehouse.wire import apierrors, bodies, toolcalls
from gatehouse.wire.pipeline import SsePipeline

log = logging.getLogger(__name__)

# Judging splits a command into pieces and runs every rule on each: well under a millisecond
# for a normal command, ~9 ms for a 16 KB heredoc, up to seconds for a hostile 100 KB one
# (`benchmarks/command_rules.py`). Inputs larger than this are judged on a worker thread in
# buffered responses (a stream's judge runs inside mitmproxy's stream modifier and cannot be
# moved off the event loop).
OFFLOAD_INPUT_CHARS = 4 * 1024


def _person(p: dict[str, Any] | None) -> str:
    if not p:
        return "an approver"
    return str(p.get("email") or p.get("subject") or "an approver")


def _approve_cli(approval_id: str) -> str:
    return f"gatehouse approvals approve {approval_id}"


def _tool_calls(media: str, raw: bytes) -> tuple[dict | None, list[tuple[int, dict]]] | None:
    """The tool_use blocks of a buffered 2xx body: (None, calls) for an SSE body, (message,
    calls) for a JSON message, None for a body that holds no message (count_tokens, a list).
    Any JSON object with a `content` list counts as a message: the SDKs do not check `type`.
    Raises ValueError for a body that cannot be read."""
    if media == "text/event-stream":
        calls = toolcalls.sse_tool_uses(raw)
        return (None, calls) if calls else None
    if not raw:
        return None
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("content"), list):
        return None
    calls = toolcalls.tool_use_blocks(doc)
    return (doc, calls) if calls else None


@dataclass
class _Pending:
    """An approve verdict on one tool_use of a buffered response, waiting for its decision."""

    index: int
    block: dict[str, Any]
    verdict: Verdict
    request: ApprovalRequest
    mode: str


class Commands:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    # -- which flows --------------------------------------------------------------------------
    def _judged(self, flow: http.HTTPFlow) -> bool:
        """Messages API flows the policy has command rules for (refusals and passthrough aside)."""
        if self.state.policy is None or self.state.policy.commands is None:
            return False
        ex = exchange_of(flow)
        return not ex.refused and not ex.passthrough and bodies.is_message_endpoint(flow.request.path)

    @staticmethod
    def _groups(ex: Exchange) -> tuple[str, ...]:
        return ex.identity.groups if ex.identity is not None else ()

    # -- hooks --------------------------------------------------------------------------------
    @fail_closed("commands")
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not self._judged(flow):
            return
        commands = self.state.require_policy().commands
        assert commands is not None
        ex = exchange_of(flow)
        if self.state.approvals is not None and may_need_approval(commands, self._groups(ex)):
            ex.buffer_response = True

    @fail_closed("commands")
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None or not self._judged(flow):
            return
        if isinstance(resp.stream, SsePipeline):
            resp.stream.judge_tool_use = self._stream_judge(flow)

    def _stream_judge(self, flow: http.HTTPFlow) -> toolcalls.Judge:
        """The judge of a streamed response: rules only (no approve rule applies to this caller,
        else the response would have been buffered); runs inside the stream modifier."""
        ex = exchange_of(flow)

        def judge(index: int, block: dict[str, Any]) -> dict[str, Any] | None:
            verdict = self._verdict(ex, block)
            if verdict.action == "allow":
                self._record_verdict(ex, block, verdict)
                return None
            if verdict.action == "approve":
                # Cannot be waited for here; never let it through unapproved.
                log.error("gatehouse: an approve verdict in a streamed response; blocked instead")
                verdict = Verdict("block", verdict.rule, verdict.message, verdict.matched)
            return self._block(ex, block, verdict)

        return judge

    @fail_closed("commands")
    async def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None or not self._judged(flow) or resp.stream:
            return  # a streamed response was judged by its pipeline
        if not 200 <= resp.status_code < 300:
            return  # the SDKs read a message only from a 2xx; an error body carries no call
        try:
            raw = resp.get_content(strict=True) or b""
        except ValueError:
            raw = None  # a Content-Encoding nobody here can decode: never forwarded unjudged
        media = bodies.media_type(resp.headers.get("content-type", ""))
        try:
            if raw is None:
                raise ValueError("undecodable")
            found = await off_loop(len(raw), _tool_calls, media, raw)
        except ValueError:
            refuse(
                flow,
                apierrors.api_error("Gatehouse could not read the tool calls of this response; it was not sent."),
                "commands",
                rule="unreadable_response",
            )
            return
        if found is None:
            return
        doc, calls = found
        replacements = await self._judge_buffered(flow, calls)
        if not replacements:
            return
        if doc is None:
            resp.content = toolcalls.replace_in_sse(raw, replacements)
        else:
            resp.content = bodies.encode_json(toolcalls.replace_in_message(doc, replacements))

    # -- verdicts -----------------------------------------------------------------------------
    def _verdict(self, ex: Exchange, block: dict[str, Any]) -> Verdict:
        commands = self.state.require_policy().commands
        assert commands is not None
        return judge_call(commands, str(block.get("name", "")), block.get("input", {}), self._groups(ex))

    @staticmethod
    def _call_detail(block: dict[str, Any], *, removed: bool) -> dict[str, Any]:
        detail: dict[str, Any] = {"tool_use_id": block.get("id"), "tool": block.get("name")}
        if removed:
            detail["input"] = block.get("input")  # masked already: judged after masking
        return detail

    def _record_verdict(self, ex: Exchange, block: dict[str, Any], verdict: Verdict, **extra: Any) -> None:
        rule = verdict.rule.id if verdict.rule is not None else "default"
        removed = verdict.action == "block"
        reason = verdict.message or ("allowed by rule" if verdict.rule is not None else "allowed by [commands] default")
        ex.decide("commands", verdict.action, reason, rule=rule, **self._call_detail(block, removed=removed), **extra)

    def _block(self, ex: Exchange, block: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
        self._record_verdict(ex, block, verdict)
        rule_id = verdict.rule.id if verdict.rule is not None else None
        name, tool_input = str(block.get("name", "")), block.get("input", {})
        log.info(f"gatehouse: blocked a {name} call (rule {rule_id or 'default'}) in exchange {ex.exchange_id}")
        return notices.replacement_block(notices.blocked_text(name, tool_input, rule_id, verdict.message))

    async def _judge_buffered(self, flow: http.HTTPFlow, calls: list[tuple[int, dict[str, Any]]]) -> dict[int, dict]:
        ex = exchange_of(flow)
        replacements: dict[int, dict] = {}
        pending: list[_Pending] = []
        for index, block in calls:
            if len(json.dumps(block.get("input"), ensure_ascii=False, default=str)) > OFFLOAD_INPUT_CHARS:
                verdict = await asyncio.to_thread(self._verdict, ex, block)
            else:
                verdict = self._verdict(ex, block)
            if verdict.action == "allow":
                self._record_verdict(ex, block, verdict)
            elif verdict.action == "block":
                replacements[index] = self._block(ex, block, verdict)
            else:
                outcome = await self._file(flow, ex, index, block, verdict)
                if isinstance(outcome, _Pending):
                    pending.append(outcome)
                elif outcome is not None:
                    replacements[index] = outcome
        held = [p for p in pending if p.mode == "hold"]
        if held:
            policy = self.state.require_policy().approvals
            deadline = time.monotonic() + policy.timeout_seconds
            approvals = self.state.approvals
            assert approvals is not None
            log.info(
                f"gatehouse: exchange {ex.exchange_id} held for approval "
                f"({', '.join(p.request.id for p in held)}), at most {policy.timeout_seconds:g} s"
            )
            statuses = await asyncio.gather(
                *(approvals.wait(p.request.id, max(0.0, deadline - time.monotonic())) for p in held)
            )
            for p, status in zip(held, statuses, strict=True):
                if (repl := await self._after_hold(ex, p, status)) is not None:
                    replacements[p.index] = repl
        for p in pending:
            if p.mode == "retry":
                replacements[p.index] = self._retry_notice(ex, p, "approval required")
        return replacements

    async def _file(
        self, flow: http.HTTPFlow, ex: Exchange, index: int, block: dict[str, Any], verdict: Verdict
    ) -> _Pending | dict[str, Any] | None:
        """An approve verdict: a grant from an earlier approval lets the call through once;
        otherwise an approval request is filed (or the identical pending one reused)."""
        approvals = self.state.approvals
        policy = self.state.require_policy().approvals
        if approvals is None or ex.identity is None:
            # The loader requires issuers and approvers for approve rules; fail closed anyway.
            return self._block(ex, block, Verdict("block", verdict.rule, verdict.message, verdict.matched))
        rule = verdict.rule
        name, tool_input = str(block.get("name", "")), block.get("input", {})
        digest = call_sha256(name, tool_input)
        grant: Status | None = await asyncio.to_thread(
            approvals.claim_call_grant, ex.identity, name, digest, ex.exchange_id
        )
        rule_id = rule.id if rule is not None else "default"
        if grant is not None:
            self._record_verdict(ex, block, verdict, approval_id=grant.request.id, input_sha256=digest)
            ex.decide(
                "approvals",
                "allow",
                "approved earlier; this identical call used the grant",
                rule=rule_id,
                approval_id=grant.request.id,
                approver=grant.decided_by[0] if grant.decided_by else None,
                grant="used",
                **self._call_detail(block, removed=False),
            )
            return None
        mode = (rule.mode if rule is not None else None) or policy.mode
        approvers = tuple((rule.approvers if rule is not None else None) or policy.approvers)
        required = (rule.approvals_required if rule is not None else None) or policy.approvals_required
        request = await asyncio.to_thread(
            lambda: approvals.file(
                kind="tool_call",
                requester=ex.identity,
                session=flow.request.headers.get(SESSION_HEADER),
                exchange_id=ex.exchange_id,
                tool=name,
                tool_input=tool_input,
                input_sha256=digest,
                rule=rule_id,
                message=verdict.message,
                approvers=approvers,
                approvals_required=required,
                mode=mode,
                timeout_seconds=policy.timeout_seconds,
                grant_seconds=policy.grant_seconds,
            )
        )
        self._record_verdict(
            ex, block, verdict, approval_id=request.id, input_sha256=digest, mode=mode, approvers=list(approvers)
        )
        return _Pending(index, block, verdict, request, mode)

    async def _after_hold(self, ex: Exchange, p: _Pending, status: Status) -> dict[str, Any] | None:
        approvals = self.state.approvals
        assert approvals is not None and ex.identity is not None
        name, tool_input = str(p.block.get("name", "")), p.block.get("input", {})
        rule_id = p.request.rule
        detail = {**self._call_detail(p.block, removed=status.state != "approved"), "approval_id": p.request.id}
        if status.state == "approved":
            # Spend the grant on this response, so that it cannot let another call through. An
            # identical call (in this response, or another flow) may have spent it first: then
            # this one was not approved, and asks again.
            spent = await asyncio.to_thread(approvals.claim_approved, p.request.id, ex.identity, ex.exchange_id)
            if not spent:
                return self._retry_notice(ex, p, "its approval was used by an identical call")
            ex.decide(
                "approvals",
                "approve",
                status.reason or "approved",
                rule=rule_id,
                approver=status.decided_by[0] if status.decided_by else None,
                approvers_all=status.decided_by,
                **detail,
            )
            return None
        if status.state == "denied":
            by = status.decided_by[0] if status.decided_by else None
            ex.decide("approvals", "deny", status.reason or "denied", rule=rule_id, approver=by, **detail)
            return notices.replacement_block(
                notices.denied_text(name, tool_input, p.request.id, _person(by), status.reason)
            )
        policy = self.state.require_policy().approvals
        if policy.on_timeout == "deny":
            ex.decide(
                "approvals", "timeout", f"no decision within {policy.timeout_seconds:g} s", rule=rule_id, **detail
            )
            return notices.replacement_block(notices.timeout_denied_text(name, tool_input, p.request.id))
        return self._retry_notice(ex, p, f"no decision within {policy.timeout_seconds:g} s")

    def _retry_notice(self, ex: Exchange, p: _Pending, why: str) -> dict[str, Any]:
        name, tool_input = str(p.block.get("name", "")), p.block.get("input", {})
        ex.decide(
            "approvals",
            "retry",
            f"{why}; the call was replaced by the approval id",
            rule=p.request.rule,
            approval_id=p.request.id,
            **self._call_detail(p.block, removed=True),
        )
        return notices.replacement_block(
            notices.retry_text(
                name,
                tool_input,
                p.request.id,
                p.request.approvers,
                p.request.rule,
                p.verdict.message,
                _approve_cli(p.request.id),
            )
        )
