"""Foundation, end to end: a real mitmdump with the stack, the fake upstream, real clients."""

from __future__ import annotations

import json
import socket
import subprocess

import anthropic
import pytest

from support.fake_upstream import Reply, claude_code_tool_responder
from support.harness import CALLER_KEY, GATEWAY_KEY, REPO, read_response, sdk_client

pytestmark = pytest.mark.e2e

EXCHANGE_HEADER = "x-gatehouse-exchange-id"


def test_sdk_buffered_call_gets_upstream_answer_with_gateway_key(gateway, upstream):
    upstream.enqueue(Reply.text("Hello through the gateway."))
    client = sdk_client(gateway)
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    msg = raw.parse()
    assert msg.content[0].text == "Hello through the gateway."
    assert raw.headers.get(EXCHANGE_HEADER, "").startswith("gx_")
    [req] = upstream.requests.messages()
    assert req.headers["x-api-key"] == GATEWAY_KEY
    assert "authorization" not in req.headers
    assert all(CALLER_KEY not in v for v in req.headers.values())


def test_sdk_streamed_call(gateway, upstream):
    upstream.enqueue(Reply.text("Streaming through the gateway works fine.", chunk_chars=5))
    client = sdk_client(gateway)
    with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        exchange_id = stream.response.headers.get(EXCHANGE_HEADER, "")
    assert text == "Streaming through the gateway works fine."
    assert final.stop_reason == "end_turn"
    assert exchange_id.startswith("gx_")
    assert upstream.requests.messages()[-1].headers["x-api-key"] == GATEWAY_KEY


def test_caller_bearer_token_is_not_forwarded(gateway, upstream):
    client = sdk_client(gateway, api_key=None, auth_token="caller-bearer-secret")
    client.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    req = upstream.requests.messages()[-1]
    assert "authorization" not in req.headers
    assert req.headers["x-api-key"] == GATEWAY_KEY


def test_disallowed_endpoint_gets_permission_error(gateway, upstream):
    client = sdk_client(gateway)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        client.beta.files.list()
    assert e.value.status_code == 403
    assert e.value.response.headers["x-should-retry"] == "false"
    assert e.value.response.headers[EXCHANGE_HEADER].startswith("gx_")
    body = e.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert "/v1/files" in body["error"]["message"]
    assert not [r for r in upstream.requests if r.path.startswith("/v1/files")]


def test_oversized_body_gets_413(gateway_factory, upstream):
    gw = gateway_factory("[gateway]\nmax_body_bytes = 2048\n")
    client = sdk_client(gw)
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x" * 5000}]
        )
    assert e.value.status_code == 413
    assert e.value.response.json()["error"]["type"] == "request_too_large"
    assert not upstream.requests.messages()


def _raw_exchange(gateway, request: bytes) -> bytes:
    """Send raw bytes to the proxy and read one whole response."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(request)
        return read_response(s)


def _connect(gateway, host: str, port: int = 443) -> bytes:
    return _raw_exchange(gateway, f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())


def test_unknown_host_is_refused(gateway, upstream):
    reply = _connect(gateway, "example.org")
    assert reply.startswith(b"HTTP/1.1 403")
    assert b"not an allowed host" in reply


def test_plain_http_to_other_host_is_refused(gateway):
    reply = _raw_exchange(gateway, b"GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 403")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert json.loads(body)["error"]["type"] == "permission_error"


def test_gateway_key_never_in_log(gateway, upstream):
    client = sdk_client(gateway)
    client.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    gateway.stop()
    log = gateway.log()
    assert "POST" in log  # the log is real and covers the flow
    assert GATEWAY_KEY not in log
    assert CALLER_KEY not in log


def test_no_key_configured_is_a_clear_api_error(gateway_factory, upstream):
    gw = gateway_factory('[credentials]\napi_key_env = "GATEHOUSE_TEST_UNSET_KEY"\n')
    client = sdk_client(gw)
    with pytest.raises(anthropic.InternalServerError) as e:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert "GATEHOUSE_TEST_UNSET_KEY" in e.value.response.json()["error"]["message"]
    assert not upstream.requests.messages()
    # The gateway keeps serving.
    assert gw.proc.poll() is None


@pytest.mark.parametrize(
    "policy, expected",
    [
        ('[gateway]\nmax_body_bytes = "lots"\n', "gateway.max_body_bytes: expected an integer"),
        (
            '[[commands.rules]]\nid = "x"\ntool = "Bash"\naction = "approve"\nmessage = "m"\n',
            "commands.rules[0]: an approve rule needs at least one [[issuers]] entry",
        ),
    ],
)
def test_bad_policy_fails_startup(gateway_factory, policy, expected):
    gw = gateway_factory(policy, start=False)
    code, output = gw.run_to_exit()
    assert code != 0
    assert expected in output
    assert str(gw.policy_path) in output


def test_missing_policy_option_fails_startup(tmp_path):
    from support.harness import free_port, mitmdump_bin

    cmd = [
        mitmdump_bin(),
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(free_port()),
        "--set",
        f"confdir={tmp_path}",
        "-s",
        str(REPO / "addons" / "gateway.py"),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "Gatehouse needs a policy" in p.stdout + p.stderr


def test_claude_code_cli_runs_a_tool_through_the_gateway(gateway, upstream, tmp_path):
    from support.harness import run_claude

    upstream.responder = claude_code_tool_responder("echo gatehouse-$((6*7))")
    work = tmp_path / "project"
    work.mkdir()
    result = run_claude(gateway, work, "run the check", args=["--allowedTools", "Bash"])
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert "gatehouse-42" in out["result"]
    # The tool really ran on this machine, and its output went back through the gateway.
    tool_results = [r for r in upstream.requests.messages() if r.tool_results()]
    assert tool_results and "gatehouse-42" in json.dumps(tool_results[-1].tool_results())
    assert all(r.headers.get("x-api-key") == GATEWAY_KEY for r in upstream.requests)
