"""SSE on the wire: the incremental parser, the encoder, the parse of a whole body."""

from __future__ import annotations

import json

import pytest

from gatehouse.wire.sse import SseParser, encode_event, parse_sse


@pytest.mark.parametrize("nl", ["\n", "\r\n", "\r"])
def test_parser_line_endings_comments_and_multiline_data(nl):
    raw = (
        f': comment{nl}event: a{nl}data: {{"x":{nl}data:1}}{nl}{nl}'
        f'data: {{"type": "ping"}}{nl}{nl}event: lonely{nl}{nl}id: 5{nl}retry: 9{nl}data:{{}}{nl}{nl}'
    ).encode()
    for split in range(len(raw) + 1):
        p = SseParser()
        evs = p.feed(raw[:split]) + p.feed(raw[split:]) + p.finish()
        assert [(e.name, e.data) for e in evs] == [("a", '{"x":\n1}'), (None, '{"type": "ping"}'), (None, "{}")]


def test_parser_delivers_a_last_event_without_blank_line_at_the_end():
    p = SseParser()
    assert p.feed(b"event: x\ndata: {}") == []
    assert p.pending_bytes > 0
    assert [(e.name, e.data) for e in p.finish()] == [("x", "{}")]


def test_parser_splits_inside_utf8_characters():
    raw = encode_event("content_block_delta", {"delta": {"text": "é日🔑"}})
    for split in range(len(raw)):
        p = SseParser()
        evs = p.feed(raw[:split]) + p.feed(raw[split:])
        assert json.loads(evs[0].data)["delta"]["text"] == "é日🔑"


def test_encode_event_and_parse_sse_round_trip():
    data = {"type": "content_block_delta", "delta": {"text": "line1\nline2 é"}}
    raw = encode_event("content_block_delta", data)
    assert raw.startswith(b"event: content_block_delta\ndata: {") and raw.endswith(b"}\n\n") and raw.count(b"\n") == 3
    assert parse_sse(raw) == [("content_block_delta", data)]
    assert parse_sse(b'data: {"type":"ping"}\n\n') == [("ping", {"type": "ping"})]
    with pytest.raises(ValueError, match="not JSON"):
        parse_sse(b"event: x\ndata: nope\n\n")
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_sse(b"data: [1]\n\n")
