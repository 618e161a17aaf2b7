"""Records every exchange: one signed, chained record per flow, spooled before it is released.

Thin: it captures plain data from the flow and hands it to `gatehouse.recording` (records, the
registry's journal and uploader, stores) in a worker thread, so no other flow ever waits on this
one's disk or network I/O.

- `request`: for a request that asks for a stream, a ``request`` record is spooled before
  the request goes upstream (a stream cannot be held back at its end). A buffered request is
  captured as it will be forwarded and its part of the record is built in a worker thread
  while the upstream answers, so building it adds nothing to the request's way upstream.
  When the spool has failed and `[recording] on_record_failure = "refuse"`, new requests are
  refused.
- `response`: the full record is spooled, and only then does the hook return, which is
  what releases a buffered response to the client.
- `error`: a flow that ended without a response (upstream unreachable, client gone) is
  recorded with its error.
- `done`: a signed checkpoint of the chain's head, and a last upload attempt.

The integrator calls `configure_recording` with the policy's `[recording]` section; until
then the addon does nothing. Store and key problems raise `OptionsError`, which makes
mitmdump exit at start-up before serving anyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from mitmproxy import exceptions, http
from mitmproxy.net import encoding

from gatehouse import __version__
from gatehouse.exchange import Exchange
from gatehouse.mitm import requestjson
from gatehouse.mitm.flowutil import exchange_of, fail_closed, refuse
from gatehouse.recording.canonical import RecordError, parse_json
from gatehouse.recording.config import RecordingPolicy
from gatehouse.recording.records import (
    BuiltRequest,
    ExchangeInput,
    PartCache,
    RequestInput,
    ResponseInput,
    build_record,
    build_request,
)
from gatehouse.recording.registry import Recording
from gatehouse.recording.sessions import SessionTracker
from gatehouse.recording.signing import load_signing_key
from gatehouse.recording.spool import SpoolError, SpoolLocked
from gatehouse.recording.stores import StoreError, open_store
from gatehouse.wire.apierrors import api_error
from gatehouse.wire.bodies import asks_for_stream
from gatehouse.wire.jsonbody import Spanned

if TYPE_CHECKING:  # only its type: the policy loader hands the masker in
    from gatehouse.masking.masker import Masker

log = logging.getLogger(__name__)

REFUSAL_MESSAGE = (
    "Gatehouse cannot record this exchange, and its policy allows no unrecorded access "
    '([recording] on_record_failure = "refuse"). Ask the gateway\'s operator to check its recording spool.'
)
# At most one spool probe per this many seconds; requests in between use its result.
PROBE_INTERVAL = 1.0
SPOOL_UNAVAILABLE = "the recording spool is unavailable"


def _headers(h: http.Headers) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in h.items(multi=True)]


def _body(message: http.Message) -> bytes | None:
    if not message.raw_content:
        return None
    # Decoding (gzip, br, zstd) happens here, in the worker thread, not on the event loop.
    return message.get_content(strict=False)


def _decoded(raw: bytes | None, content_encoding: str | None) -> bytes | None:
    """A captured body without its Content-Encoding, as `get_content(strict=False)` gives it
    (the body as it came when it cannot be decoded)."""
    if not raw:
        return None
    if not content_encoding:
        return raw
    try:
        content = encoding.decode(raw, content_encoding)
    except ValueError:
        return raw
    return content if isinstance(content, bytes) else raw


def _capture_request(flow: http.HTTPFlow) -> RequestInput:
    req = flow.request
    return RequestInput(
        method=req.method,
        scheme=req.scheme,
        host=req.pretty_host,
        port=req.port,
        path=req.path,
        headers=_headers(req.headers),
        body=_body(req),
    )


def _snapshot_request(flow: http.HTTPFlow) -> tuple[RequestInput, str | None]:
    """The request as it goes upstream, taken on the event loop without decoding its body
    (`RequestInput.body` holds the raw bytes until `_decoded`), with its Content-Encoding."""
    req = flow.request
    inp = RequestInput(
        method=req.method,
        scheme=req.scheme,
        host=req.pretty_host,
        port=req.port,
        path=req.path,
        headers=_headers(req.headers),
        body=req.raw_content or None,
    )
    return inp, req.headers.get("content-encoding")


def _capture_response(resp: http.Response, ex: Exchange) -> ResponseInput:
    streamed = bool(resp.stream)
    # The masking addon hands over the message the client received (post-masking) when the
    # stream ends or breaks off; its findings are on the Exchange by then.
    return ResponseInput(
        status=resp.status_code,
        headers=_headers(resp.headers),
        body=_body(resp),
        streamed=streamed,
        assembled=ex.streamed_message if streamed else None,
    )


def _wants_stream(ex: Exchange, body: bytes | None) -> bool:
    """Whether the request asks for a stream: as the masking addon found when it parsed the body,
    or, on a flow it did not parse (masking off, passthrough, a body forwarded uninspected),
    from the body itself."""
    if ex.request_streams is not None:
        return ex.request_streams
    if not body or b'"stream"' not in body:
        return False
    try:
        doc = parse_json(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return asks_for_stream(doc)


class Recorder:
    def __init__(self) -> None:
        self.policy: RecordingPolicy | None = None
        self.recording: Recording | None = None
        self.masker: Masker | None = None
        self.policy_sha256: str | None = None
        self.gateway_version = __version__
        self.tracker = SessionTracker()
        # The blobs of request parts recorded before (Claude Code resends the conversation
        # every turn): one cache per masker, since the record's copy is masked.
        self.parts = PartCache(None, known=requestjson.KNOWN_PARTS)
        self.healthy = True
        self.probe_interval = PROBE_INTERVAL
        self._last_probe = 0.0
        # Counts the spool failures seen: a write that succeeded only shows the spool works if
        # none failed while it was under way.
        self._spool_failures = 0
        # Per flow: the request part built in `request`, reused by the final record, or (a
        # buffered request) the worker thread's task building it while the upstream answers.
        self._requests: weakref.WeakKeyDictionary[http.HTTPFlow, BuiltRequest] = weakref.WeakKeyDictionary()
        self._building: weakref.WeakKeyDictionary[http.HTTPFlow, asyncio.Future[BuiltRequest | None]] = (
            weakref.WeakKeyDictionary()
        )
        self._recorded: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self._finished = False  # `finish` ran: the process is exiting

    # -- configuration --------------------------------------------------------------------------
    def configure_recording(
        self,
        policy: RecordingPolicy,
        *,
        state_dir: Path,
        masker: Masker | None = None,
        policy_sha256: str,
        gateway_version: str,
    ) -> None:
        """Open the store (checked now: bucket, Object Lock), the signing key and the spool.

        Called again on a policy or script reload: the spool's journal and uploader are
        per process (see `Recording`), so the chain continues and no second uploader starts.
        """
        try:
            store = open_store(
                policy.store,
                endpoint_url=policy.s3_endpoint_url,
                object_lock_mode=policy.object_lock_mode,
                kms_key_id=policy.kms_key_id,
                max_connections=policy.upload_concurrency,
            )
            store.check(require_object_lock=policy.object_lock_mode is not None)
            key = load_signing_key(
                key_file=policy.signing_key_file, key_env=policy.signing_key_env, state_dir=state_dir
            )
            spool_dir = policy.spool_path(state_dir)
            recording = Recording.open(
                spool_dir,
                store=store,
                key=key,
                retention_days=policy.retention_days,
                gateway_version=gateway_version,
                policy_sha256=policy_sha256,
                checkpoint_interval=policy.checkpoint_interval_seconds,
                upload_concurrency=policy.upload_concurrency,
            )
            recording.start()
        except (StoreError, RecordError, SpoolLocked) as e:
            raise exceptions.OptionsError(f"gatehouse: [recording] {e}") from None
        if self.recording is not None and self.recording is not recording:
            # The policy moved the spool: finish the old one (its chain ends with a checkpoint).
            self.recording.shutdown(timeout=5.0)
            Recording.forget(self.recording.spool.root)
        self.policy = policy
        if masker is not self.masker or self.recording is not recording:
            self.parts = PartCache(masker, known=requestjson.KNOWN_PARTS)
        self.masker = masker
        self.policy_sha256 = policy_sha256
        self.gateway_version = gateway_version
        self.recording = recording
        self.healthy = self._probe(force=True)
        if masker is None:
            log.warning("gatehouse: recording without a masker: records hold content exactly as it passed")
        log.info(
            f"gatehouse: recording to {store.url} (spool {spool_dir}, signing key {key.key_id}, "
            f"on_record_failure={policy.on_record_failure})"
        )

    # -- hooks ----------------------------------------------------------------------------------
    @fail_closed("recording")
    async def http_connect(self, flow: http.HTTPFlow) -> None:
        # A CONNECT refused by identity (407) or access (a denied host) is answered without a
        # `response` event: record it here, as the audit event it is.
        if self.recording is None or flow.response is None or not exchange_of(flow).refused:
            return
        ex = exchange_of(flow)
        try:
            await asyncio.to_thread(self._record_exchange, flow, ex, "refusal")
        except Exception as e:
            self._failed(flow, ex, e, can_refuse=False)

    @fail_closed("recording")
    async def request(self, flow: http.HTTPFlow) -> None:
        # The parse Access or masking made of exactly this body, if any: not parsed again. The
        # last reader of it, this addon takes it even when it does not record, so that a late
        # turn's parse is not kept while the upstream answers.
        taken = requestjson.take(flow)
        if self.recording is None or flow.response is not None or flow.request.method == "CONNECT":
            return  # a refusal by an earlier addon is recorded in `response`
        ex = exchange_of(flow)
        parsed = taken.spanned if taken is not None else None
        if flow.request.raw_content and ex.request_streams is not False:
            # It may stream: its request record is spooled (durably) before it goes upstream,
            # and that write is the spool's probe. One worker-thread call, before the first byte.
            try:
                await asyncio.to_thread(self._record_request, flow, ex, parsed)
            except Exception as e:
                self._failed(flow, ex, e, can_refuse=True)
            return
        # Else nothing is spooled before it goes upstream; the spool is probed first (at most
        # once per `probe_interval`): a request whose record cannot be kept is not sent.
        if not await self._spool_usable():
            if self._failed(flow, ex, SpoolError(SPOOL_UNAVAILABLE), can_refuse=True):
                return
        if flow.request.raw_content:
            # Buffered (as the masking addon found): its part of the record is built while the
            # upstream answers; `response` (or `error`) awaits it before the record is spooled
            # and the response released.
            inp, content_encoding = _snapshot_request(flow)
            task = asyncio.ensure_future(
                asyncio.to_thread(self._build_captured, inp, content_encoding, ex, flow.request.timestamp_start, parsed)
            )
            # A flow that never gets to `response` or `error` (a reload) must not leave asyncio
            # to log the task's exception, whose text may quote content: it is retrieved here.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._building[flow] = task

    async def _built(self, flow: http.HTTPFlow) -> None:
        """Wait for the request part being built for `flow` (if any) and keep it for the record.
        Its failure is the record's failure: raised here, for the hook to apply."""
        task = self._building.pop(flow, None)
        if task is None:
            return
        built = await task
        if built is not None:
            self._requests[flow] = built

    @fail_closed("recording")
    async def response(self, flow: http.HTTPFlow) -> None:
        if self.recording is None or flow in self._recorded:
            return
        if flow.request.method == "CONNECT" and not exchange_of(flow).refused:
            return
        ex = exchange_of(flow)
        kind = "refusal" if ex.refused else "exchange"
        try:
            await self._built(flow)
            await asyncio.to_thread(self._record_exchange, flow, ex, kind)
        except Exception as e:
            # A buffered response is still ours to withhold; a streamed one reached the client.
            assert flow.response is not None
            self._failed(flow, ex, e, can_refuse=not flow.response.stream and not ex.refused)

    @fail_closed("recording")
    async def error(self, flow: http.HTTPFlow) -> None:
        if self.recording is None or flow in self._recorded or flow.request.method == "CONNECT":
            return
        ex = exchange_of(flow)
        try:
            await self._built(flow)
            await asyncio.to_thread(self._record_exchange, flow, ex, "refusal" if ex.refused else "exchange")
        except Exception as e:
            self._failed(flow, ex, e, can_refuse=False)

    def done(self) -> None:
        # A script reload (or an exit without `GracefulStop`, which calls `finish` first).
        if self.recording is not None and not self._finished:
            self.recording.shutdown(timeout=10.0)

    # -- a graceful stop (gatehouse.mitm.shutdown) ----------------------------------------------
    def record_cut_off(self, flows: list[http.HTTPFlow], why: str) -> None:
        """Record flows the gateway stops before they end, as they are now, with `why` among
        their errors (a streamed answer's request record is spooled already; this is its end).
        Blocks on disk, but reads flows that are still live: call it on the event loop, which
        is what changes them."""
        if self.recording is None:
            return
        for flow in flows:
            if flow in self._recorded or flow.request.method == "CONNECT":
                continue
            ex = exchange_of(flow)
            ex.errors.append(why)
            try:
                self._record_exchange(flow, ex, "refusal" if ex.refused else "exchange")
            except Exception as e:
                log.error(f"gatehouse: exchange {ex.exchange_id} could not be recorded: {e}")

    def finish(self, timeout: float) -> bool:
        """The last checkpoint, and the spool uploaded for up to `timeout` seconds (what the
        store does not take stays spooled, and is logged); True when the spool was emptied.
        Blocks: run it in a worker thread."""
        if self.recording is None or self._finished:
            return True
        self._finished = True
        return self.recording.shutdown(timeout=timeout)

    @property
    def _refuses(self) -> bool:
        return self.policy is None or self.policy.refuse_on_failure

    def _probe_due(self) -> bool:
        """Whether the spool's last probe (or durable write) is `probe_interval` old."""
        return time.monotonic() - self._last_probe >= self.probe_interval

    async def _spool_usable(self) -> bool:
        """Whether the spool takes files, probed at most once per `probe_interval` (a failed
        write in between marks it unusable at once)."""
        return await asyncio.to_thread(self._probe) if self._probe_due() else self.healthy

    def _spool_worked(self, failures_before: int) -> None:
        """A durable write to the spool succeeded: as good as a probe, unless another write or
        probe failed since it began (`failures_before`: `_spool_failures` then)."""
        if self._spool_failures != failures_before:
            return
        self._last_probe = time.monotonic()
        self._mark_spool(usable=True)

    def _mark_spool(self, *, usable: bool) -> None:
        """What a probe, a write or a failure found: recovery is logged, a failure counted."""
        if usable:
            if not self.healthy:
                log.warning("gatehouse: the recording spool works again")
        else:
            self._spool_failures += 1
        self.healthy = usable

    # -- worker-thread side ---------------------------------------------------------------------
    def _probe(self, force: bool = False) -> bool:
        assert self.recording is not None
        self._last_probe = time.monotonic()
        try:
            self.recording.spool.probe()
        except SpoolError as e:
            if force:  # start-up: a warning, since an error logged during start-up makes mitmdump exit
                log.warning(
                    f"gatehouse: {e}; requests are {'refused' if self._refuses else 'not recorded'} until it works"
                )
            elif self.healthy:
                log.error(f"gatehouse: {e}")
            self._mark_spool(usable=False)
            return False
        self._mark_spool(usable=True)
        return True

    def _build_request(
        self, flow: http.HTTPFlow, ex: Exchange, parsed: Spanned | None = None
    ) -> tuple[RequestInput, BuiltRequest]:
        inp = _capture_request(flow)
        built = build_request(
            inp,
            masker=self.masker,
            identity=ex.identity.to_dict() if ex.identity else None,
            at=flow.request.timestamp_start,
            tracker=self.tracker,
            cache=self.parts,
            parsed=parsed,
        )
        return inp, built

    def _build_captured(
        self, inp: RequestInput, content_encoding: str | None, ex: Exchange, at: float, parsed: Spanned | None
    ) -> BuiltRequest | None:
        """The request part of a request captured by `_snapshot_request`."""
        inp.body = _decoded(inp.body, content_encoding)
        if not inp.body:
            return None
        return build_request(
            inp,
            masker=self.masker,
            identity=ex.identity.to_dict() if ex.identity else None,
            at=at,
            tracker=self.tracker,
            cache=self.parts,
            parsed=parsed,
        )

    def _record_request(self, flow: http.HTTPFlow, ex: Exchange, parsed: Spanned | None = None) -> None:
        """Build (and cache) the request part of a request with a body; spool a ``request``
        record when it will stream, else probe the spool (raising SpoolError if unusable)."""
        inp, built = self._build_request(flow, ex, parsed)
        self._requests[flow] = built
        if _wants_stream(ex, inp.body):
            failures = self._spool_failures
            self._append(self._input(flow, ex, "request", inp), built)
            self._spool_worked(failures)
        elif not (self._probe() if self._probe_due() else self.healthy):
            raise SpoolError(SPOOL_UNAVAILABLE)

    def _record_exchange(self, flow: http.HTTPFlow, ex: Exchange, kind: str) -> None:
        built = self._requests.pop(flow, None)
        inp = _capture_request(flow) if built is None else None
        self._append(self._input(flow, ex, kind, inp), built)
        self._recorded.add(flow)

    def _input(self, flow: http.HTTPFlow, ex: Exchange, kind: str, req: RequestInput | None) -> ExchangeInput:
        resp = flow.response
        errors = list(ex.errors)
        if flow.error is not None and kind != "request":
            errors.append(flow.error.msg)
        upstream_answered = resp is not None and not ex.refused
        if kind == "request":
            end = None
        elif resp is not None and resp.timestamp_end:
            end = resp.timestamp_end
        else:
            end = time.time()
        return ExchangeInput(
            kind=kind,
            exchange_id=ex.exchange_id,
            # When the request part was built already, the request itself is not needed again.
            request=req
            or RequestInput(
                flow.request.method,
                flow.request.scheme,
                flow.request.pretty_host,
                flow.request.port,
                flow.request.path,
                [],
                None,
            ),
            response=_capture_response(resp, ex) if resp is not None and kind != "request" else None,
            identity=ex.identity.to_dict() if ex.identity else None,
            decisions=[d.to_dict() for d in ex.decisions],
            request_findings=[f.to_dict() for f in ex.request_findings],
            response_findings=[f.to_dict() for f in ex.response_findings],
            errors=errors,
            request_at=flow.request.timestamp_start,
            first_byte_at=resp.timestamp_start if upstream_answered and kind != "request" else None,
            end_at=end,
        )

    def _append(self, inp: ExchangeInput, built: BuiltRequest | None) -> None:
        assert self.recording is not None
        record = build_record(
            inp,
            masker=self.masker,
            gateway_version=self.gateway_version,
            policy_sha256=self.policy_sha256,
            tracker=self.tracker,
            built_request=built,
            cache=self.parts,
        )
        self.recording.append(record)

    # -- failures -------------------------------------------------------------------------------
    def _failed(self, flow: http.HTTPFlow, ex: Exchange, err: Exception, *, can_refuse: bool) -> bool:
        """Apply `on_record_failure`; True when the flow was refused."""
        if isinstance(err, (SpoolError, OSError)):
            self._mark_spool(usable=False)
        log.error(f"gatehouse: exchange {ex.exchange_id} could not be recorded: {err}")
        if can_refuse and self.policy is not None and self.policy.refuse_on_failure:
            refuse(flow, api_error(REFUSAL_MESSAGE), "recording")
            self._recorded.add(flow)  # the refusal itself cannot be spooled either
            return True
        ex.errors.append(f"not recorded: {err}")
        ex.decide("recording", "error", f"not recorded: {err}")
        return False
