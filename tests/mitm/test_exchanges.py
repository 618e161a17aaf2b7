"""The ExchangeIds addon (gatehouse.mitm.exchanges) through mitmproxy's hook dispatch: every
flow gets an Exchange and a gateway-made id, and every response the client gets carries it."""

from __future__ import annotations

import json
import re

import pytest
from mitmproxy import http
from mitmproxy.proxy.layers.http import (
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons

from gatehouse.exchange import EXCHANGE_ID_HEADER, METADATA_KEY
from gatehouse.mitm.access import Access
from gatehouse.mitm.credentials import Credentials
from gatehouse.mitm.exchanges import ExchangeIds
from gatehouse.mitm.flowutil import exchange_of
from support.flows import api_flow, api_response, fire, gateway_state, refusal
from support.harness import GATEWAY_KEY

ID = re.compile(r"gx_[0-9a-f]{28}")
FORGED = "gx_000000000000ffffffffffffffff"
UPSTREAM_BODY = b'{"type":"message","content":[{"type":"text","text":"hello"}]}'


@pytest.fixture
def tctx():
    with taddons.context() as ctx:
        yield ctx


def test_every_flow_gets_an_exchange_with_its_own_id(tctx):
    addon, first, second = ExchangeIds(), api_flow(), api_flow()
    fire(tctx, addon, HttpRequestHeadersHook(first), HttpRequestHeadersHook(second))
    ids = [f.metadata[METADATA_KEY].exchange_id for f in (first, second)]
    assert all(ID.fullmatch(i) for i in ids) and ids[0] != ids[1]


def test_the_upstreams_response_carries_the_id(tctx):
    addon, f = ExchangeIds(), api_flow()
    fire(tctx, addon, HttpRequestHeadersHook(f))
    f.response = api_response(UPSTREAM_BODY)
    fire(tctx, addon, HttpResponseHeadersHook(f), HttpResponseHook(f))
    assert EXCHANGE_ID_HEADER == "x-gatehouse-exchange-id"
    assert f.response.headers.get_all(EXCHANGE_ID_HEADER) == [exchange_of(f).exchange_id]
    assert f.response.content == UPSTREAM_BODY


def test_an_id_the_upstream_sends_is_replaced(tctx):
    addon, f = ExchangeIds(), api_flow()
    fire(tctx, addon, HttpRequestHeadersHook(f))
    f.response = api_response(UPSTREAM_BODY, x_gatehouse_exchange_id=FORGED)
    fire(tctx, addon, HttpResponseHeadersHook(f), HttpResponseHook(f))
    assert f.response.headers.get_all(EXCHANGE_ID_HEADER) == [exchange_of(f).exchange_id]


def test_an_id_the_client_sends_is_not_taken(tctx):
    addon, f = ExchangeIds(), api_flow(headers=[(EXCHANGE_ID_HEADER, FORGED)])
    fire(tctx, addon, HttpRequestHeadersHook(f))
    assert ID.fullmatch(exchange_of(f).exchange_id) and exchange_of(f).exchange_id != FORGED


def test_a_response_an_addon_made_without_the_header_gets_it(tctx):
    addon, f = ExchangeIds(), api_flow()
    fire(tctx, addon, HttpRequestHeadersHook(f))
    f.response = http.Response.make(204, b"")
    fire(tctx, addon, HttpResponseHook(f))
    assert f.response.headers[EXCHANGE_ID_HEADER] == exchange_of(f).exchange_id


# -- with the addons around it, in the gateway's order ----------------------------------------------


@pytest.fixture
def stack(tmp_path, monkeypatch):
    """ExchangeIds, Access and Credentials loaded in the order of addons/gateway.py."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", GATEWAY_KEY)
    state = gateway_state(tmp_path)
    with taddons.context(ExchangeIds(), Access(state), Credentials(state)) as ctx:
        yield ctx


def cycle(tctx, f: http.HTTPFlow, upstream: http.Response | None = None) -> None:
    """A flow's events as mitmproxy raises them for every addon. A response set by a request
    hook still gets the (emulated) responseheaders event; otherwise the upstream answers."""

    def trigger(*events) -> None:
        for event in events:
            tctx.master.event_loop.run_until_complete(tctx.master.addons.trigger_event(event))

    trigger(HttpRequestHeadersHook(f), HttpRequestHook(f))
    if f.response is None:
        f.response = upstream
    trigger(HttpResponseHeadersHook(f), HttpResponseHook(f))


def test_a_forwarded_request_drops_the_clients_id_and_answers_with_the_gateways(stack):
    f = api_flow(headers=[(EXCHANGE_ID_HEADER, FORGED)])
    cycle(stack, f, api_response(UPSTREAM_BODY))
    assert EXCHANGE_ID_HEADER not in f.request.headers  # not sent upstream
    assert f.request.headers["x-api-key"] == GATEWAY_KEY
    assert f.response.headers.get_all(EXCHANGE_ID_HEADER) == [exchange_of(f).exchange_id]
    assert exchange_of(f).exchange_id != FORGED


def test_a_refusal_keeps_the_flows_id(stack):
    f = api_flow("POST", "/v1/files", headers=[(EXCHANGE_ID_HEADER, FORGED)])
    cycle(stack, f)
    assert "does not allow the endpoint /v1/files" in refusal(f, 403, "permission_error")
    assert f.response.headers.get_all(EXCHANGE_ID_HEADER) == [exchange_of(f).exchange_id]


def test_a_refusal_is_put_back_whole_when_the_upstream_body_is_read_into_it(tctx, tmp_path):
    # A refusal made in `responseheaders` is followed by mitmproxy reading the upstream's body
    # into that response; by `response` the client must get the refusal again, not that body.
    state = gateway_state(tmp_path)
    ids, access = ExchangeIds(), Access(state)
    f = api_flow(scheme="http", port=80)
    fire(tctx, ids, HttpRequestHeadersHook(f))
    fire(tctx, access, HttpRequestHeadersHook(f))
    refused = f.response.content
    f.response.data.content = UPSTREAM_BODY
    del f.response.headers[EXCHANGE_ID_HEADER]
    fire(tctx, ids, HttpResponseHook(f))
    assert f.response.content == refused and json.loads(refused)["type"] == "error"
    assert "only forwards https://api.anthropic.com" in refusal(f, 403, "permission_error")
    assert f.response.headers[EXCHANGE_ID_HEADER] == exchange_of(f).exchange_id
