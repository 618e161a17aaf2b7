"""Server-sent events of the Messages API on the wire: an incremental parser (chunks split
anywhere, even inside a UTF-8 character), the encoder of one event, and the parse of a whole
buffered body. Pure: no mitmproxy import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RawEvent:
    """One SSE event as parsed: its `event:` name (None when absent) and its data text."""

    name: str | None
    data: str


class SseParser:
    """Incremental SSE parser (WHATWG rules): lines end in LF, CRLF or CR; an empty line ends
    an event; `data:` lines are joined with LF; comments and unknown fields are ignored.
    Bytes are buffered until an event is complete and only then decoded, so a chunk may end
    anywhere, inside a line or a UTF-8 character."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._name: str | None = None
        self._data: list[bytes] = []
        self._has_data = False

    @property
    def pending_bytes(self) -> int:
        """Bytes of an event not yet complete."""
        return len(self._buf) + (1 if self._has_data or self._name is not None else 0)

    def feed(self, chunk: bytes) -> list[RawEvent]:
        self._buf += chunk
        return self._lines(final=False)

    def finish(self) -> list[RawEvent]:
        """End of input: a last event not followed by an empty line is still delivered."""
        events = self._lines(final=True)
        if self._buf:
            self._field(bytes(self._buf))
            self._buf.clear()
        ev = self._dispatch()
        if ev is not None:
            events.append(ev)
        return events

    def _lines(self, final: bool) -> list[RawEvent]:
        buf = self._buf
        events: list[RawEvent] = []
        if b"\r" not in buf:
            # Every line so far ends in LF (the API's own streams): split at once. The last piece
            # is a line still under way (empty when the buffer ends with a LF).
            *lines, rest = buf.split(b"\n")
            for line in lines:
                self._line(bytes(line), events)
            del buf[: len(buf) - len(rest)]
            return events
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == 0x0A else cr + 1
                elif final:
                    nxt = cr + 1
                else:
                    break  # a CR at the end: wait to see whether LF follows
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            self._line(bytes(buf[start:end]), events)
            start = nxt
        if start:
            del buf[:start]
        return events

    def _line(self, line: bytes, events: list[RawEvent]) -> None:
        """One complete line: an empty one ends an event (onto `events`), any other is a field."""
        if line:
            self._field(line)
        elif (ev := self._dispatch()) is not None:
            events.append(ev)

    def _field(self, line: bytes) -> None:
        if line.startswith(b":"):
            return
        name, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._name = value.decode("utf-8", "replace")

    def _dispatch(self) -> RawEvent | None:
        if not self._has_data:  # WHATWG: an event without data is not dispatched
            self._name = None
            return None
        ev = RawEvent(self._name, b"\n".join(self._data).decode("utf-8", "replace"))
        self._name = None
        self._data = []
        self._has_data = False
        return ev


def compact_json(data: Any) -> str:
    """JSON as an event's data line carries it: compact, non-ASCII kept as is."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def encode_event(name: str, data: Any) -> bytes:
    """``event: NAME`` + one ``data:`` line of compact JSON (JSON never holds a raw newline).
    A name with a line break would end the line and forge the events after it: refused."""
    if "\n" in name or "\r" in name:
        raise ValueError("an SSE event name cannot hold a line break")
    return f"event: {name}\ndata: {compact_json(data)}\n\n".encode()


def parse_sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """A whole SSE body as (event name, JSON data) pairs. Raises ValueError if an event's
    data is not a JSON object."""
    parser = SseParser()
    raw = parser.feed(data) + parser.finish()
    out = []
    for i, ev in enumerate(raw):
        try:
            obj = json.loads(ev.data)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"event {i + 1} ({ev.name or 'unnamed'}): data is not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"event {i + 1} ({ev.name or 'unnamed'}): data is not a JSON object")
        out.append((ev.name or str(obj.get("type", "message")), obj))
    return out
