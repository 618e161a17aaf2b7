"""Access decisions: which hosts, endpoints and models a caller may reach."""

from __future__ import annotations

import re
from enum import Enum

from gatehouse.access.config import GroupPolicy
from gatehouse.access.endpoints import BODILESS_METHODS, METHODS, allowed, path_allowed
from gatehouse.common.hosts import host_matches, normalise_host
from gatehouse.exchange import Identity
from gatehouse.policy.gateway import API_HOST
from gatehouse.policy.loader import Policy
from gatehouse.wire import apierrors, jsonbody
from gatehouse.wire.apierrors import ApiError

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


def requested_model(path: str, body: bytes) -> str | None:
    """The `model` of a Messages API request body, or None when the endpoint carries none.

    Raises ValueError for a body that should name a model and cannot be read.
    """
    if path.split("?", 1)[0] not in MODEL_ENDPOINTS:
        return None
    try:
        doc = jsonbody.loads(body)
    except RecursionError:
        raise ValueError("the request body is JSON nested too deeply to inspect") from None
    if not isinstance(doc, dict):
        raise ValueError("the request body is not a JSON object")
    model = doc.get("model")
    if not isinstance(model, str):
        raise ValueError("the request body has no string `model`")
    return model


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
