"""Reading the bodies the gateway inspects: media types, the Messages API endpoints, UTF-8 and
strict JSON (with the messages the client is shown), and how a buffered response is inspected."""

from __future__ import annotations

import pytest

from gatehouse.wire.bodies import (
    UnparseableBody,
    asks_for_stream,
    decode_text,
    encode_json,
    is_json_media,
    is_message_endpoint,
    media_type,
    parse_json,
    require_json_media,
    response_kind,
)

WHAT = "the request body"


@pytest.mark.parametrize(
    "value, media",
    [
        ("application/json", "application/json"),
        ("Application/JSON; charset=utf-8", "application/json"),
        ("  text/event-stream ;charset=utf-8", "text/event-stream"),
        ("application/problem+json", "application/problem+json"),
        ("", ""),
        ("; charset=utf-8", ""),
    ],
)
def test_media_type_is_the_type_lower_case_without_parameters(value, media):
    assert media_type(value) == media


@pytest.mark.parametrize(
    "media, declares",
    [
        ("application/json", True),
        ("application/problem+json", True),
        ("application/vnd.api+json", True),
        # The recorder tries JSON for any type ending in "json" (records.py), a broader test on
        # purpose: these are not declared JSON to the masking addon.
        ("text/json", False),
        ("application/x-ndjson", False),
        ("application/jsonl", False),
        ("text/plain", False),
        ("", False),
    ],
)
def test_json_media_is_application_json_or_a_json_suffix(media, declares):
    assert is_json_media(media) is declares


@pytest.mark.parametrize(
    "path, walked",
    [
        ("/v1/messages", True),
        ("/v1/messages?beta=true", True),
        ("/v1/messages/", True),
        ("/v1/messages/count_tokens?beta=true", True),
        ("/gateway-base/v1/messages", True),
        ("/v1/messages/batches", False),
        ("/v1/complete", False),
        ("/v1/models?after=/v1/messages", False),
    ],
)
def test_message_endpoints_by_path_query_ignored_base_path_allowed(path, walked):
    assert is_message_endpoint(path) is walked


@pytest.mark.parametrize(
    "body, streams",
    [({"stream": True}, True), ({"stream": False}, False), ({"stream": "true"}, False), ({}, False), ([], False)],
)
def test_asks_for_stream_only_with_stream_true(body, streams):
    assert asks_for_stream(body) is streams


def test_require_json_media_refuses_other_declared_types():
    require_json_media("application/json", WHAT)
    require_json_media("", WHAT)
    with pytest.raises(UnparseableBody) as e:
        require_json_media("text/plain", WHAT)
    assert str(e.value) == "the request body has Content-Type 'text/plain'; the gateway inspects application/json only"


def test_decode_text_says_where_the_invalid_byte_is():
    assert decode_text("hé".encode(), WHAT) == "hé"
    with pytest.raises(UnparseableBody) as e:
        decode_text(b'{"a": "\xff"}', WHAT)
    assert str(e.value) == "the request body is not UTF-8 text (invalid byte at offset 7)"


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"model": "m", "messages": [', "the request body is not valid JSON (JSONDecodeError at line 1, column 29)"),
        (b'{"model": "a", "model": "b"}', "the request body is ambiguous: the JSON object has the key 'model' twice"),
        (b"[" * 200_000 + b"]" * 200_000, "the request body is JSON nested too deeply to inspect"),
        (b"\xff", "the request body is not UTF-8 text (invalid byte at offset 0)"),
    ],
)
def test_parse_json_refuses_with_a_message_that_never_quotes_the_body(raw, message):
    with pytest.raises(UnparseableBody) as e:
        parse_json(raw, WHAT)
    assert str(e.value) == message


def test_parse_json_and_encode_json_round_trip_compactly():
    doc = parse_json('{"a": [1, "é"], "b": null}'.encode(), WHAT)
    assert doc == {"a": [1, "é"], "b": None}
    assert encode_json(doc) == '{"a":[1,"é"],"b":null}'.encode()


@pytest.mark.parametrize(
    "media, raw, kind",
    [
        ("text/event-stream", b"event: ping\n", "sse"),
        ("application/json", b'{"type": "message"}', "json"),
        ("application/problem+json", b"[]", "json"),
        ("", b'  {"type": "message"}', "json"),
        ("", b"event: ping\n", "text"),
        ("text/plain", b'{"type": "message"}', "text"),
        ("text/json", b'{"type": "message"}', "text"),
    ],
)
def test_response_kind(media, raw, kind):
    assert response_kind(media, raw) == kind


def test_response_kind_refuses_what_it_cannot_inspect():
    with pytest.raises(UnparseableBody) as e:
        response_kind("application/octet-stream", b"\x00\x01")
    assert str(e.value) == (
        "the response body has Content-Type 'application/octet-stream', which the gateway cannot inspect"
    )
