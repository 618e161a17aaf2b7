"""Access decisions: which hosts, endpoints and models a caller may reach, and which tools
that run on Anthropic's side a request may name."""

from __future__ import annotations

import re
from enum import Enum
from typing import TYPE_CHECKING, Any

from gatehouse.access.config import GroupPolicy
from gatehouse.access.endpoints import BODILESS_METHODS, METHODS, allowed, path_allowed
from gatehouse.common.hosts import host_matches, normalise_host
from gatehouse.exchange import Identity
from gatehouse.policy.gateway import API_HOST
from gatehouse.wire import apierrors
from gatehouse.wire.apierrors import ApiError
from gatehouse.wire.sse import compact_json

if TYPE_CHECKING:  # the loader composes every feature's parser: not needed to run the checks
    from gatehouse.policy.loader import Policy

# Endpoints whose JSON body names a model that group policy must allow.
MODEL_ENDPOINTS = ("/v1/messages", "/v1/messages/count_tokens")


class HostRoute(Enum):
    API = "api"  # intercepted, inspected, forwarded to the upstream
    PASSTHROUGH = "passthrough"  # tunnelled untouched (TLS not intercepted)
    DENY = "deny"


def check_api_target(scheme: str, port: int) -> ApiError | None:
    """The API is https on 443 only: anything else would carry the gateway's key in clear text
    or to another service on the API host."""
    if scheme != "https" or port != 443:
        return apierrors.permission(
            f"Gatehouse only forwards https://{API_HOST} (port 443); this request was {scheme} on port {port}."
        )
    return None


def route_host(policy: Policy, host: str) -> HostRoute:
    if normalise_host(host) == API_HOST:
        return HostRoute.API
    if policy.gateway.other_hosts == "passthrough" or host_matches(host, policy.gateway.passthrough_hosts):
        return HostRoute.PASSTHROUGH
    return HostRoute.DENY


def host_refusal(host: str) -> ApiError:
    return apierrors.permission(
        f"Gatehouse only forwards Claude API traffic; {host} is not an allowed host. "
        f"Ask your gateway operator to add it to [gateway] passthrough_hosts, or exclude it with NO_PROXY."
    )


def caller_groups(policy: Policy, identity: Identity | None) -> list[GroupPolicy]:
    """The policy groups the caller belongs to, in policy order."""
    if identity is None:
        return []
    mine = set(identity.groups)
    return [g for name, g in policy.groups.items() if name in mine]


# Dot segments, encoded separators or dots, backslashes and empty segments: an upstream (or a
# proxy in front of it) may normalise these into another endpoint than the one checked here.
_AMBIGUOUS_PATH = re.compile(r"(^|/)\.\.?(/|$)|%2e|%2f|%5c|\\|//", re.IGNORECASE)


def check_path(path: str) -> ApiError | None:
    bare = path.split("?", 1)[0]
    if not bare.startswith("/") or _AMBIGUOUS_PATH.search(bare):
        return apierrors.invalid_request(
            "Gatehouse refuses request paths with dot segments, encoded separators or empty segments."
        )
    return None


def check_endpoint(policy: Policy, method: str, path: str, identity: Identity | None) -> ApiError | None:
    """The method and path must be opened by the policy, for the caller's groups too."""
    bare = path.split("?", 1)[0]
    endpoints = policy.gateway.allowed_endpoints
    method = method.upper() if method.upper() in METHODS else "this method"  # never echo the caller's word
    if not allowed(method, bare, endpoints):
        if path_allowed(bare, endpoints):
            return apierrors.permission(f"Gatehouse policy does not allow {method} on the endpoint {bare}.")
        return apierrors.permission(f"Gatehouse policy does not allow the endpoint {bare}.")
    if policy.groups and identity is not None:
        groups = caller_groups(policy, identity)
        if not groups:
            return apierrors.permission(
                f"{identity.email or identity.subject} is in none of the groups this gateway allows "
                f"({', '.join(policy.groups)}); ask your gateway operator for access."
            )
        if not any(allowed(method, bare, g.endpoints or endpoints) for g in groups):
            return apierrors.permission(
                f"Your groups ({', '.join(g.name for g in groups)}) may not use {method} {bare}."
            )
    return None


