"""Masking: secrets are replaced in everything that crosses the gateway, both ways.

Deny by default: every flow that is not tunnelled to a passthrough host is inspected, whatever
its endpoint, method or status. The work is done by the pure core (`gatehouse.wire.bodies` reads a
body, `gatehouse.masking.masker`, `gatehouse.wire.pipeline`, `gatehouse.wire.headers`,
`gatehouse.masking.urlmask`); this addon moves bodies between mitmproxy flows and it:

- `requestheaders`: masks the URL (path and query, percent-decoded) before anything else
  sees the flow;
- `request`: masks the JSON body of every request that has one (the Messages API's walker
  for messages and count_tokens, the same generic walk for the rest) and refuses a body it
  cannot read (400 invalid_request_error) unless the policy says ``on_unparseable =
  "forward"``; asks the upstream for an uncompressed stream when the request streams;
- `responseheaders`: cuts the response headers to the allowlist, masks their values, sets the
  reason phrase to the standard one; an uncompressed `text/event-stream` response, any status,
  is streamed through an `SsePipeline` (the flow's one stream modifier);
- `response`: a buffered body (JSON, SSE or text; 2xx or error) is masked whole, and a body
  that is neither is refused.

Findings (rule, where, fingerprint; never the value) go to the flow's Exchange for the
recorder, with a ``Decision("masking", "mask", ...)`` when anything was masked; so do whether the
request asks for a stream (`request_streams`) and, once a streamed response ends or breaks off,
the message the client received (`streamed_message`).

The masker comes from the policy: `PolicyLoader` calls `configure_masker(masker, policy_masking)`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from mitmproxy import http

from gatehouse.exchange import Exchange, Finding
from gatehouse.masking.config import MaskingPolicy
from gatehouse.masking.masker import Masker
from gatehouse.masking.urlmask import UnmaskableUrl, mask_target
from gatehouse.mitm import requestjson
from gatehouse.mitm.flowutil import (
    apply_headers,
    body_size,
    exchange_of,
    fail_closed,
    off_loop,
    record_findings,
    refusal_response,
    refuse,
)
from gatehouse.wire import apierrors, bodies, headers
from gatehouse.wire.apierrors import ApiError
from gatehouse.wire.bodies import UnparseableBody
from gatehouse.wire.pipeline import SsePipeline, mask_sse_body

log = logging.getLogger(__name__)

# The fingerprint key of the masker event streams go through when masking is off: it has no
# rules, so it never fingerprints anything.
_NO_RULES_KEY = b"gatehouse: masking off, no fingerprints"


def _media_type(headers: http.Headers) -> str:
    return bodies.media_type(headers.get("content-type", ""))


def _decoded(message: http.Message, what: str) -> bytes:
    try:
        raw = message.get_content(strict=True)
    except ValueError:
        enc = message.headers.get("content-encoding", "")
        raise UnparseableBody(f"{what} has a Content-Encoding ({enc!r}) the gateway cannot decode") from None
    return raw or b""


@dataclass
class Inspected:
    """What inspecting a body gave: new content (None: unchanged), findings, or why not."""

    content: bytes | None = None
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    # The gateway itself failed (not the body): never forwarded, whatever on_unparseable says.
    internal: bool = False
    # The request body is a JSON object with "stream": true (any endpoint); None: not parsed.
    asks_for_stream: bool | None = None
    # The parse of a request body forwarded unchanged, for the recorder to reuse.
    parsed: requestjson.ParsedRequest | None = None


def _inspection_fails_closed(fn: Any) -> Any:
    """An unexpected failure while inspecting becomes an inspection error that is always
    refused (even with on_unparseable = "forward", which is for bodies, not for bugs), never
    an exception that would let mitmproxy forward the body unmasked."""

    def wrapper(*args: Any) -> Inspected:
        try:
            return fn(*args)
        except UnparseableBody as e:
            return Inspected(error=str(e))
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
def _inspect_request(masker: Masker, req: http.Request, parsed: requestjson.ParsedRequest | None) -> Inspected:
    """Parse and mask a request body (`parsed`: its parse by an earlier addon, if any). Runs on
    a worker thread for big bodies: it only reads the request; the caller applies the result on
    the event loop."""
    what = requestjson.WHAT
    bodies.require_json_media(_media_type(req.headers), what)
    if bodies.is_message_endpoint(req.path):
        # Parsed with where each message is in the text: the masker skips the messages it
        # has masked before (Claude Code resends the whole conversation every turn).
        if parsed is None:
            parsed = requestjson.parse(_decoded(req, what))
        body, doc = parsed.value, parsed.spanned
        if not isinstance(body, dict):
            return Inspected(error="the request body is not a JSON object")
        if doc is not None:
            masked = masker.mask_spanned(doc)
            return Inspected(
                content=masked.encode().encode("utf-8") if masked.findings else None,
                findings=masked.findings,
                asks_for_stream=bodies.asks_for_stream(masked.values),
                parsed=None if masked.findings else parsed,
            )
        findings = masker.mask_request(body)
    else:
        body, findings = masker.mask_json_value(bodies.parse_json(_decoded(req, what), what))
    return Inspected(
        content=bodies.encode_json(body) if findings else None,
        findings=findings,
        asks_for_stream=bodies.asks_for_stream(body),
    )


@_inspection_fails_closed
def _inspect_response(masker: Masker, resp: http.Response, hold_back_chars: int) -> Inspected:
    """Mask a buffered response, whatever its status: a whole SSE body through the same
    pipeline a stream goes through, a JSON document (a message, an error, a model list...),
    or text. Anything else cannot be inspected."""
    what = "the response body"
    media = _media_type(resp.headers)
    raw = _decoded(resp, what)
    if not raw:
        return Inspected()
    kind = bodies.response_kind(media, raw)
    if kind == "sse":
        masked, pipe = mask_sse_body(masker, raw, hold_back_chars=hold_back_chars)
        if pipe.errors:
            return Inspected(error="the event stream could not be inspected")
        return Inspected(content=masked if pipe.findings else None, findings=pipe.findings)
    if kind == "json":
        doc, findings = masker.mask_json_value(bodies.parse_json(raw, what))
        return Inspected(content=bodies.encode_json(doc) if findings else None, findings=findings)
    # Text (JSON or SSE sent under another type, or behind a BOM, is still parsed by the SDKs):
    # JSON string escapes (\u0067hp_...) are decoded before scanning.
    masked, findings = masker.mask_json_text(bodies.decode_text(raw, what), "body")
    return Inspected(content=masked.encode("utf-8") if findings else None, findings=findings)


class Masking:
    def __init__(self, masker: Masker | None = None, policy: MaskingPolicy | None = None) -> None:
        self.masker: Masker | None = None
        self.policy: MaskingPolicy | None = None
        self._streamer: Masker | None = None  # what event streams are piped through
        if masker is not None:
            self.configure_masker(masker, policy or masker.policy)

    # -- wiring -----------------------------------------------------------------------------

    def configure_masker(self, masker: Masker | None, policy_masking: MaskingPolicy | None) -> None:
        self.masker = masker
        self.policy = policy_masking
        # With masking off (no rules: `build_masker` gives None), event streams still go
        # through a pipeline (`responseheaders`), with a masker that has no rules and so never
        # takes a fingerprint: the key is never used.
        self._streamer = masker
        if masker is None and policy_masking is not None and not policy_masking.enabled:
            self._streamer = Masker(policy_masking, _NO_RULES_KEY)
        if masker is not None and policy_masking is not None:
            log.info(
                f"gatehouse: masking {'on' if masker.enabled else 'off'} "
                f"({len(policy_masking.rules)} rules, hold-back {policy_masking.hold_back_chars} characters)"
            )

    def _active(self) -> Masker | None:
        m = self.masker
        return m if m is not None and m.enabled else None

    def _forward_unparseable(self) -> bool:
        return self.policy is not None and self.policy.on_unparseable == "forward"

    # -- hooks ------------------------------------------------------------------------------

    @fail_closed("masking")
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # A secret in the URL (path or query, percent-encoded or not) is masked before anything
        # else sees the flow: it never goes upstream, and mitmdump's flow line, printed later,
        # shows the masked URL.
        masker = self._active()
        if masker is None or exchange_of(flow).passthrough:
            return
        try:
            masked, findings = mask_target(masker, flow.request.path)
        except UnmaskableUrl as e:
            flow.request.path = "/"  # what was there must not be shown or recorded
            refuse(flow, apierrors.invalid_request(f"Gatehouse refused this request: {e}."), "masking", rule="url")
            return
        if findings:
            flow.request.path = masked
            record_findings(exchange_of(flow), findings, "request")

    @fail_closed("masking")
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or exchange_of(flow).passthrough:
            return
        masker = self._active()
        if masker is None:
            await self._find_stream_unmasked(flow)
            return
        req = flow.request
        if not req.raw_content and not bodies.is_message_endpoint(req.path):
            return  # nothing to inspect (Access refuses bodies where none belongs)
        raw = req.raw_content
        parsed = requestjson.cached(flow)  # Access's, when it read the model
        result = await off_loop(body_size(req), _inspect_request, masker, req, parsed)
        forwarded_uninspected = self._apply_inspection(
            flow,
            req,
            "request",
            result,
            lambda why: apierrors.invalid_request(f"Gatehouse could not inspect this request for secrets: {why}."),
        )
        if result.parsed is not None and result.content is None and not exchange_of(flow).refused:
            requestjson.remember(flow, raw, result.parsed)  # the recorder need not parse it again
        else:
            requestjson.take(flow)  # masking may have changed the shared parse in place: dropped
        if forwarded_uninspected:
            log.warning(f"gatehouse: forwarding a request the gateway could not inspect: {result.error}")
        self._note_stream(flow, result.asks_for_stream)

    @staticmethod
    def _note_stream(flow: http.HTTPFlow, asks_for_stream: bool | None) -> None:
        exchange_of(flow).request_streams = asks_for_stream
        if asks_for_stream and bodies.is_message_endpoint(flow.request.path):
            # A compressed stream cannot go through the pipeline chunk by chunk.
            flow.request.headers["accept-encoding"] = "identity"

    async def _find_stream_unmasked(self, flow: http.HTTPFlow) -> None:
        """With masking off, a Messages API request is still read for whether it asks for a
        stream: its answer must come uncompressed to stream through the pipeline (which hands
        the commands addon each tool call), and the recorder spools a streamed request before it
        goes upstream. The parse is left for the recorder. A body that does not parse is not this
        addon's to refuse with masking off: the recorder reads it as it is."""
        req = flow.request
        if not req.raw_content or not bodies.is_message_endpoint(req.path):
            return
        if not bodies.is_uncompressed(req.headers.get("content-encoding", "")):
            return
        try:
            parsed = await requestjson.read(flow)
        except (UnparseableBody, RecursionError):
            return
        self._note_stream(flow, bodies.asks_for_stream(parsed.value))

    @fail_closed("masking")
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        masker = self._active()
        resp = flow.response
        ex = exchange_of(flow)
        if resp is None or ex.refused or ex.passthrough:
            return
        self._filter_headers(resp, masker, ex)
        # An event stream goes through the pipeline even with masking off: it is what streams
        # it at all (mitmproxy would buffer the whole answer), what gives the commands addon
        # each tool call, and what hands the recorder the message.
        streamer = self._streamer
        if streamer is None or _media_type(resp.headers) != "text/event-stream":
            return
        if ex.buffer_response:
            return  # an approval may hold it: buffered, masked whole in `response`
        if not bodies.is_uncompressed(resp.headers.get("content-encoding", "")):
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
        # The pipeline (masker and held-back text included) lives on the response only, never on
        # the Exchange, which mitmproxy deep-copies with the flow's metadata.
        resp.stream = SsePipeline(streamer, hold_back_chars=self.policy.hold_back_chars)

    @staticmethod
    def _filter_headers(resp: http.Response, masker: Masker | None, ex: Exchange) -> None:
        """Only the API's own headers reach the client, their values masked; the reason phrase
        is the standard one (an upstream's phrase is free text, so it could carry anything)."""
        try:
            resp.reason = HTTPStatus(resp.status_code).phrase
        except ValueError:
            resp.reason = ""
        apply_headers(resp, headers.filter_response(resp.headers.items(multi=True), masker), ex, "response")

    @fail_closed("masking")
    async def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None:
            return
        if isinstance(resp.stream, SsePipeline):
            self._finish_stream(flow, resp.stream)
            return
        masker = self._active()
        ex = exchange_of(flow)
        if masker is None or ex.passthrough:
            return
        if ex.refused:
            self._mask_refusal(flow, masker)
            return
        if resp.stream:
            # Streamed by someone else (mitmproxy's stream_large_bodies, refused at start-up):
            # already sent, and so never silently.
            ex.decide("masking", "forward", "response streamed unmasked (stream_large_bodies)", side="response")
            log.warning(
                "gatehouse: a response was streamed by mitmproxy itself and not masked; "
                "do not set stream_large_bodies on the gateway"
            )
            return
        assert self.policy is not None
        hold_back = self.policy.hold_back_chars
        result = await off_loop(body_size(resp), _inspect_response, masker, resp, hold_back)
        self._apply_inspection(
            flow,
            resp,
            "response",
            result,
            lambda why: apierrors.api_error(f"Gatehouse could not inspect the API's response for secrets: {why}."),
        )

    def _apply_inspection(
        self,
        flow: http.HTTPFlow,
        message: http.Message,
        side: str,
        result: Inspected,
        refusal: Callable[[str], ApiError],
    ) -> bool:
        """Put what inspecting `message` (the flow's request or response: `side`) gave into the
        flow: its masked content and findings. A body that could not be inspected is refused with
        `refusal(why)`, unless the policy forwards such bodies (``on_unparseable = "forward"``;
        never a failure of the gateway's own). True when the body goes on uninspected."""
        ex = exchange_of(flow)
        if result.error is not None:
            if self._forward_unparseable() and not result.internal:
                ex.decide("masking", "forward", f"not inspected: {result.error}", side=side)
                return True
            refuse(flow, refusal(result.error), "masking", rule="on_unparseable")
            return False
        if result.content is not None:
            message.content = result.content
            record_findings(ex, result.findings, side)
        return False

    @staticmethod
    def _mask_refusal(flow: http.HTTPFlow, masker: Masker) -> None:
        # The message is the gateway's own words but may quote the caller (a model name, a
        # Content-Type). Rebuilt from the refusal itself: a refusal made once the upstream
        # answered can have been filled with the upstream's body by mitmproxy (ExchangeIds puts
        # it back too; this addon does not rely on running after it).
        ex = exchange_of(flow)
        assert ex.refusal is not None  # `refuse` sets it with `refused`
        message, findings = masker.mask_text(ex.refusal.message, "refusal")
        if findings:
            ex.refusal = dataclasses.replace(ex.refusal, message=message)
        flow.response = refusal_response(ex)

    @fail_closed("masking")
    def error(self, flow: http.HTTPFlow) -> None:
        # A stream cut short: keep what the pipeline found for the recorder.
        if flow.response is not None and isinstance(flow.response.stream, SsePipeline):
            self._finish_stream(flow, flow.response.stream)

    @staticmethod
    def _finish_stream(flow: http.HTTPFlow, pipe: SsePipeline) -> None:
        """Hand what the stream gave to the recorder, once (the `response` and `error` hooks can
        both see it): the message the client received, onto the Exchange, with the findings and
        errors. mitmproxy has called the pipeline for the last time by then: with ``b""`` at the
        stream's end before `response`, or not at all when it broke off (`error`)."""
        ex = exchange_of(flow)
        if ex.streamed_message is not None:
            return
        ex.streamed_message = pipe.assembled
        record_findings(ex, pipe.findings, "response")
        ex.errors.extend(pipe.errors)
