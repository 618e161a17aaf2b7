"""SSE on the wire: the incremental parser, the encoder, the parse of a whole body."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def reference_parse(raw: bytes) -> list[tuple[str | None, str]]:
    """The WHATWG line and field rules, read literally on the whole input at once, with
    `SseParser.finish`'s end-of-input rule (a last event without its blank line is delivered)."""
    events, name, data = [], None, None
    for line in re.split(rb"\r\n|\r|\n", raw):
        if not line:
            if data is not None:
                events.append((name, b"\n".join(data).decode("utf-8", "replace")))
            name, data = None, None
            continue
        if line.startswith(b":"):
            continue
        field, sep, value = line.partition(b":")
        value = value[1:] if sep and value.startswith(b" ") else value
        if field == b"data":
            data = [*(data or []), value]
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if data is not None:
        events.append((name, b"\n".join(data).decode("utf-8", "replace")))
    return events


_lines = st.lists(
    st.tuples(
        st.sampled_from(["data: ", "data:", "data", "event: ", ": ", "id: ", ""]),
        st.text(alphabet="ab{}é :", max_size=6),
        st.sampled_from(["\n", "\n", "\n", "\r\n", "\r"]),  # mostly LF, as the API sends
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(lines=_lines, last=st.sampled_from(["", "data: z", "event: q", "data"]), data=st.data())
def test_parser_matches_the_rules_whatever_the_line_endings_and_chunks(lines, last, data):
    """LF-only stretches (split at once) and stretches with CR (read line by line) in any order,
    maybe ending inside a line, cut into chunks anywhere: the events are those of the whole input."""
    raw = ("".join(f"{field}{value}{end}" for field, value, end in lines) + last).encode()
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8))
    bounds = sorted(set(cuts))
    pieces = [raw[a:b] for a, b in zip([0, *bounds], [*bounds, len(raw)], strict=True)]
    p = SseParser()
    got = [e for piece in pieces for e in p.feed(piece)] + p.finish()
    assert [(e.name, e.data) for e in got] == reference_parse(raw)


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
