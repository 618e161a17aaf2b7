"""The Access addon (gatehouse.mitm.access) through mitmproxy's hook dispatch: which hosts are
intercepted, tunnelled or refused, and which endpoints, bodies and models a caller may send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mitmproxy import connection, tls
from mitmproxy.proxy import context
from mitmproxy.proxy.layers.http import HttpConnectHook, HttpRequestHeadersHook, HttpRequestHook
from mitmproxy.proxy.layers.tls import TlsClienthelloHook
from mitmproxy.test import taddons, tflow

from gatehouse.mitm.access import Access
from gatehouse.mitm.flowutil import exchange_of
from gatehouse.mitm.state import GatewayState
from support.flows import API, ISSUER, api_flow, connect_flow, fire, gateway_state, identify, refusal

GROUPS = (
    ISSUER
    + """
[groups.developers]
models = ["claude-haiku-*"]

[groups.sre]
models = ["claude-*"]
endpoints = ["POST /v1/messages"]
"""
)
# A Messages request for a model the developers group may use.
HAIKU = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def tctx():
    with taddons.context() as ctx:
        yield ctx


def access(tmp_path: Path, policy: str = "") -> Access:
    return Access(gateway_state(tmp_path, policy))


def send(tctx: Any, addon: Access, flow) -> None:
    """Both request hooks, as mitmproxy runs them for one request."""
    fire(tctx, addon, HttpRequestHeadersHook(flow), HttpRequestHook(flow))


def access_decisions(flow) -> list[tuple[str, str | None]]:
    return [(d.action, d.rule) for d in exchange_of(flow).decisions if d.stage == "access"]


# -- hosts ------------------------------------------------------------------------------------


def test_a_messages_request_to_the_api_is_allowed(tmp_path, tctx):
    addon, f = access(tmp_path), api_flow()
    send(tctx, addon, f)
    assert f.response is None
    assert access_decisions(f) == [("allow", None)]
    assert not exchange_of(f).refused and not exchange_of(f).passthrough


def test_the_api_host_is_recognised_whatever_its_case_or_trailing_dot(tmp_path, tctx):
    addon, f = access(tmp_path), api_flow(host="API.Anthropic.com.")
    send(tctx, addon, f)
    assert f.response is None and access_decisions(f) == [("allow", None)]


def test_a_connect_to_the_api_host_is_let_through(tmp_path, tctx):
    addon, f = access(tmp_path), connect_flow()
    fire(tctx, addon, HttpConnectHook(f))
    assert f.response is None and not exchange_of(f).decisions


def test_a_connect_to_another_host_is_refused_with_403(tmp_path, tctx):
    addon, f = access(tmp_path), connect_flow("evil.example")
    fire(tctx, addon, HttpConnectHook(f))
    message = refusal(f, 403, "permission_error")
    assert message == (
        "Gatehouse only forwards Claude API traffic; evil.example is not an allowed host. Ask your "
        "gateway operator to add it to [gateway] passthrough_hosts, or exclude it with NO_PROXY."
    )
    assert access_decisions(f) == [("deny", "other_hosts")]


def test_a_request_to_another_host_is_refused_with_403(tmp_path, tctx):
    addon, f = access(tmp_path), api_flow("GET", "/", host="evil.example", scheme="http", port=80)
    send(tctx, addon, f)
    assert "evil.example is not an allowed host" in refusal(f, 403, "permission_error")
    assert access_decisions(f) == [("deny", "other_hosts")]


@pytest.mark.parametrize(
    "policy", ['[gateway]\npassthrough_hosts = ["*.github.com"]\n', '[gateway]\nother_hosts = "passthrough"\n']
)
def test_a_passthrough_host_is_relayed_uninspected(tmp_path, tctx, policy):
    addon = access(tmp_path, policy)
    connect = connect_flow("api.github.com")
    fire(tctx, addon, HttpConnectHook(connect))
    assert connect.response is None
    # Plain HTTP to it: marked passthrough, so the inspecting addons leave it alone; even a
    # GET with a body and an endpoint no policy opens go through.
    f = api_flow("GET", "/v1/anything", b"a body", host="api.github.com", scheme="http", port=80)
    send(tctx, addon, f)
    assert f.response is None
    assert exchange_of(f).passthrough and not exchange_of(f).decisions


def test_a_host_next_to_a_passthrough_glob_is_still_refused(tmp_path, tctx):
    addon = access(tmp_path, '[gateway]\npassthrough_hosts = ["*.github.com"]\n')
    f = api_flow("GET", "/", host="github.com.evil.example", scheme="http", port=80)
    send(tctx, addon, f)
    refusal(f, 403, "permission_error")
    assert not exchange_of(f).passthrough


def client_hello(connect_host: str, sni: str) -> tls.ClientHelloData:
    ctx = context.Context(tflow.tclient_conn(), None)  # type: ignore[arg-type]
    ctx.client.sni = sni
    ctx.server = connection.Server(address=(connect_host, 443))
    # The addon decides on the tunnel's target alone; the parsed hello is not needed.
    return tls.ClientHelloData(ctx, None)  # type: ignore[arg-type]


def test_tls_to_a_passthrough_host_is_not_intercepted(tmp_path, tctx):
    addon = access(tmp_path, '[gateway]\npassthrough_hosts = ["statsig.anthropic.com"]\n')
    data = client_hello("statsig.anthropic.com", "statsig.anthropic.com")
    fire(tctx, addon, TlsClienthelloHook(data))
    assert data.ignore_connection


def test_tls_to_the_api_is_intercepted_whatever_the_sni_says(tmp_path, tctx):
    addon = access(tmp_path, '[gateway]\npassthrough_hosts = ["statsig.anthropic.com"]\n')
    data = client_hello(API, "statsig.anthropic.com")
    fire(tctx, addon, TlsClienthelloHook(data))
    assert not data.ignore_connection


# -- the API target ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme, port", [("http", 80), ("http", 443), ("https", 8443)])
def test_the_api_only_over_https_on_443(tmp_path, tctx, scheme, port):
    addon, f = access(tmp_path), api_flow(scheme=scheme, port=port)
    send(tctx, addon, f)
    assert refusal(f, 403, "permission_error") == (
        f"Gatehouse only forwards https://api.anthropic.com (port 443); this request was {scheme} on port {port}."
    )
    assert access_decisions(f) == [("deny", "https_only")]


def test_api_request_bodies_are_never_streamed_past_the_checks(tmp_path, tctx):
    addon, f = access(tmp_path), api_flow()
    f.request.stream = True
    fire(tctx, addon, HttpRequestHeadersHook(f))
    assert f.request.stream is False


@pytest.mark.parametrize(
    "path",
    ["/v1/../v1/messages", "/v1/%2e%2e/messages", "/v1//messages", "/v1/messages%2Fcount_tokens", "/v1\\messages"],
)
def test_ambiguous_paths_are_refused(tmp_path, tctx, path):
    addon, f = access(tmp_path), api_flow(path=path)
    send(tctx, addon, f)
    assert "dot segments, encoded separators or empty segments" in refusal(f, 400, "invalid_request_error")
    assert access_decisions(f) == [("deny", "path")]


def test_a_compressed_request_body_is_refused(tmp_path, tctx):
    addon, f = access(tmp_path), api_flow(headers=[("content-encoding", "gzip")])
    send(tctx, addon, f)
    assert "does not accept compressed request bodies" in refusal(f, 400, "invalid_request_error")
    assert access_decisions(f) == [("deny", "content_encoding")]


def test_an_oversized_body_is_refused_on_its_content_length_before_it_is_read(tmp_path, tctx):
    addon, f = access(tmp_path, "[gateway]\nmax_body_bytes = 2048\n"), api_flow()
    f.request.headers["content-length"] = "4096"
    fire(tctx, addon, HttpRequestHeadersHook(f))
    assert (
        refusal(f, 413, "request_too_large") == "Request body is 4096 bytes; this gateway accepts at most 2048 bytes."
    )
    assert access_decisions(f) == [("deny", "max_body_bytes")]


def test_an_oversized_body_without_a_content_length_is_refused_once_read(tmp_path, tctx):
    addon = access(tmp_path, "[gateway]\nmax_body_bytes = 2048\n")
    f = api_flow(body={**HAIKU, "system": "x" * 3000})
    del f.request.headers["content-length"]  # chunked: the size is known only once read
    send(tctx, addon, f)
    assert "this gateway accepts at most 2048 bytes" in refusal(f, 413, "request_too_large")


# -- endpoints ---------------------------------------------------------------------------------

ENDPOINTS = '[gateway]\nallowed_endpoints = ["POST /v1/messages", "GET /v1/models*"]\n'


@pytest.mark.parametrize(
    "method, path", [("POST", "/v1/messages"), ("GET", "/v1/models"), ("GET", "/v1/models/claude-haiku-4-5?x=1")]
)
def test_an_endpoint_the_policy_opens_is_allowed(tmp_path, tctx, method, path):
    addon, f = access(tmp_path, ENDPOINTS), api_flow(method, path)
    send(tctx, addon, f)
    assert f.response is None and access_decisions(f) == [("allow", None)]


def test_a_known_path_with_a_method_the_policy_does_not_open_is_refused(tmp_path, tctx):
    addon, f = access(tmp_path, ENDPOINTS), api_flow("GET", "/v1/messages?beta=true")
    send(tctx, addon, f)
    assert refusal(f, 403, "permission_error") == "Gatehouse policy does not allow GET on the endpoint /v1/messages."
    assert access_decisions(f) == [("deny", "endpoint")]


def test_a_path_the_policy_does_not_open_is_refused(tmp_path, tctx):
    # count_tokens is open by default, not in this policy.
    addon, f = access(tmp_path, ENDPOINTS), api_flow("POST", "/v1/messages/count_tokens")
    send(tctx, addon, f)
    assert (
        refusal(f, 403, "permission_error") == "Gatehouse policy does not allow the endpoint /v1/messages/count_tokens."
    )


def test_an_unknown_method_is_not_echoed_back(tmp_path, tctx):
    addon, f = access(tmp_path, ENDPOINTS), api_flow("BREW<script>", "/v1/messages")
    send(tctx, addon, f)
    message = refusal(f, 403, "permission_error")
    assert message == "Gatehouse policy does not allow this method on the endpoint /v1/messages."
    assert "BREW" not in message


def test_default_endpoints_refuse_what_claude_clients_do_not_use(tmp_path, tctx):
    addon, f = access(tmp_path), api_flow("POST", "/v1/files")
    send(tctx, addon, f)
    assert refusal(f, 403, "permission_error") == "Gatehouse policy does not allow the endpoint /v1/files."


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_bodiless_method_with_a_body_is_refused(tmp_path, tctx, method):
    policy = '[gateway]\nallowed_endpoints = ["GET,DELETE /v1/models*"]\n'
    addon, f = access(tmp_path, policy), api_flow(method, "/v1/models", b'{"smuggled": true}')
    send(tctx, addon, f)
    assert refusal(f, 400, "invalid_request_error") == f"Gatehouse refuses a {method} request with a body."
    assert access_decisions(f) == [("deny", "body_method")]


# -- groups: models and endpoints ----------------------------------------------------------------


def test_a_model_the_callers_groups_allow_is_allowed(tmp_path, tctx):
    addon, f = access(tmp_path, GROUPS), api_flow(body=HAIKU)
    identify(f, "developers")
    send(tctx, addon, f)
    assert f.response is None and access_decisions(f) == [("allow", None)]


def test_a_model_outside_the_callers_groups_is_refused_naming_the_model(tmp_path, tctx):
    addon, f = access(tmp_path, GROUPS), api_flow(body={**HAIKU, "model": "claude-opus-4-1"})
    identify(f, "developers")
    send(tctx, addon, f)
    assert refusal(f, 403, "permission_error") == (
        "Gatehouse policy does not allow the model claude-opus-4-1 for your groups (developers)."
    )
    [deny] = [d for d in exchange_of(f).decisions if d.stage == "access"]
    assert deny.rule == "model" and deny.detail["model"] == "claude-opus-4-1"


def test_any_of_the_callers_groups_may_allow_the_model(tmp_path, tctx):
    addon, f = access(tmp_path, GROUPS), api_flow(body={**HAIKU, "model": "claude-opus-4-1"})
    identify(f, "developers", "sre")
    send(tctx, addon, f)
    assert f.response is None and access_decisions(f) == [("allow", None)]


def test_the_model_of_a_count_tokens_request_is_checked_too(tmp_path, tctx):
    addon = access(tmp_path, GROUPS)
    f = api_flow(path="/v1/messages/count_tokens", body={**HAIKU, "model": "claude-opus-4-1"})
    identify(f, "developers")
    send(tctx, addon, f)
    assert "does not allow the model claude-opus-4-1" in refusal(f, 403, "permission_error")


@pytest.mark.parametrize(
    "body, why",
    [
        (b"not json", "Gatehouse cannot read the request body to check its model"),
        (b"[1]", "the request body is not a JSON object"),
        (b'{"model": 7}', "the request body has no string `model`"),
    ],
)
def test_a_body_whose_model_cannot_be_read_is_refused(tmp_path, tctx, body, why):
    addon, f = access(tmp_path, GROUPS), api_flow(body=body)
    identify(f, "developers")
    send(tctx, addon, f)
    assert why in refusal(f, 400, "invalid_request_error")


def test_a_caller_in_no_group_is_refused(tmp_path, tctx):
    addon, f = access(tmp_path, GROUPS), api_flow(body=HAIKU)
    identify(f, "marketing")
    send(tctx, addon, f)
    assert refusal(f, 403, "permission_error") == (
        "alice@example.com is in none of the groups this gateway allows "
        "(developers, sre); ask your gateway operator for access."
    )
    assert access_decisions(f) == [("deny", "endpoint")]


def test_a_caller_without_email_is_named_by_subject(tmp_path, tctx):
    addon, f = access(tmp_path, GROUPS), api_flow(body=HAIKU)
    identify(f, email=None)
    send(tctx, addon, f)
    assert refusal(f, 403, "permission_error").startswith("alice is in none of the groups")


def test_a_group_may_narrow_the_endpoints(tmp_path, tctx):
    addon, f = access(tmp_path, GROUPS), api_flow("GET", "/v1/models")
    identify(f, "sre")
    send(tctx, addon, f)
    assert refusal(f, 403, "permission_error") == "Your groups (sre) may not use GET /v1/models."


# -- fail closed -------------------------------------------------------------------------------


FAILED = "Gatehouse could not process this request (access failed) and did not forward it."


@pytest.mark.parametrize("hook", [HttpConnectHook, HttpRequestHeadersHook, HttpRequestHook])
def test_a_failing_check_refuses_instead_of_forwarding(tctx, hook):
    addon = Access(GatewayState())  # no policy: every check raises
    f = connect_flow() if hook is HttpConnectHook else api_flow()
    fire(tctx, addon, hook(f))
    assert refusal(f, 500, "api_error") == FAILED
    assert exchange_of(f).decisions[-1].rule == "internal_error"
    assert exchange_of(f).errors == ["access: internal error RuntimeError"]


class BrokenGroups:
    """A policy whose group table fails when read: a bug deep in a check, after the host passed."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy

    def __getattr__(self, name: str) -> Any:
        if name == "groups":
            raise KeyError("boom")
        return getattr(self._policy, name)


def test_an_exception_midway_through_the_request_checks_refuses(tmp_path, tctx):
    state = gateway_state(tmp_path, GROUPS)
    addon, f = Access(state), api_flow(body=HAIKU)
    identify(f, "developers")
    fire(tctx, addon, HttpRequestHeadersHook(f))
    assert f.response is None
    state.policy = BrokenGroups(state.policy)  # type: ignore[assignment]
    fire(tctx, addon, HttpRequestHook(f))
    assert refusal(f, 500, "api_error") == FAILED
    assert ("allow", None) not in access_decisions(f)


def test_a_flow_refused_on_its_headers_is_not_checked_again(tmp_path, tctx):
    addon, f = access(tmp_path), api_flow(scheme="http", port=80)
    fire(tctx, addon, HttpRequestHeadersHook(f))
    refused = f.response
    fire(tctx, addon, HttpRequestHook(f))
    assert f.response is refused
    assert access_decisions(f) == [("deny", "https_only")]
