"""Access: only the API host is intercepted; endpoints, body size, models and server-side tools
per policy; just-in-time access (``[[access.rules]]``) through the approvals store.

The gateway's own host (`gatehouse.internal`, the approvals API) is reached through the
proxy too; it is answered by `gatehouse.mitm.approvals` and never forwarded.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http, tls

from gatehouse.access import checks as access
from gatehouse.access.checks import HostRoute
from gatehouse.access.endpoints import allowed as endpoint_allowed
from gatehouse.access.rules import jit_rule_for, jit_target
from gatehouse.approvals import INTERNAL_HOST, SESSION_HEADER
from gatehouse.commands.judge import call_sha256
from gatehouse.common.hosts import normalise_host
from gatehouse.exchange import Exchange
from gatehouse.mitm import requestjson
from gatehouse.mitm.approvals import internal_problem, is_internal
from gatehouse.mitm.flowutil import exchange_of, fail_closed, refuse
from gatehouse.mitm.state import GatewayState
from gatehouse.wire import apierrors
from gatehouse.wire.apierrors import ApiError

log = logging.getLogger(__name__)


async def _parsed_body(flow: http.HTTPFlow) -> requestjson.ParsedRequest:
    """The flow's request body parsed (kept for masking and the recorder, `requestjson`);
    uncompressed: `requestheaders` refuses the rest. Raises ValueError (`UnparseableBody`) for a
    body that is not JSON."""
    try:
        return await requestjson.read(flow)
    except RecursionError:
        raise ValueError("the request body is JSON nested too deeply to inspect") from None


class Access:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed("access")
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or normalise_host(flow.request.host) == INTERNAL_HOST:
            return
        route = access.route_host(self.state.require_policy(), flow.request.host)
        if route is HostRoute.DENY:
            log.info(f"gatehouse: refused CONNECT to {flow.request.host}:{flow.request.port} (not an allowed host)")
            refuse(flow, access.host_refusal(flow.request.host), "access", rule="other_hosts")

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        # A passthrough host's TLS is not intercepted: the tunnel carries the client's own TLS.
        # Decided on where the tunnel goes (the CONNECT target), never on the client's SNI: a
        # CONNECT to the API host with a passthrough name in its SNI would otherwise reach the
        # API uninspected.
        address = data.context.server.address
        if not address or normalise_host(address[0]) == INTERNAL_HOST:
            return  # the gateway's own API is always intercepted: it answers it itself
        if access.route_host(self.state.require_policy(), address[0]) is HostRoute.PASSTHROUGH:
            data.ignore_connection = True

    @fail_closed("access")
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        policy = self.state.require_policy()
        if is_internal(flow):
            if problem := internal_problem(flow):
                refuse(flow, apierrors.invalid_request(problem), "access", rule="internal_host")
            return  # answered by the approvals API (gatehouse.mitm.approvals)
        route = access.route_host(policy, flow.request.host)
        if route is HostRoute.DENY:
            refuse(flow, access.host_refusal(flow.request.host), "access", rule="other_hosts")
            return
        if route is not HostRoute.API:
            exchange_of(flow).passthrough = True
            return
        # mitmproxy's stream_large_bodies would send the body upstream before `request` runs:
        # uninspected, with the caller's headers. API bodies are always read whole.
        flow.request.stream = False
        req = flow.request
        if err := access.check_api_target(req.scheme, req.port):
            refuse(flow, err, "access", rule="https_only")
            return
        if err := access.check_path(req.path):
            refuse(flow, err, "access", rule="path")
            return
        if req.headers.get("content-encoding", "identity").strip().lower() != "identity":
            # A compressed body's decoded size is unknown until decoded (a 32 MiB gzip bomb
            # inflates to gigabytes); Claude clients do not compress requests.
            refuse(
                flow,
                apierrors.invalid_request(
                    "Gatehouse does not accept compressed request bodies "
                    "(Content-Encoding); send the body uncompressed."
                ),
                "access",
                rule="content_encoding",
            )
            return
        # Refuse an oversized body before mitmproxy reads it into memory.
        length = req.headers.get("content-length", "")
        if length.isdigit() and (err := access.check_body_size(policy, int(length))):
            refuse(flow, err, "access", rule="max_body_bytes")

    @fail_closed("access")
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        policy = self.state.require_policy()
        if is_internal(flow):
            return
        if access.route_host(policy, flow.request.host) is not HostRoute.API:
            return
        ex = exchange_of(flow)
        path = flow.request.path
        method = flow.request.method
        if err := access.check_endpoint(policy, method, path, ex.identity):
            bare = path.split("?", 1)[0]
            # Just in time lifts a group's limits, never the gateway's own endpoint allowlist
            # (an endpoint outside it, such as batch results, is not inspected like messages).
            if not endpoint_allowed(method.upper(), bare, policy.gateway.allowed_endpoints):
                refuse(flow, err, "access", rule="endpoint")
                return
            if not await self._just_in_time(flow, ex, err, "endpoint", method=method.upper(), path=bare):
                return
        body = flow.request.raw_content or b""
        if err := access.check_body_allowed(flow.request.method, bool(body)):
            refuse(flow, err, "access", rule="body_method")
            return
        if err := access.check_body_size(policy, len(body)):
            refuse(flow, err, "access", rule="max_body_bytes")
            return
        if policy.groups and ex.identity is not None:
            try:
                doc = access.model_body((await _parsed_body(flow)).value) if access.names_model(path) else None
            except ValueError as e:
                refuse(
                    flow,
                    apierrors.invalid_request(f"Gatehouse cannot read the request body to check its model: {e}"),
                    "access",
                )
                return
            model = doc["model"] if doc is not None else None
            if model is not None and (err := access.check_model(policy, model, ex.identity)):
                if not await self._just_in_time(flow, ex, err, "model", model=model):
                    return
            # Tools that run on Anthropic's side act without a tool_use reaching the client:
            # allowed per group (`server_tools`, `mcp_servers`).
            if doc is not None and (err := access.check_server_tools(policy, doc, ex.identity)):
                refuse(flow, err, "access", rule="server_tools")
                return
        ex.decide("access", "allow")

    async def _just_in_time(
        self,
        flow: http.HTTPFlow,
        ex: Exchange,
        err: ApiError,
        check: str,
        *,
        model: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> bool:
        """A request outside the caller's groups: allowed when an `[[access.rules]]` grant is
        active; refused otherwise, with the approval to ask for when a rule covers it. True when
        the request may go on."""
        policy = self.state.require_policy()
        approvals = self.state.approvals
        rule = (
            jit_rule_for(policy.access_rules, ex.identity, model=model, method=method, path=path)
            if approvals is not None and ex.identity is not None
            else None
        )
        if rule is None:
            refuse(flow, err, "access", rule=check, **({"model": model} if model else {}))
            return False
        assert approvals is not None and ex.identity is not None
        target = jit_target(model=model, method=method, path=path)
        grant = await asyncio.to_thread(approvals.active_access_grant, ex.identity, rule.id, target)
        if grant is not None:
            until = (grant.decided_at or 0) + grant.request.grant_seconds
            ex.decide(
                "approvals",
                "allow",
                f"just-in-time access to {target}",
                rule=rule.id,
                approval_id=grant.request.id,
                approver=grant.decided_by[0] if grant.decided_by else None,
                grant="access",
                expires_at=until,
            )
            return True
        ap = policy.approvals
        tool_input = {"model": model} if model is not None else {"method": method, "path": path}
        digest = call_sha256(target, tool_input)
        approvers = tuple(rule.approvers or ap.approvers)
        request = await asyncio.to_thread(
            lambda: approvals.file(
                kind="access",
                requester=ex.identity,
                session=flow.request.headers.get(SESSION_HEADER),
                exchange_id=ex.exchange_id,
                tool=target,
                tool_input=tool_input,
                input_sha256=digest,
                rule=rule.id,
                message=err.message,
                approvers=approvers,
                approvals_required=rule.approvals_required or ap.approvals_required,
                mode="retry",
                timeout_seconds=None,
                grant_seconds=rule.grant_seconds or ap.grant_seconds,
            )
        )
        refuse(
            flow,
            apierrors.permission(
                f"{err.message} Access can be granted just in time: approval {request.id} is pending "
                f"for an approver in {', '.join(request.approvers)} "
                f"(`gatehouse approvals approve {request.id}`); retry once it is approved."
            ),
            "access",
            rule=check,
            approval_id=request.id,
            jit_rule=rule.id,
        )
        return False