def check_body_allowed(method: str, has_body: bool) -> ApiError | None:
    """A GET (or HEAD, DELETE, OPTIONS) carries no body: one would be forwarded where nothing
    expects, and so nothing inspects, it."""
    if has_body and method.upper() in BODILESS_METHODS:
        return apierrors.invalid_request(f"Gatehouse refuses a {method.upper()} request with a body.")
    return None


def names_model(path: str) -> bool:
    """Whether requests to `path` carry a `model` the policy checks."""
    return path.split("?", 1)[0] in MODEL_ENDPOINTS


def model_body(value: Any) -> dict[str, Any]:
    """The parsed body of a request to an endpoint that names a model (`names_model`), checked
    to be an object with a string `model`: read once for the model and the server-tool checks.

    Raises ValueError for a body that does not say which model it asks for.
    """
    if not isinstance(value, dict):
        raise ValueError("the request body is not a JSON object")
    if not isinstance(value.get("model"), str):
        raise ValueError("the request body has no string `model`")
    return value


def check_model(policy: Policy, model: str, identity: Identity | None) -> ApiError | None:
    if not policy.groups or identity is None:
        return None
    groups = caller_groups(policy, identity)
    if any(g.allows_model(model) for g in groups):
        return None
    names = ", ".join(g.name for g in groups) or "none"
    return apierrors.permission(f"Gatehouse policy does not allow the model {model} for your groups ({names}).")


def check_body_size(policy: Policy, size: int) -> ApiError | None:
    limit = policy.gateway.max_body_bytes
    if size > limit:
        return apierrors.too_large(f"Request body is {size} bytes; this gateway accepts at most {limit} bytes.")
    return None


# Tool `type`s the client runs itself (the model's tool_use reaches the client, where the command
# rules judge it): custom tools and Anthropic-defined client tools. Every other typed tool runs on
# Anthropic's side (web search, web fetch, code execution, tool search, MCP toolsets...) and
# acts without any tool_use reaching the client: deny by default, including types to come.
CLIENT_TOOL_TYPES = frozenset({"custom"})
CLIENT_TOOL_PREFIXES = ("bash_", "text_editor_", "computer_", "memory_")


def _is_client_tool(tool_type: Any) -> bool:
    if tool_type is None:
        return True
    return isinstance(tool_type, str) and (tool_type in CLIENT_TOOL_TYPES or tool_type.startswith(CLIENT_TOOL_PREFIXES))


def server_tools_in(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The (type, name) of each tool of the request's `tools` that runs on Anthropic's side, in
    order. A `type` that is not a string is kept as its JSON text (and so refused unless a glob
    allows it); a missing `name` is ""."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or _is_client_tool(tool.get("type")):
            continue
        t, name = tool.get("type"), tool.get("name")
        out.append((t if isinstance(t, str) else compact_json(t), name if isinstance(name, str) else ""))
    return out


def _shown(text: str, limit: int = 100) -> str:
    """A caller's word in a refusal, cut to a readable length."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mcp_servers(body: dict[str, Any]) -> list[str] | None:
    """The names of the request's `mcp_servers` (None when it names none)."""
    servers = body.get("mcp_servers")
    if servers is None or servers == []:
        return None
    if not isinstance(servers, list):
        return []
    return [s["name"] for s in servers if isinstance(s, dict) and isinstance(s.get("name"), str)]


def check_server_tools(policy: Policy, body: dict[str, Any], identity: Identity | None) -> ApiError | None:
    """Server tools and `mcp_servers` are allowed when any of the caller's groups allows them
    (`server_tools` globs over a tool's type and name, `mcp_servers`); a policy without groups
    allows everything. Refused: 403 naming the first tool refused."""
    if not policy.groups or identity is None:
        return None
    groups = caller_groups(policy, identity)
    names = ", ".join(g.name for g in groups) or "none"
    for tool_type, name in server_tools_in(body):
        if not any(g.allows_server_tool(tool_type, name) for g in groups):
            what = f"{_shown(name)} ({_shown(tool_type)})" if name and name != tool_type else _shown(tool_type)
            return apierrors.permission(
                f"Gatehouse policy does not allow the server tool {what} for your groups ({names})."
            )
    servers = _mcp_servers(body)
    if servers is not None and not any(g.mcp_servers for g in groups):
        which = f" ({_shown(', '.join(servers))})" if servers else ""
        return apierrors.permission(
            f"Gatehouse policy does not allow mcp_servers{which} (MCP servers that Anthropic calls on the "
            f"model's behalf) for your groups ({names})."
        )
    return None
