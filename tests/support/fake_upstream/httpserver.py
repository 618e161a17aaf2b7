"""The HTTP/1.1 server under `FakeUpstream`: each connection gets a thread of its own (TLS
handshake included) and is cut when the fake stops; the handler reads a request (Content-Length
or chunked), logs it, and writes the chosen reply as JSON or SSE, with the reply's gzip, delays,
pauses, dropped connections and mid-stream errors."""

from __future__ import annotations

import gzip as gzip_module
import socket
import socketserver
import ssl
import sys
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from support.fake_upstream.messages import compact_json, complete_message, error_body, estimate_tokens, random_hex
from support.fake_upstream.received import ReceivedRequest
from support.fake_upstream.replies import Reply
from support.fake_upstream.sse import encode_sse_event, sse_events
from support.sockets import OpenSockets

if TYPE_CHECKING:
    from support.fake_upstream.server import FakeUpstream


MAX_BODY_BYTES = 64 * 1024 * 1024


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _DropConnection(Exception):
    """Abandon the response: close the socket without finishing it."""


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def _split_sse(raw: bytes) -> list[bytes]:
    """Split an SSE body after each blank line (LF or CRLF line ends), keeping every byte."""
    chunks, start, i = [], 0, 0
    while i < len(raw):
        if raw.startswith(b"\n\n", i):
            end = i + 2
        elif raw.startswith(b"\r\n\r\n", i):
            end = i + 4
        else:
            i += 1
            continue
        chunks.append(raw[start:end])
        start = i = end
    if start < len(raw):
        chunks.append(raw[start:])
    return chunks


def _sse_chunk_name(chunk: bytes) -> str | None:
    for line in chunk.splitlines():
        if line.startswith(b"event:"):
            return line[6:].strip().decode("utf-8", "replace")
    return None


