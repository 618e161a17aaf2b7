"""Masking: secrets are replaced before a request leaves and before a response comes back.

The work is done by the pure core (`addons.core.masker`, `addons.core.sse`); this addon only
moves bodies between mitmproxy flows and it:

- `request`: masks `/v1/messages` and `/v1/messages/count_tokens` bodies; refuses a body it
  cannot parse (400 invalid_request_error) unless the policy says ``on_unparseable =
  "forward"``; asks the upstream for an uncompressed stream when the request streams;
- `responseheaders`: a 2xx `text/event-stream` response is streamed through an `SsePipeline`
  (the flow's one stream modifier);
- `response`: a buffered JSON or SSE response is masked whole.

Findings (rule, where, fingerprint; never the value) go to the flow's Exchange for the
recorder, with a ``Decision("masking", "mask", ...)`` when anything was masked.

Wiring: the masker comes from the policy. `on_policy(policy)` builds it from
``policy.masking`` and the state directory (pass it to `PolicyLoader(on_policy=[...])`), or
`configure_masker(masker, policy_masking)` sets one directly (tests, other integrations).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from addons.core import apierrors, jsonbody
from addons.core.jsonbody import DuplicateKey
from addons.core.exchange import Finding
from addons.core.masker import Masker
from addons.core.rules import MaskingPolicy
from addons.core.sse import SsePipeline, mask_sse_body
from addons.flowutil import exchange_of, fail_closed, refuse

log = logging.getLogger(__name__)

INSPECTED_ENDPOINTS = ("/v1/messages", "/v1/messages/count_tokens")
# Only these answer with model output (count_tokens answers with a number).
RESPONSE_ENDPOINTS = ("/v1/messages",)
# Bodies larger than this are parsed and masked on a worker thread.
OFFLOAD_BYTES = 256 * 1024


def _endpoint(path: str, endpoints: tuple[str, ...]) -> bool:
    """Whether the path (query ignored) is one of `endpoints`; a prefix added by an upstream
    base path (``/proxy/v1/messages``) is allowed."""
    p = path.split("?", 1)[0].rstrip("/")
    return any(p == e or p.endswith(e) for e in endpoints)


def _media_type(headers: Any) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


class UnparseableBody(ValueError):
    """A body on an inspected endpoint that the masker cannot read. The message is safe to
    show the client: it never quotes the body."""


def parse_json_body(message: http.Message, what: str) -> Any:
    """The JSON body of a request or response, or `UnparseableBody` saying why not."""
    media = _media_type(message.headers)
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnparseableBody(f"{what} has Content-Type {media!r}; the gateway inspects application/json only")
    try:
        raw = message.get_content(strict=True)
    except ValueError:
        enc = message.headers.get("content-encoding", "")
        raise UnparseableBody(f"{what} has a Content-Encoding ({enc!r}) the gateway cannot decode") from None
    if raw is None:
        raise UnparseableBody(f"{what} has no body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnparseableBody(f"{what} is not UTF-8 text (invalid byte at offset {e.start})") from None
    try:
        return jsonbody.loads(text)
    except DuplicateKey as e:
        raise UnparseableBody(f"{what} is ambiguous: {e}") from None
    except RecursionError:
        raise UnparseableBody(f"{what} is JSON nested too deeply to inspect") from None
    except ValueError as e:
        raise UnparseableBody(f"{what} is not valid JSON ({type(e).__name__} at line {getattr(e, 'lineno', '?')}, "
                              f"column {getattr(e, 'colno', '?')})") from None


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _record(flow: http.HTTPFlow, findings: list[Finding], side: str) -> None:
    if not findings:
        return
    ex = exchange_of(flow)
    (ex.request_findings if side == "request" else ex.response_findings).extend(findings)
    counts = Counter(f.rule for f in findings)
    ex.decide("masking", "mask", f"{len(findings)} secret(s) masked in the {side}",
              side=side, count=len(findings), rules=dict(sorted(counts.items())))



@dataclass
class Inspected:
    """What inspecting a body gave: new content (None: unchanged), findings, or why not."""

    content: bytes | None = None
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    # The gateway itself failed (not the body): never forwarded, whatever on_unparseable says.
    internal: bool = False
    streams: bool = False


def _inspection_fails_closed(fn: Any) -> Any:
    """An unexpected failure while inspecting becomes an inspection error that is always
    refused (even with on_unparseable = "forward", which is for bodies, not for bugs), never
    an exception that would let mitmproxy forward the body unmasked."""
    def wrapper(*args: Any) -> Inspected:
        try:
            return fn(*args)
        except RecursionError:
            return Inspected(error="it is nested too deeply to inspect")
        except Exception as e:
            # The exception's text may quote the body: log its type and place only.
            tb = e.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
            log.error(f"gatehouse: masking failed ({type(e).__name__} at {where}); refused, not forwarded")
            return Inspected(error=f"the gateway failed to inspect it ({type(e).__name__})", internal=True)
    return wrapper


@_inspection_fails_closed
def _inspect_request(masker: Masker, req: http.Request) -> Inspected:
    """Parse and mask a request body. Runs on a worker thread for big bodies: it only reads
    the request; the caller applies the result on the event loop."""
    try:
        body = parse_json_body(req, "the request body")
    except UnparseableBody as e:
        return Inspected(error=str(e))
    if not isinstance(body, dict):
        return Inspected(error="the request body is not a JSON object")
    findings = masker.mask_request(body)
    return Inspected(content=_dumps(body) if findings else None, findings=findings, streams=body.get("stream") is True)


@_inspection_fails_closed
def _inspect_response(masker: Masker, resp: http.Response, hold_back_chars: int) -> Inspected:
    """Mask a buffered response: a JSON message, or a whole SSE body through the same
    pipeline a stream goes through."""
    if _media_type(resp.headers) == "text/event-stream":
        try:
            raw = resp.get_content(strict=True) or b""
        except ValueError:
            return Inspected(error="the response has a Content-Encoding the gateway cannot decode")
        masked, pipe = mask_sse_body(masker, raw, hold_back_chars=hold_back_chars)
        if pipe.errors:
            return Inspected(error="the event stream could not be inspected")
        return Inspected(content=masked if pipe.findings else None, findings=pipe.findings)
    try:
        msg = parse_json_body(resp, "the response body")
    except UnparseableBody as e:
        return Inspected(error=str(e))
    findings = masker.mask_response_message(msg) if isinstance(msg, dict) else []
    return Inspected(content=_dumps(msg) if findings else None, findings=findings)


class Masking:
    def __init__(self, masker: Masker | None = None, policy: MaskingPolicy | None = None) -> None:
        self.masker: Masker | None = None
        self.policy: MaskingPolicy | None = None
        if masker is not None:
            self.configure_masker(masker, policy or masker.policy)

    # -- wiring -----------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        # Everything comes from the policy's [masking] section: no options of its own.
        pass

    def configure_masker(self, masker: Masker | None, policy_masking: MaskingPolicy | None) -> None:
        self.masker = masker
        self.policy = policy_masking
        if masker is not None and policy_masking is not None:
            log.info(f"gatehouse: masking {'on' if masker.enabled else 'off'} "
                     f"({len(policy_masking.rules)} rules, hold-back {policy_masking.hold_back_chars} characters)")

    def _active(self) -> Masker | None:
        m = self.masker
        return m if m is not None and m.enabled else None

    def _forward_unparseable(self) -> bool:
        return self.policy is not None and self.policy.on_unparseable == "forward"

    # -- hooks ------------------------------------------------------------------------------

    @fail_closed("masking")
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # A secret in the URL (path or query) is masked before anything else sees the flow: it
        # never goes upstream, and mitmdump's flow line, printed later, shows the masked URL.
        masker = self._active()
        if masker is None:
            return
        masked, findings = masker.mask_text(flow.request.path, "url")
        if findings:
            flow.request.path = masked
            _record(flow, findings, "request")

    @fail_closed("masking")
    async def request(self, flow: http.HTTPFlow) -> None:
        masker = self._active()
        if masker is None or flow.response is not None:
            return
        if not _endpoint(flow.request.path, INSPECTED_ENDPOINTS) or flow.request.method.upper() != "POST":
            return
        req = flow.request
        if len(req.raw_content or b"") > OFFLOAD_BYTES:
            # Parsing and masking megabytes takes milliseconds to seconds: off the event loop,
            # so that other flows are not stalled meanwhile.
            result = await asyncio.to_thread(_inspect_request, masker, req)
        else:
            result = _inspect_request(masker, req)
        if result.error is not None:
            if self._forward_unparseable() and not result.internal:
                exchange_of(flow).decide("masking", "forward", f"not inspected: {result.error}", side="request")
                log.warning(f"gatehouse: forwarding a request the gateway could not inspect: {result.error}")
                return
            refuse(flow, apierrors.invalid_request(f"Gatehouse could not inspect this request for secrets: {result.error}."),
                   "masking", rule="on_unparseable")
            return
        if result.content is not None:
            req.content = result.content
            _record(flow, result.findings, "request")
        if result.streams and _endpoint(req.path, RESPONSE_ENDPOINTS):
            # A compressed stream cannot be inspected chunk by chunk.
            req.headers["accept-encoding"] = "identity"

    @fail_closed("masking")
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        masker = self._active()
        resp = flow.response
        if masker is None or resp is None or not _endpoint(flow.request.path, RESPONSE_ENDPOINTS):
            return
        if not (200 <= resp.status_code < 300) or _media_type(resp.headers) != "text/event-stream":
            return
        if resp.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            # The upstream compressed it anyway: buffer it (mitmproxy decodes) and mask it whole.
            log.warning("gatehouse: upstream compressed an event stream; masking it buffered")
            return
        assert self.policy is not None
        if "content-length" in resp.headers:
            # Masking changes the length; mitmproxy frames the client's copy by these headers
            # (the upstream body is still read by the original ones).
            del resp.headers["content-length"]
            if resp.http_version == "HTTP/1.1":
                resp.headers["transfer-encoding"] = "chunked"
        resp.stream = SsePipeline(masker, hold_back_chars=self.policy.hold_back_chars)

    @fail_closed("masking")
    async def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None:
            return
        if isinstance(resp.stream, SsePipeline):
            self._finish_stream(flow, resp.stream)
            return
        masker = self._active()
        if resp.stream and masker is not None and _endpoint(flow.request.path, RESPONSE_ENDPOINTS):
            # Streamed by someone else (mitmproxy's stream_large_bodies): already sent.
            exchange_of(flow).decide("masking", "forward", "response streamed unmasked (stream_large_bodies)",
                                     side="response")
            log.warning("gatehouse: a response was streamed by mitmproxy itself and not masked; "
                        "do not set stream_large_bodies on the gateway")
            return
        if masker is None or exchange_of(flow).refused or not _endpoint(flow.request.path, RESPONSE_ENDPOINTS):
            return
        if not (200 <= resp.status_code < 300):
            return  # the API's own error bodies carry no model output
        assert self.policy is not None
        hold_back = self.policy.hold_back_chars
        if len(resp.raw_content or b"") > OFFLOAD_BYTES:
            result = await asyncio.to_thread(_inspect_response, masker, resp, hold_back)
        else:
            result = _inspect_response(masker, resp, hold_back)
        if result.error is not None:
            if self._forward_unparseable() and not result.internal:
                exchange_of(flow).decide("masking", "forward", f"not inspected: {result.error}", side="response")
                return
            refuse(flow, apierrors.api_error(f"Gatehouse could not inspect the API's response for secrets: {result.error}."),
                   "masking", rule="on_unparseable")
            return
        if result.content is not None:
            resp.content = result.content
            _record(flow, result.findings, "response")

    @fail_closed("masking")
    def error(self, flow: http.HTTPFlow) -> None:
        # A stream cut short: keep what the pipeline found for the recorder.
        if flow.response is not None and isinstance(flow.response.stream, SsePipeline):
            self._finish_stream(flow, flow.response.stream)

    def _finish_stream(self, flow: http.HTTPFlow, pipe: SsePipeline) -> None:
        if pipe.reported:
            return
        pipe.reported = True
        _record(flow, pipe.findings, "response")
        ex = exchange_of(flow)
        ex.errors.extend(pipe.errors)
