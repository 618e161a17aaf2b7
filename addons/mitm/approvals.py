"""The approvals API, served by the gateway itself on its reserved host (`gatehouse.internal`).

Approvers reach it through the proxy like any request (`gatehouse approvals ...` tunnels to
``https://gatehouse.internal``), with their own token: Identity has verified it by the time
`request` runs. The request never goes upstream: this addon answers it from the approvals
store (`gatehouse.approvals.api`, in a worker thread: the store is disk or S3). A decision is
a ``Decision("approvals", ...)`` on the exchange, so it is in the signed chain with the record
of the API call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from mitmproxy import http

from gatehouse.approvals import INTERNAL_HOST, api
from gatehouse.common.hosts import normalise_host
from gatehouse.exchange import EXCHANGE_ID_HEADER
from gatehouse.mitm.flowutil import exchange_of, fail_closed, refuse
from gatehouse.mitm.state import GatewayState
from gatehouse.wire import apierrors

log = logging.getLogger(__name__)


# A decision is a few hundred bytes: the API never needs to read a large body.
MAX_BODY_BYTES = 64 * 1024


def is_internal(flow: http.HTTPFlow) -> bool:
    """The flow is for the gateway's own host, by its tunnel (CONNECT target) or its Host
    header: either is enough, so that no name the policy routes elsewhere can carry it."""
    return INTERNAL_HOST in (normalise_host(flow.request.host), normalise_host(flow.request.pretty_host))


def internal_problem(flow: http.HTTPFlow) -> str | None:
    """Why a flow for the gateway's own host is refused before it is read, or None."""
    if normalise_host(flow.request.host) != normalise_host(flow.request.pretty_host):
        return f"A request to {INTERNAL_HOST} must name it both as its tunnel and as its Host header."
    if not flow.client_conn.tls_established:
        # Approvers send their tokens: only inside TLS (mitmproxy's scheme follows the upstream
        # side in reverse mode, so the client's own connection is checked).
        return f"The approvals API is served on https://{INTERNAL_HOST} only."
    length = flow.request.headers.get("content-length", "")
    if (length.isdigit() and int(length) > MAX_BODY_BYTES) or "transfer-encoding" in flow.request.headers:
        return f"A request to the approvals API carries at most {MAX_BODY_BYTES} bytes, with a Content-Length."
    return None


class ApprovalsApi:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed("approvals")
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not is_internal(flow):
            return
        service = self.state.approvals
        if service is None:
            refuse(
                flow,
                apierrors.not_found(
                    "This gateway's policy has no approve rule, so it keeps no approvals "
                    '([commands] or [[access.rules]] with action = "approve").'
                ),
                "approvals",
                rule="not_configured",
            )
            return
        ex = exchange_of(flow)
        req = flow.request
        status, body = await asyncio.to_thread(
            api.handle, service, req.method, req.path, req.raw_content or b"", ex.identity
        )
        if status == 200 and req.method == "POST":
            self._record_decision(ex, req.path, body)
        elif status >= 400:
            err = body.get("error") if isinstance(body, dict) else None
            message = err.get("message", "") if isinstance(err, dict) else ""
            ex.decide("approvals", "refuse", message, rule="api", status=status)
        flow.response = http.Response.make(
            status,
            json.dumps(body, ensure_ascii=False).encode("utf-8"),
            {"content-type": "application/json", EXCHANGE_ID_HEADER: ex.exchange_id, "x-should-retry": "false"},
        )

    @staticmethod
    def _record_decision(ex: Any, path: str, status: dict[str, Any]) -> None:
        action = "approve" if path.split("?", 1)[0].rstrip("/").endswith("/approve") else "deny"
        me = ex.identity.to_dict() if ex.identity is not None else None
        ex.decide(
            "approvals",
            action,
            str(next((v.get("reason", "") for v in reversed(status.get("votes") or []) if isinstance(v, dict)), "")),
            rule=status.get("rule"),
            approval_id=status.get("id"),
            approver=me,
            requester=status.get("requester"),
            state=status.get("state"),
            input_sha256=status.get("input_sha256"),
            decided_tool=status.get("tool"),
        )
        log.info(
            f"gatehouse: approval {status.get('id')} {action} by "
            f"{(me or {}).get('email') or (me or {}).get('subject')}: now {status.get('state')}"
        )
