"""`FakeUpstream`, the fake API server a test starts: its lifecycle (TLS files made or reused),
its addresses, the queue of scripted replies, and which reply a request gets: a 401 without the
expected API key, else the test's responder, else the queue (for `POST /v1/messages`), else the
built-in answers of the API's other endpoints."""

from __future__ import annotations

import collections
import tempfile
import threading
import traceback
from pathlib import Path

from support.fake_upstream.httpserver import Server
from support.fake_upstream.messages import DEFAULT_TEXT, MODELS, estimate_tokens
from support.fake_upstream.received import ReceivedRequest, RequestLog
from support.fake_upstream.replies import Reply, Responder
from support.fake_upstream.responders import text_reply_for
from support.tls_certs import TLSFiles, server_ssl_context, write_tls_files


class FakeUpstream:
    """The fake API server. Use as a context manager, or call `start()` / `stop()`.

    tls=True serves HTTPS with a server certificate for `localhost` and 127.0.0.1 signed by a
    CA of its own (`ca_cert_path`), made in a temporary directory unless `cert_dir` (kept) or
    `tls_files` (reused, e.g. to share one CA between servers) is given.
    api_key: when set, requests whose `x-api-key` (or `Authorization: Bearer`) differs get a 401
    authentication_error, like the real API.
    """

    def __init__(
        self,
        tls: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cert_dir: str | Path | None = None,
        tls_files: TLSFiles | None = None,
        api_key: str | None = None,
        responder: Responder | None = None,
        verbose: bool = False,
    ) -> None:
        self.tls = tls
        self.host = host
        self.api_key = api_key
        self.responder: Responder | None = responder
        self.verbose = verbose
        self.requests = RequestLog()
        self.errors: list[BaseException] = []  # exceptions raised by `responder`
        self._requested_port = port
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._tls_files = tls_files
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._queue: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()  # set by stop(): waiting streams give up

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        if self._server is not None:
            raise RuntimeError("fake upstream already started")
        context = None
        if self.tls:
            if self._tls_files is None:
                directory = self._cert_dir
                if directory is None:
                    self._tmpdir = tempfile.TemporaryDirectory(prefix="fake-upstream-")
                    directory = Path(self._tmpdir.name)
                self._tls_files = write_tls_files(directory)
            context = server_ssl_context(self._tls_files)
        self.stopping.clear()
        self._server = Server((self.host, self._requested_port), self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, drop open connections (paused streams give up), remove temp certs."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()
        server.connections.cut()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
            self._tls_files = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("fake upstream not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def ca_cert_path(self) -> str | None:
        """PEM of the CA that signed the server certificate (None without TLS)."""
        return str(self._tls_files.ca_cert) if self.tls and self._tls_files else None

    @property
    def tls_files(self) -> TLSFiles | None:
        return self._tls_files

    # -- scripting -----------------------------------------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies for the next `POST /v1/messages` requests, first in first out."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending_replies(self) -> int:
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget requests, queued replies, the responder and recorded errors."""
        with self._lock:
            self._queue.clear()
        self.requests.clear()
        self.responder = None
        self.errors.clear()

    def _authorised(self, request: ReceivedRequest) -> bool:
        if self.api_key is None:
            return True
        bearer = request.headers.get("authorization", "")
        return request.header_values("x-api-key") == [self.api_key] or bearer == f"Bearer {self.api_key}"

    def choose_reply(self, request: ReceivedRequest) -> Reply:
        """The reply `request` gets (see the module docstring); called by the server's handler."""
        if not self._authorised(request):
            return Reply.error(401, "authentication_error", "invalid x-api-key")
        responder = self.responder
        if responder is not None:
            try:
                reply = responder(request)
            except Exception as e:  # a test bug: make it visible, to the client and the test
                self.errors.append(e)
                traceback.print_exc()
                return Reply.error(
                    500, "api_error", f"fake upstream responder raised {e!r}", extra_headers={"x-should-retry": "false"}
                )
            if reply is not None:
                return reply
        return self._default_reply(request)

    def _default_reply(self, request: ReceivedRequest) -> Reply:
        route, method = request.route, request.method
        if request.is_messages:
            with self._lock:
                if self._queue:
                    return self._queue.popleft()
            return text_reply_for(request, DEFAULT_TEXT)
        if method == "POST" and route == "/v1/messages/count_tokens":
            return Reply.raw({"input_tokens": estimate_tokens(len(request.body))})
        if method == "GET" and route == "/v1/models":
            return Reply.raw(
                {"data": MODELS, "has_more": False, "first_id": MODELS[0]["id"], "last_id": MODELS[-1]["id"]}
            )
        if method == "GET" and route.startswith("/v1/models/"):
            model_id = route.removeprefix("/v1/models/")
            for model in MODELS:
                if model["id"] == model_id:
                    return Reply.raw(model)
            return Reply.error(404, "not_found_error", f"model: {model_id}")
        if route.startswith("/api/claude_code/"):
            return Reply.raw({})
        return Reply.error(404, "not_found_error", f"Not found: {method} {route}")
