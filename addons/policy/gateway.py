"""The policy's ``[gateway]`` section: what every feature shares (upstream, state dir) and the
gateway-wide limits (other hosts, endpoints, body size).

The defaults are what Claude Code and the SDKs need and nothing more: only api.anthropic.com
is intercepted, other hosts are refused, and only the endpoints below are forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gatehouse.access.config import parse_endpoints
from gatehouse.access.endpoints import Endpoint
from gatehouse.common.urls import http_url_problem
from gatehouse.policy.reader import PolicyError, Section

API_HOST = "api.anthropic.com"
DEFAULT_UPSTREAM = f"https://{API_HOST}"
# What Claude Code and the SDKs need; every other method and path is refused unless the
# policy opens it (docs/security.md).
DEFAULT_ENDPOINT_ENTRIES = (
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "GET /v1/models*",
    "GET /api/claude_code/*",
    # Claude Code's own calls when nonessential traffic is on: feature flags, bootstrap,
    # the MCP registry and event logging (observed from 2.1.197). Their JSON bodies are
    # scanned like any other.
    "GET /api/claude_cli/*",
    "GET /api/claude_code_penguin_mode",
    "GET /mcp-registry/*",
    "POST /api/eval/*",
    "POST /api/event_logging/*",
)
DEFAULT_ALLOWED_ENDPOINTS = tuple(Endpoint.parse(e) for e in DEFAULT_ENDPOINT_ENTRIES)
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # the API's own request size limit
DEFAULT_STATE_DIR = "~/.gatehouse"


@dataclass(frozen=True)
class GatewayPolicy:
    upstream: str | None = None
    state_dir: Path = Path(DEFAULT_STATE_DIR).expanduser()
    other_hosts: str = "deny"
    passthrough_hosts: tuple[str, ...] = ()  # host globs, matched by gatehouse.common.hosts
    allowed_endpoints: tuple[Endpoint, ...] = DEFAULT_ALLOWED_ENDPOINTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def validate_upstream(value: str, file: str, key: str) -> str:
    """An upstream base URL without its trailing slash; `PolicyError` naming `file` and `key` otherwise."""
    if why := http_url_problem(value, what="base URL", bare=True):
        raise PolicyError(file, key, why)
    return value.rstrip("/")


def parse_gateway(sec: Section | None) -> GatewayPolicy:
    if sec is None:
        return GatewayPolicy()
    upstream = sec.str("upstream", None)
    if upstream is not None:
        upstream = validate_upstream(upstream, sec.file, sec.key_path("upstream"))
    endpoints = parse_endpoints(sec, "allowed_endpoints", DEFAULT_ENDPOINT_ENTRIES)
    assert endpoints is not None
    g = GatewayPolicy(
        upstream=upstream,
        state_dir=sec.path_value("state_dir", Path(DEFAULT_STATE_DIR).expanduser()),
        other_hosts=sec.str("other_hosts", "deny", choices=("deny", "passthrough")),
        passthrough_hosts=tuple(sec.str_list("passthrough_hosts", ())),
        allowed_endpoints=endpoints,
        max_body_bytes=sec.int("max_body_bytes", DEFAULT_MAX_BODY_BYTES, min=1024),
    )
    sec.done()
    return g
