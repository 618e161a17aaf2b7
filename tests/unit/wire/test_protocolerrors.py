"""The gateway's answer when mitmproxy itself answers with an error: the Anthropic error shape,
with a fixed message that never quotes request bytes."""

from __future__ import annotations

import json

import pytest

from gatehouse.wire import protocolerrors
from support.secrets import SAMPLE_JWT


@pytest.mark.parametrize(
    "status, message, etype",
    [
        (400, f"Bad HTTP request line: b'POST /?{SAMPLE_JWT} HTTP/1.1 x'", "invalid_request_error"),
        (400, "Received invalid header name: b'Bearer xyz' from client", "invalid_request_error"),
        (400, "HTTP/1 protocol error: illegal chunk header: bytearray(b'zz')", "invalid_request_error"),
        (413, "Request body exceeds mitmproxy's body_size_limit.", "request_too_large"),
        (502, "[Errno 111] Connect call failed ('127.0.0.1', 9)", "api_error"),
        (504, "timeout", "api_error"),
        (418, "teapot", "invalid_request_error"),
    ],
)
def test_error_pages_are_anthropic_errors_without_request_bytes(status, message, etype):
    doc = json.loads(protocolerrors.error_body(status, message))
    assert doc["type"] == "error" and doc["error"]["type"] == etype
    text = doc["error"]["message"]
    assert text and "b'" not in text and SAMPLE_JWT not in text and "127.0.0.1" not in text and "xyz" not in text
