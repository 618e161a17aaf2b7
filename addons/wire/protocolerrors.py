"""The gateway's answer when mitmproxy itself must answer with an error (malformed requests,
upstream unreachable, body too large at the framing level): the Anthropic error shape.

Pure (no mitmproxy import); `gatehouse.mitm.patches` makes mitmproxy's HTTP layers use it. The
message shown to the client is chosen from a fixed set by what mitmproxy's own message is
about: it never quotes mitmproxy's message, which can contain request bytes (a bad request
line holding a token, a header name, a chunk header).
"""

from __future__ import annotations

from gatehouse.wire.apierrors import STATUS_BY_TYPE, ApiError

_TYPE_BY_STATUS = {status: t for t, status in STATUS_BY_TYPE.items()}

TRAILERS_MESSAGE = "HTTP trailers are not accepted by this gateway"
BODY_FRAMING_MESSAGE = "HTTP/1 protocol error in the request body"

# (substring of mitmproxy's message, lower-cased) -> what the client is told. First match wins.
_CLIENT_MESSAGES: tuple[tuple[str, str], ...] = (
    (
        TRAILERS_MESSAGE.lower(),
        "Gatehouse does not accept HTTP trailers (fields after a chunked body); send the request without them.",
    ),
    ("bad http request line", "Gatehouse could not parse the request line; the request was not forwarded."),
    ("content-length", "Gatehouse refused the request: its Content-Length is invalid or ambiguous."),
    ("transfer-encoding", "Gatehouse refused the request: its Transfer-Encoding is invalid or ambiguous."),
    ("no host header", "Gatehouse refused the request: it does not say which host it is for."),
    ("header", "Gatehouse refused the request: a header is malformed or not allowed."),
    (
        BODY_FRAMING_MESSAGE.lower(),
        "Gatehouse could not parse the request body's framing (chunked encoding); the request was not forwarded.",
    ),
    (
        "http/1 protocol error",
        "Gatehouse could not parse the request (HTTP/1 protocol error); the request was not forwarded.",
    ),
    ("http/2", "Gatehouse could not parse the request (HTTP/2 protocol error); the request was not forwarded."),
    ("http/3", "Gatehouse could not parse the request (HTTP/3 protocol error); the request was not forwarded."),
    ("too large", "The request is larger than this gateway accepts."),
)


def error_type(status: int) -> str:
    """The Anthropic error type for an HTTP status mitmproxy chose."""
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def safe_message(status: int, mitmproxy_message: str) -> str:
    """A fixed message about what went wrong; never any part of `mitmproxy_message`."""
    text = (mitmproxy_message or "").lower()
    if status == 413:
        return "The request is larger than this gateway accepts."
    if status == 502:
        if "tls" in text or "certificate" in text or "ssl" in text:
            return (
                "Gatehouse could not reach the upstream API: the TLS connection to it failed. "
                "Ask your gateway operator to check the upstream."
            )
        return (
            "Gatehouse could not reach the upstream API (the connection failed). "
            "Retry later, or ask your gateway operator to check the upstream."
        )
    if status == 504:
        return "The upstream API did not answer in time."
    if status >= 500:
        return f"Gatehouse could not complete this request (HTTP {status})."
    for needle, message in _CLIENT_MESSAGES:
        if needle in text:
            return message
    return f"Gatehouse could not process this request (HTTP {status}); it was not forwarded."


def _error(status: int, mitmproxy_message: str) -> ApiError:
    # 5xx from the gateway's own connection failures may succeed on retry; a malformed request will not.
    return ApiError(
        error_type(status), safe_message(status, mitmproxy_message), status=status, should_retry=status >= 500
    )


def error_body(status: int, mitmproxy_message: str) -> bytes:
    """The JSON body of mitmproxy's error response, in the Anthropic shape."""
    return _error(status, mitmproxy_message).body()


def error_headers(status: int) -> dict[str, str]:
    """Its headers, as for every refusal of the gateway's (`ApiError.headers`)."""
    return _error(status, "").headers()
