"""Refusals and the fail-closed guard on flow hooks."""

from __future__ import annotations

import asyncio
import json

from mitmproxy.test import tflow

from gatehouse.exchange import EXCHANGE_ID_HEADER
from gatehouse.mitm.flowutil import exchange_of, fail_closed


class Broken:
    @fail_closed("masking")
    def request(self, flow):
        raise ValueError("secret-content-that-must-not-be-logged")

    @fail_closed("recording")
    async def response(self, flow):
        raise RuntimeError("boom")


def test_exception_in_request_hook_refuses_instead_of_forwarding(caplog):
    flow = tflow.tflow()
    Broken().request(flow)
    assert flow.response is not None and flow.response.status_code == 500
    body = json.loads(flow.response.content)
    assert body["error"]["type"] == "api_error"
    assert "masking failed" in body["error"]["message"] and "did not forward" in body["error"]["message"]
    assert flow.response.headers[EXCHANGE_ID_HEADER] == exchange_of(flow).exchange_id
    assert exchange_of(flow).refused
    assert "ValueError" in caplog.text
    assert "secret-content-that-must-not-be-logged" not in caplog.text


def test_exception_in_async_response_hook_replaces_the_response():
    flow = tflow.tflow(resp=True)
    asyncio.run(Broken().response(flow))
    assert flow.response.status_code == 500
    assert b"recording failed" in flow.response.content
