"""What the fake received: each request as it arrived on the wire (`ReceivedRequest`, with
helpers that look inside a Messages body) and the thread-safe log a test waits on (`RequestLog`)."""

from __future__ import annotations

import functools
import gzip as gzip_module
import json
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload


@dataclass(frozen=True, eq=False)
class ReceivedRequest:
    """One request as it arrived on the wire.

    `headers` maps lower-cased names to values; a header sent several times has its values
    joined with ", " (so a duplicated `x-api-key` is visible as such); `header_values(name)`
    gives them one by one. `body` is the raw body after de-chunking, never decompressed.
    """

    method: str
    path: str  # including the query string, e.g. "/v1/messages?beta=true"
    headers: dict[str, str]
    header_items: tuple[tuple[str, str], ...]  # (lower-cased name, value) in wire order
    body: bytes
    http_version: str = "HTTP/1.1"
    chunked: bool = False  # the body came with Transfer-Encoding: chunked
    tls: bool = False
    received_at: float = 0.0  # time.monotonic()

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.header_items if k == name]

    @property
    def route(self) -> str:
        """The path without the query string."""
        return urllib.parse.urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query, keep_blank_values=True)

    def decoded_body(self) -> bytes:
        """The body with a gzip/deflate Content-Encoding undone (other encodings raise)."""
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return self.body
        if encoding in ("gzip", "x-gzip"):
            return gzip_module.decompress(self.body)
        if encoding == "deflate":
            return zlib.decompress(self.body)
        raise ValueError(f"cannot decode request content-encoding {encoding!r}")

    def json(self) -> Any:
        return json.loads(self.decoded_body())

    @functools.cached_property
    def _parsed(self) -> Any:
        # Parsed once: Claude Code's bodies are ~75 KB and several properties below look inside.
        try:
            return self.json()
        except (ValueError, UnicodeDecodeError, OSError):  # OSError: bad gzip data
            return None

    def json_or_none(self) -> Any:
        """The parsed body, or None if it is not JSON. Shared between calls: do not mutate."""
        return self._parsed

    @property
    def is_messages(self) -> bool:
        """A `POST /v1/messages` (any query string), i.e. a model call."""
        return self.method == "POST" and self.route == "/v1/messages"

    @property
    def wants_stream(self) -> bool:
        body = self.json_or_none()
        return isinstance(body, dict) and body.get("stream") is True

    @property
    def model(self) -> str | None:
        body = self.json_or_none()
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None

    def last_user_blocks(self) -> list[dict[str, Any]]:
        """Content blocks of the last message of a Messages request if it is a user message
        (a string content becomes one text block); [] otherwise."""
        body = self.json_or_none()
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return []
        messages = body["messages"]
        if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
            return []
        content = messages[-1].get("content")
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        return [b for b in content or [] if isinstance(b, dict)]

    def tool_results(self) -> list[dict[str, Any]]:
        """The `tool_result` blocks of the last user message."""
        return [b for b in self.last_user_blocks() if b.get("type") == "tool_result"]


class RequestLog(Sequence[ReceivedRequest]):
    """A thread-safe, append-only (until `clear`) list of received requests.

    Indexing and iteration work on a snapshot; `wait_for` blocks until enough has arrived.
    """

    def __init__(self) -> None:
        self._items: list[ReceivedRequest] = []
        self._cond = threading.Condition()

    def append(self, request: ReceivedRequest) -> None:
        with self._cond:
            self._items.append(request)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def snapshot(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._items)

    @overload
    def __getitem__(self, index: int) -> ReceivedRequest: ...
    @overload
    def __getitem__(self, index: slice) -> list[ReceivedRequest]: ...
    def __getitem__(self, index: int | slice) -> ReceivedRequest | list[ReceivedRequest]:
        with self._cond:
            return self._items[index]

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[ReceivedRequest]:
        return iter(self.snapshot())

    def __repr__(self) -> str:
        return f"RequestLog({[f'{r.method} {r.path}' for r in self.snapshot()]})"

    def messages(self) -> list[ReceivedRequest]:
        """The `POST /v1/messages` requests, in arrival order."""
        return [r for r in self.snapshot() if r.is_messages]

    def wait_for(
        self,
        condition: int | Callable[[list[ReceivedRequest]], bool],
        timeout: float = 10.0,
    ) -> list[ReceivedRequest]:
        """Block until at least `condition` requests arrived (or `condition(snapshot)` holds);
        return the snapshot. Raises TimeoutError after `timeout` seconds."""
        if isinstance(condition, int):
            count = condition
            condition = lambda items: len(items) >= count
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition(list(self._items)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fake upstream: condition not met; received {self!r}")
                self._cond.wait(remaining)
            return list(self._items)
