"""Gateway state, flows and hook dispatch for the addon tests (tests/mitm).

The state is what PolicyLoader leaves after start-up (the policy loaded from a TOML file, the
upstream it names), built without PolicyLoader so a test sets only what it is about. Flows are
mitmproxy's test flows (tflow/tutils) shaped like Claude API traffic: CONNECTs, requests (through
a tunnel or not) and the upstream's responses; hooks run through mitmproxy's own dispatch (an
addon's hook is found by the hook's name, as in mitmdump); a refused flow's answer is read back
as the Anthropic error the client would print.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import hooks, http
from mitmproxy.test import taddons, tflow, tutils

from gatehouse.exchange import Identity
from gatehouse.mitm.flowutil import exchange_of
from gatehouse.mitm.state import GatewayState
from gatehouse.policy.loader import load_policy
from support.harness import write_policy

API = "api.anthropic.com"
MODEL = "claude-sonnet-4-5"
MESSAGES_BODY = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
# Groups need an issuer to take members from; its keys are never fetched by these tests.
ISSUER = """
[[issuers]]
name = "corp"
issuer = "https://login.example.com"
audience = "gatehouse"
"""


def gateway_state(directory: Path, policy: str = "") -> GatewayState:
    """The state PolicyLoader would leave for this policy text (written to `directory`)."""
    loaded = load_policy(write_policy(directory, policy))
    state = GatewayState(policy=loaded)
    if loaded.gateway.upstream:
        state.upstream = urlsplit(loaded.gateway.upstream)
    return state


Headers = Mapping[str, str] | list[tuple[str, str]]


def _headers(headers: Headers | None) -> http.Headers:
    items = headers.items() if isinstance(headers, Mapping) else headers or []
    return http.Headers([(k.encode(), v.encode()) for k, v in items])


def api_flow(
    method: str = "POST",
    path: str = "/v1/messages?beta=true",
    body: bytes | dict | None = None,
    *,
    host: str = API,
    scheme: str = "https",
    port: int = 443,
    headers: Headers | None = None,
    tunnel: http.HTTPFlow | None = None,
    response: http.Response | None = None,
) -> http.HTTPFlow:
    """A request as a Claude client sends it through the proxy (POSTs carry a Messages body).

    `tunnel`: the CONNECT flow it came through (its client connection); `response`: the
    upstream's answer, already on the flow, for the response hooks.
    """
    if body is None:
        body = MESSAGES_BODY if method == "POST" else b""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = _headers(headers)
    if content:
        h.setdefault("content-type", "application/json")
        h["content-length"] = str(len(content))
    req = tutils.treq(
        method=method.encode(),
        host=host,
        port=port,
        scheme=scheme.encode(),
        authority=f"{host}:{port}".encode(),
        path=path.encode(),
        headers=h,
        content=content,
    )
    f = tflow.tflow(client_conn=tunnel.client_conn if tunnel else None, req=req)
    if response is not None:
        f.response = response
    return f


def connect_flow(host: str = API, port: int = 443, headers: Headers | None = None) -> http.HTTPFlow:
    """A CONNECT to `host` (with these headers, e.g. proxy-authorization): a tunnel of its own."""
    req = tutils.treq(
        method=b"CONNECT",
        host=host,
        port=port,
        scheme=b"",
        authority=f"{host}:{port}".encode(),
        path=b"",
        headers=_headers(headers),
        content=b"",
    )
    return tflow.tflow(req=req)


def api_response(
    content: bytes = b"", ctype: str = "application/json", status: int = 200, **headers: str
) -> http.Response:
    """An upstream's answer; `headers` as keywords, underscores for dashes (`request_id="r"`)."""
    return tutils.tresp(status_code=status, headers=http.Headers(content_type=ctype, **headers), content=content)


def identify(flow: http.HTTPFlow, *groups: str, email: str | None = "alice@example.com") -> Identity:
    """What the Identity addon (which runs first) puts on a verified caller's flow."""
    identity = Identity(
        issuer="https://login.example.com",
        subject="alice",
        issuer_name="corp",
        email=email,
        groups=tuple(groups),
        token_id="jti-1",
    )
    exchange_of(flow).identity = identity
    return identity


def fire(tctx: taddons.context, addon: Any, *events: hooks.Hook) -> None:
    """Run each hook on `addon` the way mitmproxy dispatches it."""
    for event in events:
        tctx.master.event_loop.run_until_complete(tctx.master.addons.invoke_addon(addon, event))


def refusal(flow: http.HTTPFlow, status: int, error_type: str) -> str:
    """Assert the flow was answered by the gateway with this Anthropic error; its message."""
    assert flow.response is not None, "the flow was not answered"
    assert flow.response.status_code == status, flow.response.content
    assert flow.response.headers["content-type"] == "application/json"
    assert flow.response.headers["x-should-retry"] == "false"
    doc = json.loads(flow.response.content)
    assert set(doc) == {"type", "error"} and doc["type"] == "error", doc
    assert set(doc["error"]) == {"type", "message"} and doc["error"]["type"] == error_type, doc
    ex = exchange_of(flow)
    assert ex.refused and ex.decisions[-1].action == "deny"
    return doc["error"]["message"]
