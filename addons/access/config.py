"""The policy's ``[groups.NAME]`` tables, and the endpoint lists of the policy (``allowed_endpoints``,
a group's ``endpoints``), as the access checks read them.

A group limits which models and endpoints its members may use, and which tools that run on
Anthropic's side (``server_tools``: web search, web fetch, code execution...; ``mcp_servers``:
the MCP connector) their requests may name; members come from verified tokens, so the loader
refuses groups without an issuer. Endpoint entries are parsed here so that
a bad entry is refused with the key that holds it (``gateway.allowed_endpoints[1]``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from gatehouse.access.endpoints import Endpoint, EndpointSyntaxError
from gatehouse.policy.reader import PolicyError, Section


@dataclass(frozen=True)
class GroupPolicy:
    name: str
    models: tuple[str, ...] = ("*",)
    endpoints: tuple[Endpoint, ...] | None = None  # None: the gateway's allowed_endpoints
    server_tools: tuple[str, ...] = ("*",)  # globs over a server tool's `type` and `name`
    mcp_servers: bool = True  # whether requests may carry `mcp_servers`

    def allows_model(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def allows_server_tool(self, tool_type: str, name: str) -> bool:
        """A glob matching the tool's `type` (``web_search_20250305``) or its `name`
        (``web_search``) allows it; case-sensitive, as the API's names are."""
        return any(
            fnmatch.fnmatchcase(tool_type, p) or (name and fnmatch.fnmatchcase(name, p)) for p in self.server_tools
        )


def parse_endpoints(sec: Section, key: str, default: tuple[str, ...] | None) -> tuple[Endpoint, ...] | None:
    """The endpoint entries under `key` (or `default`, None when absent and no default)."""
    entries = sec.str_list(key, default)
    if entries is None:
        return None
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(Endpoint.parse(entry))
        except EndpointSyntaxError as e:
            raise PolicyError(sec.file, f"{sec.key_path(key)}[{i}]", str(e)) from None
    return tuple(out)


def parse_groups(root: Section) -> dict[str, GroupPolicy]:
    """The policy's ``[groups.NAME]`` tables, in policy order."""
    groups = {}
    for name, gsec in root.named_sections("groups").items():
        endpoints = parse_endpoints(gsec, "endpoints", None)
        groups[name] = GroupPolicy(
            name=name,
            models=gsec.str_list("models", ("*",)),
            endpoints=endpoints,
            server_tools=gsec.str_list("server_tools", ("*",)),
            mcp_servers=gsec.bool("mcp_servers", True),
        )
        gsec.done()
    return groups
