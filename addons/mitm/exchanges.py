"""Gives every flow an Exchange and its id, and stamps the id on every response the client gets."""

from __future__ import annotations

from mitmproxy import http

from gatehouse.exchange import EXCHANGE_ID_HEADER
from gatehouse.mitm.flowutil import exchange_of, fail_closed, refusal_response


class ExchangeIds:
    @fail_closed("exchange")
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        exchange_of(flow)

    @fail_closed("exchange")
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Relayed responses; the gateway's own refusals get the header in flowutil.refuse.
        if flow.response is not None:
            flow.response.headers[EXCHANGE_ID_HEADER] = exchange_of(flow).exchange_id

    @fail_closed("exchange")
    def response(self, flow: http.HTTPFlow) -> None:
        ex = exchange_of(flow)
        if ex.refusal is not None:
            # A refusal made in `responseheaders` is a new Response, but mitmproxy then reads
            # the upstream's body into it: put the refusal back whole, before later addons
            # (masking, the recorder) look at it.
            flow.response = refusal_response(ex)
        # Responses set by a `request` hook never pass through `responseheaders`.
        elif flow.response is not None and EXCHANGE_ID_HEADER not in flow.response.headers:
            flow.response.headers[EXCHANGE_ID_HEADER] = ex.exchange_id
