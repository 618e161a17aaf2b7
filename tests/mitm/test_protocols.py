"""The ProtocolGuard addon through mitmproxy's test harness: interim responses."""

from __future__ import annotations

import json

import pytest
from mitmproxy.proxy.layers.http import HttpResponseHeadersHook
from mitmproxy.test import taddons, tflow, tutils

from gatehouse.mitm.protocols import ProtocolGuard
from support.flows import fire


@pytest.mark.parametrize("status", [100, 102, 103])
def test_an_interim_response_becomes_an_error_not_a_hang(status):
    """mitmproxy takes an upstream's 1xx for the final response, and the client would then
    wait for ever for the real one (found by the red-team pass)."""
    addon = ProtocolGuard()
    f = tflow.tflow(resp=tutils.tresp(status_code=status, content=b""))
    with taddons.context(addon) as tctx:
        fire(tctx, addon, HttpResponseHeadersHook(f))
    assert f.response.status_code == 502
    assert json.loads(f.response.content)["error"]["type"] == "api_error"


def test_a_final_response_is_left_alone():
    addon = ProtocolGuard()
    f = tflow.tflow(resp=tutils.tresp(status_code=200, content=b"{}"))
    with taddons.context(addon) as tctx:
        fire(tctx, addon, HttpResponseHeadersHook(f))
    assert f.response.status_code == 200
