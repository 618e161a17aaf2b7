"""The gateway's replacements inside mitmproxy's HTTP layers, all in one place.

mitmproxy answers some requests itself, below every addon hook: a request line or header it
cannot parse, broken chunked framing, an upstream it cannot connect to. Two things about
that are wrong for a gateway in front of the Claude API, and there is no option or hook for
either, so these functions are replaced (and `tests/mitm/test_patches.py` fails when any of the
replaced mitmproxy functions changes, so a mitmproxy upgrade makes us look again):

1. Error pages. mitmproxy sends an HTML page (`_base.format_error`, `_http1.make_error_response`,
   and an inline ``content-type: text/html`` head in the HTTP/2 and HTTP/3 layers) whose text
   quotes the offending bytes, e.g. ``Bad HTTP request line: b'POST /?key=<token> ...'``. Claude
   clients print `error.message` from the Anthropic error shape and nothing from HTML. They
   become ``{"type":"error","error":{"type":...,"message":...}}`` with
   ``content-type: application/json``, the status mitmproxy chose, and a fixed message that
   never quotes request bytes (`gatehouse.wire.protocolerrors`).

2. HTTP/1 trailers. mitmproxy 12's HTTP/1 body reader raises ``NotImplementedError("HTTP
   trailers are not implemented yet.")`` when a chunked message ends with trailer fields
   (`_http1.Http1Connection.read_body`). That exception escapes the layer: "mitmproxy has
   crashed!", and the client waits forever for an answer. It happens while the body is read,
   before any addon hook runs, so no addon can refuse it (Credentials' ``trailers = None``
   comes too late). The body reader is wrapped so that trailers are an HTTP/1 protocol error
   (like any other framing error): the connection is answered with a 400 (a request) or the
   client gets a 502 (a response from the upstream), and the gateway keeps serving.
   mitmproxy's HTTP/1 server closes a connection with a malformed body without answering at
   all; the client now gets the same JSON 400 first.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import h11
from mitmproxy import http, version
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _base, _http1, _http2, _http3, _http_h2, _http_h3
from mitmproxy.proxy.layers.http._events import RequestProtocolError

from gatehouse.wire import protocolerrors

log = logging.getLogger(__name__)

# The mitmproxy functions these patches replace or depend on, with the sha256 of their source
# in the mitmproxy version they were written against. A test compares them.
WRITTEN_FOR = "12.3.1"
CHECKED_SOURCES: dict[str, str] = {
    "mitmproxy.proxy.layers.http._base.format_error": "26271a67770fbaf15df76fbce2eae73accd7c5559ba7c0181056e0992abd4d2f",
    "mitmproxy.proxy.layers.http._http1.make_error_response": "03ce75ab62e8e78ba1bc19e735d55a520bf878929c32866868dd234996b4b281",
    "mitmproxy.proxy.layers.http._http1.make_body_reader": "9b076acda459637bde527694ba13bd723cb29ced1bb08e2673b9e4c64eca2471",
    "mitmproxy.proxy.layers.http._http1.Http1Connection.read_body": "aece271029af36e4b7eaf84aa17ddcf4ee0efb35e7f04c842c2a7333804a71f1",
    "mitmproxy.proxy.layers.http._http1.Http1Server.send": "cc218a1337c0f5cfba087b270eab789eea877c9a5201eaf22f2b8927efcce85c",
    "mitmproxy.proxy.layers.http._http1.Http1Server.read_headers": "3fe0945216bcf7bc505e296e44dd33908b19aa900d4157e977499bf7164027d6",
    "mitmproxy.proxy.layers.http._http2.Http2Connection._handle_event": "7fc814a8a507f234678605fecaf0c03ffbd948dcfac53792c1233399170ca601",
    "mitmproxy.proxy.layers.http._http3.Http3Connection._handle_event": "9fd5b74f994c3af8ab43deba2d60f5856a00b30737ee33346c5b3cfa6d593c25",
    # Not replaced, relied upon: gatehouse.mitm.protocols runs the built-in next_layer itself and
    # defers decisions; gatehouse.mitm.logsafety wraps the Dumper's output stream and request line.
    "mitmproxy.addons.next_layer.NextLayer.next_layer": "d277fef31bbe95192158758b3b7a3f1d1bb064490dc9a6b1a56a649c7feab263",
    "mitmproxy.proxy.layer.NextLayer._ask": "4d8ace76d8488336145c8cd65dd7484051500e20e021dfd7abe2aa16d7b5ea6c",
    "mitmproxy.addons.dumper.Dumper._echo_request_line": "8e68aed9b090eb933944f57466dcfc5e91d71c553bb9b2e70ea102e0a6eb20db",
    "mitmproxy.addons.dumper.Dumper.echo_flow": "db822ec74e0b4fd6bc61790cb492030e588e79818a8c007e6006b7f0ecac1daf",
}

_originals: dict[tuple[Any, str], Any] = {}
_inherited: set[tuple[Any, str]] = set()  # replaced attributes that the owner did not define itself


# -- 1. error pages ---------------------------------------------------------------------------


def format_error(status_code: int, message: str) -> bytes:
    """Replaces `_base.format_error`: the body of every error mitmproxy answers itself."""
    return protocolerrors.error_body(status_code, message)


def make_error_response(status_code: int, message: str = "") -> bytes:
    """Replaces `_http1.make_error_response`: a whole HTTP/1 error response (JSON, closes)."""
    headers = {**protocolerrors.error_headers(status_code), "connection": "close"}
    return http1.assemble_response(http.Response.make(status_code, format_error(status_code, message), headers))


_MITMPROXY_ERROR_HEAD = ((b"server", version.MITMPROXY.encode()), (b"content-type", b"text/html"))


def _json_error_head(headers: Any) -> Any:
    """The HTTP/2 and HTTP/3 layers send their error head inline: ``:status``, ``server:
    mitmproxy <version>``, ``content-type: text/html``. Only that exact head is rewritten."""
    if (
        isinstance(headers, list)
        and len(headers) == 3
        and headers[0][0] == b":status"
        and tuple(headers[1:]) == _MITMPROXY_ERROR_HEAD
    ):
        status = int(headers[0][1])
        return [headers[0], *((k.encode(), v.encode()) for k, v in protocolerrors.error_headers(status).items())]
    return headers


def _wrap_send_headers(original: Callable) -> Callable:
    def send_headers(self: Any, stream_id: int, headers: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, stream_id, _json_error_head(headers), *args, **kwargs)

    return send_headers


# -- 2. HTTP/1 trailers and body framing errors -----------------------------------------------


class NoTrailersReader:
    """Wraps h11's body reader: a message that ends with trailer fields is a protocol error
    (mitmproxy's `read_body` would raise NotImplementedError and crash the connection)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @staticmethod
    def _check(event: Any) -> Any:
        if isinstance(event, h11.EndOfMessage) and event.headers:
            raise h11.RemoteProtocolError(protocolerrors.TRAILERS_MESSAGE)
        return event

    def __call__(self, buf: Any) -> Any:
        return self._check(self.inner(buf))

    def read_eof(self) -> Any:
        return self._check(self.inner.read_eof())


def make_body_reader(expected_size: int | None) -> Any:
    return NoTrailersReader(_originals[(_http1, "make_body_reader")](expected_size))


def read_body(self: Any, event: Any) -> Any:
    """`Http1Connection.read_body`, with one addition on the client side: when it gives up on a
    malformed request body (it closes the connection, then reports a RequestProtocolError),
    the client is first answered with a JSON 400 instead of nothing."""
    original = _originals[(_http1.Http1Connection, "read_body")]
    pending_close: commands.CloseConnection | None = None
    for command in original(self, event):
        if pending_close is not None:
            if (
                isinstance(command, _base.ReceiveHttp)
                and isinstance(command.event, RequestProtocolError)
                and self.response is None
                and self.conn.state & ConnectionState.CAN_WRITE
            ):
                message = command.event.message
                if protocolerrors.TRAILERS_MESSAGE not in message:
                    message = protocolerrors.BODY_FRAMING_MESSAGE
                yield commands.SendData(self.conn, _http1.make_error_response(400, message))
            yield pending_close
            pending_close = None
        if (
            isinstance(self, _http1.Http1Server)
            and isinstance(command, commands.CloseConnection)
            and command.connection is self.conn
        ):
            pending_close = command
            continue
        yield command
    if pending_close is not None:
        yield pending_close


# -- installation -----------------------------------------------------------------------------


def _replace(owner: Any, name: str, new: Any) -> None:
    key = (owner, name)
    if key not in _originals:
        _originals[key] = getattr(owner, name)
        if isinstance(owner, type) and name not in owner.__dict__:
            _inherited.add(key)
    setattr(owner, name, new)


def installed() -> bool:
    return bool(_originals)


def install() -> None:
    """Apply every patch (idempotent)."""
    if installed():
        return
    changed = [name for name, digest in CHECKED_SOURCES.items() if _digest_or_none(name) != digest]
    if changed:
        # An error at start-up stops mitmdump (its error check): a patch written for other code
        # may no longer close what it closed, and the gateway fails closed rather than guess.
        log.error(
            f"gatehouse: mitmproxy {version.VERSION} changed code the gateway patches or relies on "
            f"({', '.join(changed)}); it was written for mitmproxy {WRITTEN_FOR}. Install mitmproxy "
            f"{WRITTEN_FOR}, or review addons/mitm/patches.py and update its digests."
        )
    for module in (_base, _http1, _http2, _http3):
        _replace(module, "format_error", format_error)
    _replace(_http1, "make_error_response", make_error_response)
    _replace(
        _http_h2.BufferedH2Connection, "send_headers", _wrap_send_headers(_http_h2.BufferedH2Connection.send_headers)
    )
    _replace(
        _http_h3.LayeredH3Connection, "send_headers", _wrap_send_headers(_http_h3.LayeredH3Connection.send_headers)
    )
    _replace(_http1, "make_body_reader", make_body_reader)
    _replace(_http1.Http1Connection, "read_body", read_body)


def uninstall() -> None:
    """Put mitmproxy's own functions back (the gateway script was unloaded)."""
    for (owner, name), original in reversed(list(_originals.items())):
        if (owner, name) in _inherited:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _originals.clear()
    _inherited.clear()


def _digest_or_none(qualified_name: str) -> str | None:
    try:
        return source_digest(qualified_name)
    except (ImportError, AttributeError, OSError, TypeError):
        return None


def source_digest(qualified_name: str) -> str:
    """sha256 of the source of a mitmproxy function named `module.attr[.attr]` (the original
    one when it is patched)."""
    import importlib

    parts = qualified_name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        owner = obj
        for attr in parts[i:]:
            owner, obj = obj, getattr(obj, attr)
        obj = _originals.get((owner, parts[-1]), obj)
        return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()
    raise ImportError(qualified_name)
