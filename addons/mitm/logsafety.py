"""LogSafety: no line the gateway process prints can show a token or a secret.

mitmproxy's own log lines quote request bytes (``Bad HTTP request line: b'...<token>...'``),
identity logs the host and path of a refused request before masking ever sees the flow, and
mitmdump's Dumper prints every flow's URL to stdout without going through `logging`. One
place redacts all of it (`gatehouse.masking.redact`):

- every log record of the process, whoever logs it: a `logging` record factory makes each
  record render its message (and exception text, and stack) once, redacted, when it is first
  formatted; handlers added later get the same redacted text;
- the Dumper's output stream (``dumper.outfp``), and ``sys.stdout`` / ``sys.stderr`` for
  anything printed directly, are wrapped with the same redaction, line by line. The Dumper
  cuts long URLs to the terminal's width before printing them, which would cut a secret in
  two halves no rule recognises: its request line is given the URL already redacted.

What is redacted: JWTs, ``Bearer``/``Basic`` credentials, credential headers, URL passwords,
Anthropic keys, the gateway's injected API keys (read from the policy's key sources, never
logged), and, once a policy is loaded, everything its masker masks (``GatewayState.masker``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx

from gatehouse.credentials.keys import MissingKey, read_key
from gatehouse.masking.redact import LineRedactor, Redactor
from gatehouse.mitm.state import GatewayState

# One redactor for the process: log records created anywhere refer to it when rendered.
REDACTOR = Redactor()
KEY_REFRESH_SECONDS = 5.0

_rendering = threading.local()


def _render(record: logging.LogRecord, base_get_message: Callable[[], str]) -> str:
    try:
        text = base_get_message()
    except Exception as e:  # bad arguments: show the template only
        text = f"{record.msg!s} [unformattable log arguments: {type(e).__name__}]"
    if record.exc_info:
        if record.exc_info[0] is not None:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_info = None
    if record.exc_text:
        text += "\n" + record.exc_text
        record.exc_text = None
    if record.stack_info:
        text += "\n" + record.stack_info
        record.stack_info = None
    if getattr(_rendering, "active", False):
        # Redacting a line logged this one (the masker, a key source): no recursion.
        return REDACTOR.redact(text, dynamic=False)
    _rendering.active = True
    try:
        return REDACTOR.redact(text)
    finally:
        _rendering.active = False


class RedactingRecord(logging.LogRecord):
    """Renders (message + exception + stack) once, redacted; formatters then see plain text
    and no exc_info, so no formatter prints the raw exception."""

    def getMessage(self) -> str:
        rendered = self.__dict__.get("_gatehouse_rendered")
        if rendered is None:
            rendered = _render(self, super().getMessage)
            self.msg, self.args = rendered, ()
            self._gatehouse_rendered = rendered
        return rendered


_record_classes: dict[type, type] = {logging.LogRecord: RedactingRecord}
_previous_factory: Callable[..., logging.LogRecord] | None = None


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # A factory installed after ours may still call us once we are uninstalled.
    record = (_previous_factory or logging.LogRecord)(*args, **kwargs)
    cls = type(record)
    if not isinstance(record, RedactingRecord):
        new = _record_classes.get(cls)
        if new is None:
            new = _record_classes[cls] = type(f"Redacting{cls.__name__}", (RedactingRecord, cls), {})
        record.__class__ = new
    return record


def install_record_factory() -> None:
    global _previous_factory
    current = logging.getLogRecordFactory()
    if current is _factory:
        return
    _previous_factory = current
    logging.setLogRecordFactory(_factory)


def uninstall_record_factory() -> None:
    global _previous_factory
    if logging.getLogRecordFactory() is _factory and _previous_factory is not None:
        logging.setLogRecordFactory(_previous_factory)
    _previous_factory = None


class RedactingStream:
    """A text stream that redacts what is written to it, line by line."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._lines = LineRedactor(REDACTOR, inner.write)

    def write(self, text: str) -> int:
        with self._lock:
            self._lines.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            self._lines.flush()
        self.inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wrap(stream: Any) -> Any:
    if stream is None or isinstance(stream, RedactingStream):
        return stream
    return RedactingStream(stream)


def unwrap(stream: Any) -> Any:
    if isinstance(stream, RedactingStream):
        stream.flush()
        return stream.inner
    return stream


class _RedactedRequest:
    """A request whose URL reads redacted; everything else is the real request's."""

    def __init__(self, request: Any) -> None:
        self._request = request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    @property
    def url(self) -> str:
        return REDACTOR.redact(self._request.url)

    @property
    def pretty_url(self) -> str:
        return REDACTOR.redact(self._request.pretty_url)


class _RedactedFlow:
    def __init__(self, flow: Any) -> None:
        self._flow = flow
        self.request = _RedactedRequest(flow.request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._flow, name)


class _RedactingRequestLine:
    """The Dumper's `_echo_request_line`, given each flow with its URL redacted."""

    def __init__(self, original: Callable[[Any], None]) -> None:
        self._original = original

    def __call__(self, flow: Any) -> None:
        self._original(_RedactedFlow(flow))


class LogSafety:
    """mitmproxy addon: installs the redaction of every log line and of the Dumper's output."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._keys_at = float("-inf")

    # -- lifecycle -------------------------------------------------------------------------
    def load(self, loader: Any) -> None:
        REDACTOR.mask = self._mask
        REDACTOR.refresh = self._refresh_keys
        install_record_factory()
        sys.stdout = wrap(sys.stdout)
        sys.stderr = wrap(sys.stderr)
        self._wrap_dumper()

    def running(self) -> None:
        self._wrap_dumper()

    def configure(self, updated: set[str]) -> None:
        # A (re)loaded policy may name other key sources.
        self._keys_at = float("-inf")

    def done(self) -> None:
        # Redaction stays for the life of the process: addons shut down in order, and others
        # (a HAR dump, mitmproxy's own shutdown lines) still print after this one is done.
        for stream in (sys.stdout, sys.stderr, getattr(self._dumper(), "outfp", None)):
            if isinstance(stream, RedactingStream):
                stream.flush()

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    def _dumper() -> Any:
        try:
            return ctx.master.addons.get("dumper")
        except Exception:
            return None

    def _wrap_dumper(self) -> None:
        dumper = self._dumper()
        if dumper is None:
            return
        if hasattr(dumper, "outfp"):
            dumper.outfp = wrap(dumper.outfp)
        line = getattr(dumper, "_echo_request_line", None)
        if line is not None and not isinstance(line, _RedactingRequestLine):
            dumper._echo_request_line = _RedactingRequestLine(line)

    def _mask(self, text: str) -> str:
        masker = self.state.masker
        if masker is None:
            return text
        return masker.mask_text(text)[0]

    def _refresh_keys(self) -> None:
        now = time.monotonic()
        if now - self._keys_at < KEY_REFRESH_SECONDS:
            return
        self._keys_at = now
        policy = self.state.policy
        if policy is None:
            return
        keys = []
        for source in (policy.credentials.default, *policy.credentials.groups.values()):
            try:
                keys.append(read_key(source))
            except MissingKey:
                pass
        REDACTOR.set_literals(keys)
