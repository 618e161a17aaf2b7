"""Small helpers shared by the addons: the per-flow Exchange and refusals in the Anthropic shape."""

from __future__ import annotations

from mitmproxy import http

from addons.core.apierrors import ApiError
from addons.core.exchange import EXCHANGE_ID_HEADER, METADATA_KEY, Exchange


def exchange_of(flow: http.HTTPFlow) -> Exchange:
    """The flow's Exchange, created on first use."""
    ex = flow.metadata.get(METADATA_KEY)
    if ex is None:
        ex = flow.metadata[METADATA_KEY] = Exchange()
    return ex


def refuse(flow: http.HTTPFlow, err: ApiError, stage: str, rule: str | None = None) -> None:
    """Answer the flow ourselves: it never reaches the upstream.

    Setting `flow.response` (rather than `flow.kill()`) is what makes the client see the
    message; a killed intercepted flow can leave the client hanging.
    """
    ex = exchange_of(flow)
    ex.refused = True
    ex.decide(stage, "deny", err.message, rule, status=err.status, error_type=err.type)
    headers = err.headers()
    headers[EXCHANGE_ID_HEADER] = ex.exchange_id
    flow.response = http.Response.make(err.status, err.body(), headers)
