"""Log redaction, pure: `Redactor` (tokens, credential shapes, the gateway's keys, then the
masker) and `LineRedactor` (a secret split across writes)."""

from __future__ import annotations

import pytest

from gatehouse.masking.redact import LineRedactor, Redactor
from support.secrets import SAMPLE_JWT

PAT = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"
KEY = "sk-ant-gateway-held-key-0123456789"


@pytest.mark.parametrize(
    "line",
    [
        f"Bad HTTP request line: b'POST /v1/messages?t={SAMPLE_JWT} HTTP/1.1 x'",
        f"token {SAMPLE_JWT}",
        f"(b'authorization', b'Bearer {SAMPLE_JWT}')",
        f"Authorization: Bearer {SAMPLE_JWT}",
        f"Proxy-Authorization: Basic dXNlcjp{SAMPLE_JWT[:20]}",
        f"bytearray(b'{SAMPLE_JWT}\\r\\n')",
        f"unsigned {SAMPLE_JWT.rsplit('.', 1)[0]}.",
    ],
)
def test_jwts_and_credentials_are_redacted(line):
    out = Redactor().redact(line)
    assert SAMPLE_JWT not in out and SAMPLE_JWT[:30] not in out, out
    assert "[REDACTED" in out


@pytest.mark.parametrize(
    "line, secret",
    [
        ("Proxy-Authorization: Basic Z2F0ZWhvdXNlOnNlY3JldC1wYXNzd29yZA==", "Z2F0ZWhvdXNlOnNlY3JldC1wYXNzd29yZA=="),
        ("x-api-key: my-own-api-key-value", "my-own-api-key-value"),
        ("(b'x-gatehouse-token', b'opaque-token-1234')", "opaque-token-1234"),
        ("HTTPS_PROXY=http://gatehouse:hunter2hunter2@127.0.0.1:8080", "hunter2hunter2"),
        (f"x-api-key={KEY}", KEY),
        (f"sending {KEY[:-3]}xyz", KEY[:-3]),
        ("cookie: session=abcdef123456", "abcdef123456"),
    ],
)
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


@pytest.mark.parametrize(
    "line",
    [
        "gatehouse: policy /tmp/p.toml loaded (sha256 87dfa38c7a57), upstream https://127.0.0.1:39841",
        "identity: CONNECT api.anthropic.com by alice (corp)",
        "127.0.0.1:5555: POST https://api.anthropic.com/v1/messages?beta=true",
        "<< 200 OK 1.2k",
        "mitmproxy.proxy.server: client disconnect",
        "the Authorization header (ANTHROPIC_AUTH_TOKEN)",
    ],
)
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
    lines.write(f"flow: Bearer {SAMPLE_JWT[:25]}")
    lines.write(f"{SAMPLE_JWT[25:]} done\nnext ")
    lines.flush()
    text = "".join(out)
    assert SAMPLE_JWT[:25] not in text and text.endswith("done\nnext ")


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
    r = Redactor(
        mask=lambda t: __import__("re").sub(r"(?:^|[^A-Za-z0-9])ghp_[A-Za-z0-9]{36}", " [MASKED:github-pat:x]", t)
    )
    line = "HTTP/2 protocol error: Illegal character '\\x00' in header value: b'a\\x00" + pat + "'"
    assert pat not in r.redact(line)
    plain = "nothing to see in b'a\\x00b'"
    assert r.redact(plain) == plain
