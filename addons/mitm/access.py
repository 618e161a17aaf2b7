"""Access: only the API host is intercepted; endpoints, body size and models per policy."""

from __future__ import annotations

import logging

from mitmproxy import http, tls

from gatehouse.access import checks as access
from gatehouse.access.checks import HostRoute
from gatehouse.mitm.flowutil import exchange_of, fail_closed, refuse
from gatehouse.mitm.state import GatewayState
from gatehouse.wire import apierrors

log = logging.getLogger(__name__)


class Access:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed("access")
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
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
        if address and access.route_host(self.state.require_policy(), address[0]) is HostRoute.PASSTHROUGH:
            data.ignore_connection = True

    @fail_closed("access")
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        policy = self.state.require_policy()
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
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        policy = self.state.require_policy()
        if access.route_host(policy, flow.request.host) is not HostRoute.API:
            return
        ex = exchange_of(flow)
        path = flow.request.path
        if err := access.check_endpoint(policy, flow.request.method, path, ex.identity):
            refuse(flow, err, "access", rule="endpoint")
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
                model = access.requested_model(path, flow.request.content or b"")
            except ValueError as e:
                refuse(
                    flow,
                    apierrors.invalid_request(f"Gatehouse cannot read the request body to check its model: {e}"),
                    "access",
                )
                return
            if model is not None and (err := access.check_model(policy, model, ex.identity)):
                refuse(flow, err, "access", rule="model", model=model)
                return
        ex.decide("access", "allow")
