"""Credentials: the caller's credentials never reach the upstream; the gateway's key does.

The request's headers are cut down to the allowlist in `gatehouse.wire.headers` (every value
scanned, any value carrying a credential dropped whatever its name), then the gateway's key
is added. What was dropped is named, never quoted, in the exchange's decisions.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, http

from gatehouse.access.checks import HostRoute, route_host
from gatehouse.credentials.keys import MissingKey, key_source_for, read_key
from gatehouse.exchange import Exchange
from gatehouse.mitm.flowutil import apply_headers, exchange_of, fail_closed, refuse
from gatehouse.mitm.state import GatewayState
from gatehouse.wire import apierrors, headers

log = logging.getLogger(__name__)


class Credentials:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def configure(self, updated: set[str]) -> None:
        if "flow_detail" in updated and ctx.options.flow_detail > 1:
            # Levels 2+ print request headers, and so the injected API key, to the log.
            log.warning("gatehouse: flow_detail > 1 would log the injected API key and prompts; using 1")
            ctx.options.update(flow_detail=1)

    @fail_closed("credentials")
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        policy = self.state.require_policy()
        if route_host(policy, flow.request.host) is not HostRoute.API:
            return
        ex = exchange_of(flow)
        self._filter_headers(flow, ex)
        # Trailers are sent after the body, past every check: none go upstream.
        flow.request.trailers = None
        source, group = key_source_for(policy, ex.identity)
        try:
            key = read_key(source)
        except MissingKey as e:
            log.error(f"gatehouse: {e}")
            refuse(
                flow,
                apierrors.api_error(f"{e}. Ask your gateway operator to configure [credentials] in the policy."),
                "credentials",
            )
            return
        flow.request.headers["x-api-key"] = key
        ex.decide("credentials", "inject", f"gateway key from {source.describe()}", group=group)
        # Always route to the upstream explicitly, so nothing the client said about scheme or
        # port decides where the gateway's key goes.
        up = self.state.upstream
        flow.request.scheme = up.scheme
        flow.request.host = up.hostname or ""
        flow.request.port = up.port or (443 if up.scheme == "https" else 80)
        flow.request.path = up.path.rstrip("/") + flow.request.path

    def _filter_headers(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        result = headers.filter_request(flow.request.headers.items(multi=True), self.state.masker)
        apply_headers(flow.request, result, ex, "request")
