"""Small helpers shared by the addons: the per-flow Exchange and refusals in the Anthropic shape."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from gatehouse.exchange import EXCHANGE_ID_HEADER, METADATA_KEY, Exchange, Finding
from gatehouse.wire import apierrors, bodies
from gatehouse.wire.apierrors import ApiError
from gatehouse.wire.headers import Filtered

log = logging.getLogger(__name__)

# Work on a body larger than this (its parse, its secret scan, finding its tool calls) runs on
# a worker thread. A 215 KB request parsed and scanned on the event loop held it over 5 ms,
# stalling every other flow (`benchmarks/throughput.py --attribute`); 32 KB costs about a
# quarter of a millisecond inline, against ~0.16 ms for the hop to a worker and back, which
# small requests (most of a session's) are spared.
OFFLOAD_BYTES = 32 * 1024


def body_size(message: http.Message) -> int:
    """The size of the work on `message`'s body, for `off_loop`: its length, or more than
    `OFFLOAD_BYTES` when it is compressed (what it decodes to is unknown until it is decoded,
    and gzip can make a few kilobytes into megabytes)."""
    if not bodies.is_uncompressed(message.headers.get("content-encoding", "")):
        return OFFLOAD_BYTES + 1
    return len(message.raw_content or b"")


async def off_loop[T](size: int, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, on a worker thread when the body it works on (`size` bytes) is larger than
    `OFFLOAD_BYTES`, else on the event loop. `fn` must be safe on a worker thread."""
    if size > OFFLOAD_BYTES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def exchange_of(flow: http.HTTPFlow) -> Exchange:
    """The flow's Exchange, created on first use."""
    ex = flow.metadata.get(METADATA_KEY)
    if ex is None:
        ex = flow.metadata[METADATA_KEY] = Exchange()
    return ex


def apply_headers(message: http.Message, result: Filtered, ex: Exchange, side: str) -> None:
    """Give `message` the headers an allowlist filter kept (`gatehouse.wire.headers`), and note on
    the Exchange what was dropped (names only) and what was masked."""
    if not result.changed:
        return
    kept = http.Headers()
    for name, value in result.headers:
        kept.add(name, value)
    message.headers = kept
    if result.dropped or result.credentials:
        ex.decide(
            "headers",
            "drop",
            f"{side} headers not passed on",
            rule="header_allowlist",
            side=side,
            dropped=result.dropped,
            credentials=result.credentials,
        )
    record_findings(ex, result.findings, side)


def record_findings(ex: Exchange, findings: list[Finding], side: str) -> None:
    """Masked secrets (rule, where, fingerprint: never the value) onto the Exchange, with one
    ``masking`` decision per call that found any."""
    if not findings:
        return
    (ex.request_findings if side == "request" else ex.response_findings).extend(findings)
    counts = Counter(f.rule for f in findings)
    ex.decide(
        "masking",
        "mask",
        f"{len(findings)} secret(s) masked in the {side}",
        side=side,
        count=len(findings),
        rules=dict(sorted(counts.items())),
    )


def refuse(flow: http.HTTPFlow, err: ApiError, stage: str, rule: str | None = None, **detail: Any) -> None:
    """Answer the flow ourselves: it never reaches the upstream.

    Setting `flow.response` (rather than `flow.kill()`) is what makes the client see the
    message; a killed intercepted flow can leave the client hanging.
    """
    ex = exchange_of(flow)
    ex.refused = True
    ex.refusal = err
    ex.decide(stage, "deny", err.message, rule, status=err.status, error_type=err.type, **detail)
    flow.response = refusal_response(ex)


def refusal_response(ex: Exchange) -> http.Response:
    err = ex.refusal
    assert err is not None, "refusal_response of a flow that was not refused"
    headers = err.headers()
    headers[EXCHANGE_ID_HEADER] = ex.exchange_id
    return http.Response.make(err.status, err.body(), headers)


def fail_closed(stage: str) -> Callable:
    """Turn an exception in a flow hook into a refusal instead of an uninspected forward.

    mitmproxy runs a script's addons inside one error handler per event: an exception in one
    hook logs "Addon error" and skips every later addon's hook for that event, after which the
    flow goes on. A bug in masking would then send unmasked content to the upstream with the
    caller's headers. Every flow hook of the gateway is wrapped in this, so a failure answers
    the client with an `api_error` and the later addons see a refused flow.
    """

    def decorate(hook: Callable) -> Callable:
        def fail(flow: http.HTTPFlow, e: Exception) -> None:
            # The exception text may quote content; log only its type and where it happened.
            log.error(
                f"gatehouse: internal error in {stage} ({type(e).__name__} at "
                f"{hook.__qualname__}); the flow was refused, not forwarded",
                exc_info=False,
            )
            exchange_of(flow).errors.append(f"{stage}: internal error {type(e).__name__}")
            refuse(
                flow,
                apierrors.api_error(
                    f"Gatehouse could not process this request ({stage} failed) and did not forward it."
                ),
                stage,
                rule="internal_error",
            )

        if inspect.iscoroutinefunction(hook):

            @functools.wraps(hook)
            async def async_wrapper(self: Any, flow: http.HTTPFlow, *args: Any) -> None:
                try:
                    await hook(self, flow, *args)
                except Exception as e:
                    fail(flow, e)

            return async_wrapper

        @functools.wraps(hook)
        def wrapper(self: Any, flow: http.HTTPFlow, *args: Any) -> None:
            try:
                hook(self, flow, *args)
            except Exception as e:
                fail(flow, e)

        return wrapper

    return decorate
