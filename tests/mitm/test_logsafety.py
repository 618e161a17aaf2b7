"""Log redaction (pure core and the record factory), the JSON error pages, and the guard on
the mitmproxy functions that addons/mitmpatches.py replaces or relies on."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gatehouse.mitm import logsafety
from gatehouse.mitm import patches as mitmpatches
from gatehouse.wire import protocolerrors
from gatehouse.masking.redact import LineRedactor, Redactor

JWT = ("eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6ImdhdGVob3VzZS1kZXYifQ."
       "c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMDEyMzQ1Njc4OQ")
PAT = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"
KEY = "sk-ant-gateway-held-key-0123456789"


# -- redaction ---------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    f"Bad HTTP request line: b'POST /v1/messages?t={JWT} HTTP/1.1 x'",
    f"token {JWT}",
    f"(b'authorization', b'Bearer {JWT}')",
    f"Authorization: Bearer {JWT}",
    f"Proxy-Authorization: Basic dXNlcjp{JWT[:20]}",
    f"bytearray(b'{JWT}\\r\\n')",
    f"unsigned {JWT.rsplit('.', 1)[0]}.",
])
def test_jwts_and_credentials_are_redacted(line):
    out = Redactor().redact(line)
    assert JWT not in out and JWT[:30] not in out, out
    assert "[REDACTED" in out


@pytest.mark.parametrize("line, secret", [
    ("Proxy-Authorization: Basic Z2F0ZWhvdXNlOnNlY3JldC1wYXNzd29yZA==", "Z2F0ZWhvdXNlOnNlY3JldC1wYXNzd29yZA=="),
    ("x-api-key: my-own-api-key-value", "my-own-api-key-value"),
    ("(b'x-gatehouse-token', b'opaque-token-1234')", "opaque-token-1234"),
    ("HTTPS_PROXY=http://gatehouse:hunter2hunter2@127.0.0.1:8080", "hunter2hunter2"),
    (f"x-api-key={KEY}", KEY),
    (f"sending {KEY[:-3]}xyz", KEY[:-3]),
    ("cookie: session=abcdef123456", "abcdef123456"),
])
def test_credential_shapes_are_redacted(line, secret):
    assert secret not in Redactor().redact(line)


def test_gateway_keys_are_redacted_as_literals():
    r = Redactor(literals=["a-key-without-any-known-shape-42"])
    assert "a-key-without-any-known-shape-42" not in r.redact("upstream said a-key-without-any-known-shape-42!")
    r.set_literals(["short"])  # too short to be a secret: ordinary words stay readable
    assert r.redact("a short line") == "a short line"


def test_masker_runs_last_and_refresh_first():
    calls = []
    r = Redactor(mask=lambda t: t.replace(PAT, "[MASKED:github-pat:1]"), refresh=lambda: calls.append(1))
    assert r.redact(f"refused CONNECT {PAT}.example:443") == "refused CONNECT [MASKED:github-pat:1].example:443"
    assert calls == [1]


@pytest.mark.parametrize("line", [
    "gatehouse: policy /tmp/p.toml loaded (sha256 87dfa38c7a57), upstream https://127.0.0.1:39841",
    "identity: CONNECT api.anthropic.com by alice (corp)",
    "127.0.0.1:5555: POST https://api.anthropic.com/v1/messages?beta=true",
    "<< 200 OK 1.2k",
    "mitmproxy.proxy.server: client disconnect",
    "the Authorization header (ANTHROPIC_AUTH_TOKEN)",
])
def test_ordinary_lines_are_unchanged(line):
    assert Redactor().redact(line) == line


def test_a_failing_redaction_withholds_the_line():
    def broken(text):
        raise RuntimeError(text)
    out = Redactor(mask=broken).redact(f"secret {PAT}")
    assert PAT not in out and "withheld" in out


def test_line_redactor_sees_a_secret_split_across_writes():
    out = []
    lines = LineRedactor(Redactor(), out.append)
    lines.write(f"flow: Bearer {JWT[:25]}")
    lines.write(f"{JWT[25:]} done\nnext ")
    lines.flush()
    text = "".join(out)
    assert JWT[:25] not in text and text.endswith("done\nnext ")


# -- every log record of the process -------------------------------------------------------------

@pytest.fixture
def factory():
    logsafety.install_record_factory()
    yield
    logsafety.uninstall_record_factory()


def test_record_factory_redacts_message_args_and_exceptions(factory):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("gatehouse.test.logsafety")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("refused %s", f"Bearer {JWT}")
        try:
            raise ValueError(f"bad line {JWT}")
        except ValueError:
            logger.exception("failed")
        logger.info("plain %d%%", 5)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert JWT not in out and JWT[:30] not in out
    assert "refused Bearer [REDACTED" in out and "ValueError: bad line [REDACTED:jwt]" in out
    assert "plain 5%" in out


def test_record_factory_is_used_by_mitmproxy_formatter(factory):
    from mitmproxy import log as mlog

    record = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1, "line %s", (JWT,), None)
    assert JWT not in mlog.MitmFormatter(False).format(record)


def test_redacting_stream_wraps_and_unwraps():
    inner = io.StringIO()
    stream = logsafety.wrap(inner)
    assert logsafety.wrap(stream) is stream
    print(f"GET https://api.anthropic.com/?k={JWT}", file=stream)
    stream.flush()
    assert JWT not in inner.getvalue() and "GET https://api.anthropic.com/?k=" in inner.getvalue()
    assert logsafety.unwrap(stream) is inner


# -- error pages --------------------------------------------------------------------------------

@pytest.mark.parametrize("status, message, etype", [
    (400, f"Bad HTTP request line: b'POST /?{JWT} HTTP/1.1 x'", "invalid_request_error"),
    (400, "Received invalid header name: b'Bearer xyz' from client", "invalid_request_error"),
    (400, "HTTP/1 protocol error: illegal chunk header: bytearray(b'zz')", "invalid_request_error"),
    (413, "Request body exceeds mitmproxy's body_size_limit.", "request_too_large"),
    (502, "[Errno 111] Connect call failed ('127.0.0.1', 9)", "api_error"),
    (504, "timeout", "api_error"),
    (418, "teapot", "invalid_request_error"),
])
def test_error_pages_are_anthropic_errors_without_request_bytes(status, message, etype):
    doc = json.loads(protocolerrors.error_body(status, message))
    assert doc["type"] == "error" and doc["error"]["type"] == etype
    text = doc["error"]["message"]
    assert text and "b'" not in text and JWT not in text and "127.0.0.1" not in text and "xyz" not in text


def test_patched_mitmproxy_error_response_is_json():
    mitmpatches.install()
    try:
        from mitmproxy.proxy.layers.http import _http1

        raw = _http1.make_error_response(400, f"Bad HTTP request line: b'{JWT}'")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
        assert json.loads(body)["error"]["type"] == "invalid_request_error" and JWT.encode() not in raw
        assert mitmpatches._json_error_head([(b":status", b"502"), *mitmpatches._MITMPROXY_ERROR_HEAD]) == [
            (b":status", b"502"), (b"content-type", b"application/json"), (b"x-should-retry", b"true")]
    finally:
        mitmpatches.uninstall()
    from mitmproxy.proxy.layers.http import _http1 as again
    assert b"text/html" in again.make_error_response(400, "x")


def test_trailers_become_a_protocol_error():
    import h11

    reader = mitmpatches.NoTrailersReader(type("R", (), {
        "__call__": lambda self, buf: h11.EndOfMessage(headers=[("x-t", "v")]),
        "read_eof": lambda self: h11.EndOfMessage()})())
    with pytest.raises(h11.RemoteProtocolError, match="trailers"):
        reader(b"")
    assert isinstance(reader.read_eof(), h11.EndOfMessage)


# -- the mitmproxy code the patches are written against ---------------------------------------

@pytest.mark.parametrize("name", list(mitmpatches.CHECKED_SOURCES))
def test_mitmproxy_functions_are_the_ones_the_patches_were_written_for(name):
    """Fails when mitmproxy changes a function addons/mitmpatches.py replaces or relies on:
    re-read the new version (do trailers still crash? are error pages still HTML? does
    next_layer still defer to an already-set layer?), adapt the patch, update the digest."""
    assert mitmpatches.source_digest(name) == mitmpatches.CHECKED_SOURCES[name], (
        f"mitmproxy's {name} changed (mitmpatches written for {mitmpatches.WRITTEN_FOR})")


def test_mitmproxy_still_crashes_on_http1_trailers_without_the_patch():
    import inspect

    from mitmproxy.proxy.layers.http import _http1

    assert 'raise NotImplementedError(f"HTTP trailers are not implemented yet.")' in inspect.getsource(
        _http1.Http1Connection.read_body)


def test_documentation_placeholders_in_urls_stay_readable():
    line = "send it as the proxy password (HTTPS_PROXY=http://gatehouse:TOKEN@HOST:PORT)"
    assert Redactor().redact(line) == line


# -- review findings ------------------------------------------------------------------------------

def test_redaction_is_linear_on_hostile_lines():
    import time
    r = Redactor(mask=lambda t: t)
    for line in ("a." * 40_000, "x://" + "a:" * 40_000, "%" * 50_000, "a" * 60_000 + "%41"):
        t0 = time.process_time()
        r.redact(line)
        assert time.process_time() - t0 < 2.0, line[:20]  # generous: quadratic took seconds per 80 KB


def test_percent_encoded_secrets_and_tokens_are_redacted():
    pat = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"
    r = Redactor(mask=lambda t: t.replace(pat, "[MASKED:github-pat:abc123]"))
    line = f"identity: refused GET api.anthropic.com/v1/files/{pat.replace('_', '%5F')} from 127.0.0.1"
    assert "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi" not in r.redact(line)
    jwt = "eyJhbGciOiJSUzI1NiJ9%2EeyJzdWIiOiJhbGljZSJ9%2Ec2lnbmF0dXJlLXNpZ25hdHVyZQ"
    assert "eyJzdWIiOiJhbGljZSJ9" not in r.redact(f"GET /v1/x?t={jwt}")


def test_credential_headers_in_byte_reprs_and_coloured_lines():
    r = Redactor()
    assert "opaque-cookie-value" not in r.redact(r"b'GET / HTTP/1.1\r\ncookie: opaque-cookie-value\r\n'")
    assert "opaque-key-value" not in r.redact("\x1b[1mx-api-key\x1b[0m: opaque-key-value")


def test_a_secret_after_an_escape_in_a_bytes_repr_is_masked():
    pat = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"
    r = Redactor(mask=lambda t: __import__("re").sub(r"(?:^|[^A-Za-z0-9])ghp_[A-Za-z0-9]{36}", " [MASKED:github-pat:x]", t))
    line = "HTTP/2 protocol error: Illegal character '\\x00' in header value: b'a\\x00" + pat + "'"
    assert pat not in r.redact(line)
    plain = "nothing to see in b'a\\x00b'"
    assert r.redact(plain) == plain
