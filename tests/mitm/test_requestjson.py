"""One parse of a request body shared by Access, masking and the recorder (gatehouse.mitm.requestjson):
kept only while the flow carries exactly the body that was parsed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from mitmproxy.proxy.layers.http import HttpRequestHeadersHook, HttpRequestHook
from mitmproxy.test import taddons

from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from gatehouse.mitm import masking as masking_addon
from gatehouse.mitm import requestjson
from gatehouse.mitm.access import Access
from gatehouse.mitm.flowutil import OFFLOAD_BYTES, exchange_of
from gatehouse.mitm.masking import Masking
from support.flows import ISSUER, api_flow, fire, gateway_state, identify
from support.secrets import FINGERPRINT_KEY, fake_secret
from support.threads import calls_in_threads

SECRET = fake_secret("aws-access-key-id", random.Random(7))
GROUPS = ISSUER + '\n[groups.developers]\nmodels = ["claude-haiku-*"]\n'


def body(text: str) -> bytes:
    return json.dumps(
        {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
    ).encode()


def test_a_parse_is_kept_while_the_flow_carries_the_same_body():
    f = api_flow(body=body("hi"))
    raw = f.request.raw_content
    parsed = requestjson.parse(raw)
    requestjson.remember(f, raw, parsed)
    assert requestjson.cached(f) is parsed
    assert requestjson.take(f) is parsed
    assert requestjson.cached(f) is None  # taken for good


def test_a_replaced_body_is_not_answered_with_the_old_parse():
    f = api_flow(body=body("hi"))
    requestjson.remember(f, f.request.raw_content, requestjson.parse(f.request.raw_content))
    f.request.content = body("hi")  # equal text, another object: someone wrote the body
    assert requestjson.cached(f) is None
    assert requestjson.take(f) is None


def test_a_compressed_body_is_never_kept():
    f = api_flow(body=body("hi"))
    f.request.headers["content-encoding"] = "gzip"
    requestjson.remember(f, f.request.raw_content, requestjson.parse(f.request.raw_content))
    assert requestjson.cached(f) is None


@pytest.fixture
def tctx():
    with taddons.context() as ctx:
        yield ctx


def test_masking_reuses_the_access_parse_but_masks_a_body_changed_since(tmp_path: Path, tctx):
    """Access parses the body for its model; a body replaced before masking runs is parsed
    again and masked: the secret in the new body never goes upstream."""
    access = Access(gateway_state(tmp_path, GROUPS))
    masking = Masking(Masker(parse_masking(None), FINGERPRINT_KEY))
    f = api_flow(body=body("nothing secret"))
    identify(f, "developers")
    fire(tctx, access, HttpRequestHeadersHook(f), HttpRequestHook(f))
    assert f.response is None and requestjson.cached(f) is not None
    kept = requestjson.cached(f)

    f.request.content = body(f"deploy with {SECRET}")
    fire(tctx, masking, HttpRequestHeadersHook(f), HttpRequestHook(f))
    assert f.response is None
    assert SECRET not in f.request.content.decode()
    assert [x.rule for x in exchange_of(f).request_findings] == ["aws-access-key-id"]
    assert requestjson.cached(f) is not kept


def test_masking_hands_the_access_parse_on_when_it_changes_nothing(tmp_path: Path, tctx):
    access = Access(gateway_state(tmp_path, GROUPS))
    masking = Masking(Masker(parse_masking(None), FINGERPRINT_KEY))
    f = api_flow(body=body("nothing secret"))
    identify(f, "developers")
    fire(tctx, access, HttpRequestHeadersHook(f), HttpRequestHook(f))
    kept = requestjson.cached(f)
    fire(tctx, masking, HttpRequestHeadersHook(f), HttpRequestHook(f))
    assert f.response is None and exchange_of(f).request_findings == []
    assert requestjson.take(f) is kept  # the recorder's copy: still the one parse


@pytest.mark.parametrize("size", [1024, OFFLOAD_BYTES + 1024])
def test_a_large_body_is_parsed_and_masked_off_the_event_loop(tmp_path: Path, tctx, monkeypatch, size: int):
    """A body over `OFFLOAD_BYTES` is parsed (Access) and scanned (masking) on a worker thread,
    so that the event loop keeps serving other flows meanwhile; a small one on the loop itself.
    Either way the secret is masked."""
    parsed = calls_in_threads(monkeypatch, requestjson, "parse")
    masked = calls_in_threads(monkeypatch, masking_addon, "_inspect_request")
    access = Access(gateway_state(tmp_path, GROUPS))
    masking = Masking(Masker(parse_masking(None), FINGERPRINT_KEY))
    text = f"deploy with {SECRET} " + "x" * size
    f = api_flow(body=body(text))
    assert (len(f.request.raw_content) > OFFLOAD_BYTES) == (size > OFFLOAD_BYTES)
    identify(f, "developers")
    fire(tctx, access, HttpRequestHeadersHook(f), HttpRequestHook(f))
    fire(tctx, masking, HttpRequestHeadersHook(f), HttpRequestHook(f))

    assert f.response is None and SECRET not in f.request.content.decode()
    assert parsed == masked == [size > OFFLOAD_BYTES]