class Handler(BaseHTTPRequestHandler):
    """One connection: reads each request, logs it on the upstream, writes the reply it chooses."""

    protocol_version = "HTTP/1.1"  # keep-alive; every response has a length or is chunked
    # Headers and body go out in separate small writes; with Nagle on, a delayed ACK on the
    # peer stalls the second write ~40 ms (measured on loopback).
    disable_nagle_algorithm = True
    server_version = "fake-anthropic/1"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.upstream.verbose:
            sys.stderr.write(f"fake-upstream: {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- request -------------------------------------------------------------------------------

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(65537)
            if not line.endswith(b"\n"):
                raise _BadRequest(400, "truncated chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, f"bad chunk size {line!r}") from None
            if size == 0:
                break
            if len(body) + size > MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")
            data = self.rfile.read(size)
            if len(data) != size or self.rfile.read(2) != b"\r\n":
                raise _BadRequest(400, "truncated chunk")
            body += data
        while True:  # trailer section, ended by an empty line
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
        return bytes(body)

    def _read_body(self) -> tuple[bytes, bool]:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            return self._read_chunked(), True
        length = self.headers.get("Content-Length")
        if length is None:
            return b"", False
        try:
            n = int(length)
        except ValueError:
            raise _BadRequest(400, f"bad content-length {length!r}") from None
        if n < 0 or n > MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        data = self.rfile.read(n)
        if len(data) != n:
            raise _BadRequest(400, "truncated body")
        return data, False

    def _handle(self) -> None:
        up = self.server.upstream
        try:
            try:
                body, chunked = self._read_body()
            except _BadRequest as e:
                self.close_connection = True
                self._send_json(e.status, error_body(e.status, None, str(e)), Reply(), None)
                return
            items = tuple((k.lower(), v) for k, v in self.headers.items())
            headers: dict[str, str] = {}
            for k, v in items:
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            request = ReceivedRequest(
                method=self.command,
                path=self.path,
                headers=headers,
                header_items=items,
                body=body,
                http_version=self.request_version,
                chunked=chunked,
                tls=isinstance(self.connection, ssl.SSLSocket),
                received_at=time.monotonic(),
            )
            up.requests.append(request)
            self._send(up.choose_reply(request), request)
        except _DropConnection:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to answer

    # -- response ------------------------------------------------------------------------------

    def _start(self, status: int, reply: Reply, request_id: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers = {"request-id": request_id, "anthropic-organization-id": "fake-org", **headers, **reply.extra_headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()  # one write: status line and headers

    def _use_gzip(self, reply: Reply, request: ReceivedRequest | None) -> bool:
        return bool(reply.gzip and request and _accepts_gzip(request.headers.get("accept-encoding", "")))

    def _send_json(
        self, status: int, body: Any, reply: Reply, request: ReceivedRequest | None, request_id: str | None = None
    ) -> None:
        request_id = request_id or f"req_fake_{random_hex()}"
        if isinstance(body, bytes):
            data = body
        else:
            if isinstance(body, dict) and body.get("type") == "error" and body.get("request_id") is None:
                body = dict(body, request_id=request_id)
            data = compact_json(body)
        headers = {"content-type": reply.content_type}
        if self._use_gzip(reply, request):
            data = gzip_module.compress(data)
            headers["content-encoding"] = "gzip"
            headers["vary"] = "accept-encoding"
        headers["content-length"] = str(len(data))
        self._start(status, reply, request_id, headers)
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send(self, reply: Reply, request: ReceivedRequest) -> None:
        stopping = self.server.upstream.stopping
        if reply.delay_before_headers:
            stopping.wait(reply.delay_before_headers)
        request_id = f"req_fake_{random_hex()}"
        if reply.raw_sse is not None:
            raw = reply.raw_sse
            chunks = list(raw) if isinstance(raw, list) else _split_sse(raw)
            return self._send_sse(reply, request, request_id, chunks)
        if reply.msg is None:
            return self._send_json(
                reply.status, reply.body if reply.body is not None else {}, reply, request, request_id
            )
        message = complete_message(reply.msg, model=request.model, input_tokens=estimate_tokens(len(request.body)))
        stream = reply.stream if reply.stream is not None else request.wants_stream
        if not stream:
            return self._send_json(reply.status, message, reply, request, request_id)
        events = sse_events(
            message, chunk_chars=reply.chunk_chars, json_chunk_chars=reply.json_chunk_chars, pings=reply.pings
        )
        self._send_sse(reply, request, request_id, [encode_sse_event(*e) for e in events])

    def _send_sse(self, reply: Reply, request: ReceivedRequest, request_id: str, chunks: list[bytes]) -> None:
        stopping = self.server.upstream.stopping
        compressor = zlib.compressobj(wbits=31) if self._use_gzip(reply, request) else None
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
        }
        if compressor:
            headers["content-encoding"] = "gzip"
            headers["vary"] = "accept-encoding"
        self._start(reply.status, reply, request_id, headers)

        def write(data: bytes, final: bool = False) -> None:
            if compressor:
                data = compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
            if data:  # an empty chunk would be read as the end of the body
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        pause = reply.pause_before_event
        if isinstance(pause, str):
            pause = next((i for i, c in enumerate(chunks) if _sse_chunk_name(c) == pause), None)

        for i in range(len(chunks) + 1):
            if i == reply.drop_after_event:
                raise _DropConnection()
            if i == reply.error_mid_stream:
                write(encode_sse_event("error", reply.mid_stream_error))
                write(b"", final=True)
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True
                return
            if i == len(chunks):
                break
            if i == pause and reply.gate is not None and not reply.gate.hold(stopping):
                raise _DropConnection()
            if i > 0 and reply.delay_between_events:
                stopping.wait(reply.delay_between_events)
            write(chunks[i])
        write(b"", final=True)
        self.wfile.write(b"0\r\n\r\n")


class Server(ThreadingHTTPServer):
    """Serves `upstream` on `address`, each connection in a thread of its own."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], upstream: FakeUpstream, ssl_context: ssl.SSLContext | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.upstream = upstream
        self.ssl_context = ssl_context
        self.connections = OpenSockets()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take
        # seconds in a sandbox; the name is unused here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread, so a slow TLS handshake never blocks accept().
        sock: socket.socket = request
        if self.ssl_context is not None:
            try:
                sock.settimeout(10)
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                return
        self.connections.add(sock)
        try:
            Handler(sock, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.connections.discard(sock)
            if sock is not request:
                sock.close()
