"""Tools that run on Anthropic's side (gatehouse.access.checks.server_tools_in and
check_server_tools): which tools of a request are server-side, and the groups that allow them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

import pytest

from gatehouse.access.checks import check_server_tools, server_tools_in
from gatehouse.access.config import GroupPolicy, parse_groups
from gatehouse.exchange import Identity
from gatehouse.policy.reader import PolicyError, Section


@dataclass(frozen=True)
class GroupsOnly:
    """What check_server_tools reads of a `Policy`: its groups, parsed by the real parser."""

    groups: dict[str, Any] = field(default_factory=dict)


def policy(groups: str = "") -> GroupsOnly:
    return GroupsOnly(parse_groups(Section(tomllib.loads(groups), "p.toml")))


def person(*groups: str) -> Identity:
    return Identity(issuer="https://login.example.com", subject="u1", groups=groups)


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
WEB_FETCH = {"type": "web_fetch_20250910", "name": "web_fetch"}
CODE = {"type": "code_execution_20250825", "name": "code_execution"}
CLIENT_TOOLS = [
    {"name": "Bash", "description": "run", "input_schema": {"type": "object"}},
    {"type": "custom", "name": "Read", "input_schema": {"type": "object"}},
    {"type": "bash_20250124", "name": "bash"},
    {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    {"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
    {"type": "memory_20250818", "name": "memory"},
]


def test_server_tools_in_skips_client_tools():
    body = {"tools": [*CLIENT_TOOLS, WEB_SEARCH, CODE, {"type": "tool_search_tool_regex_20251119", "name": "ts"}]}
    assert server_tools_in(body) == [
        ("web_search_20250305", "web_search"),
        ("code_execution_20250825", "code_execution"),
        ("tool_search_tool_regex_20251119", "ts"),
    ]


@pytest.mark.parametrize("tools", [None, "web_search", {}, [], [1, "x", None]])
def test_server_tools_in_without_a_tool_list(tools):
    body = {} if tools is None else {"tools": tools}
    assert server_tools_in(body) == []


def test_an_odd_type_is_server_side():
    assert server_tools_in({"tools": [{"type": 7}, {"type": "mcp_toolset", "mcp_server_name": "x"}]}) == [
        ("7", ""),
        ("mcp_toolset", ""),
    ]


def test_groups_parse_server_tools_and_mcp_servers():
    sec = Section(
        tomllib.loads('[groups.dev]\nserver_tools = ["web_search*"]\nmcp_servers = false\n[groups.all]\n'), "p.toml"
    )
    groups = parse_groups(sec)
    assert groups["dev"].server_tools == ("web_search*",) and groups["dev"].mcp_servers is False
    assert groups["all"].server_tools == ("*",) and groups["all"].mcp_servers is True


@pytest.mark.parametrize(
    "text, key, message",
    [
        ('[groups.dev]\nserver_tools = "web_search"\n', "groups.dev.server_tools", "array of strings"),
        ('[groups.dev]\nmcp_servers = "no"\n', "groups.dev.mcp_servers", "a boolean"),
        ('[groups.dev]\nserver_tool = ["x"]\n', "groups.dev.server_tool", "unknown key"),
    ],
)
def test_group_refusals(text, key, message):
    with pytest.raises(PolicyError) as e:
        parse_groups(Section(tomllib.loads(text), "p.toml"))
    assert str(e.value).startswith(f"p.toml: {key}: ") and message in str(e.value)


def test_allows_server_tool_by_type_or_name():
    g = GroupPolicy(name="dev", server_tools=("web_search", "code_execution_2025*"))
    assert g.allows_server_tool("web_search_20250305", "web_search")
    assert g.allows_server_tool("code_execution_20250825", "code_execution")
    assert not g.allows_server_tool("web_fetch_20250910", "web_fetch")
    assert not g.allows_server_tool("web_search_20250305", "")
    assert not GroupPolicy(name="none", server_tools=()).allows_server_tool("web_search_20250305", "web_search")
    assert GroupPolicy(name="all").allows_server_tool("anything", "")


GROUPS = """
[groups.dev]
server_tools = ["web_search"]
mcp_servers = false
[groups.research]
server_tools = ["web_*", "code_execution_*"]
[groups.plain]
"""


def test_refused_tool_is_named_with_the_callers_groups():
    p = policy(GROUPS)
    err = check_server_tools(p, {"tools": [*CLIENT_TOOLS, WEB_SEARCH, WEB_FETCH]}, person("dev"))
    assert err is not None and err.status == 403 and err.type == "permission_error"
    assert err.message == (
        "Gatehouse policy does not allow the server tool web_fetch (web_fetch_20250910) for your groups (dev)."
    )


def test_any_group_of_the_caller_may_allow():
    p = policy(GROUPS)
    body = {"tools": [WEB_SEARCH, WEB_FETCH, CODE]}
    assert check_server_tools(p, body, person("dev", "research")) is None
    assert check_server_tools(p, body, person("research")) is None
    assert check_server_tools(p, body, person("plain")) is None  # default: every server tool
    assert check_server_tools(p, {"tools": CLIENT_TOOLS}, person("dev")) is None


def test_a_caller_in_no_group_is_refused():
    err = check_server_tools(policy(GROUPS), {"tools": [CODE]}, person("other"))
    assert err is not None and "(none)" in err.message and "code_execution (code_execution_20250825)" in err.message


def test_mcp_servers_refused_unless_a_group_allows_them():
    p = policy(GROUPS)
    body = {"mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "wiki"}]}
    err = check_server_tools(p, body, person("dev"))
    assert err is not None and err.status == 403 and err.type == "permission_error"
    assert err.message.startswith("Gatehouse policy does not allow mcp_servers (wiki)") and "(dev)" in err.message
    assert check_server_tools(p, body, person("dev", "research")) is None
    assert check_server_tools(p, {"mcp_servers": []}, person("dev")) is None
    odd = check_server_tools(p, {"mcp_servers": "x"}, person("dev"))
    assert odd is not None and "mcp_servers" in odd.message


def test_tools_are_checked_before_mcp_servers():
    body = {"tools": [CODE], "mcp_servers": [{"type": "url", "url": "https://m", "name": "m"}]}
    err = check_server_tools(policy(GROUPS), body, person("dev"))
    assert err is not None and "code_execution" in err.message


def test_without_groups_or_identity_everything_is_allowed():
    body = {"tools": [WEB_SEARCH, CODE], "mcp_servers": [{"type": "url", "url": "https://m", "name": "m"}]}
    assert check_server_tools(policy(), body, person("dev")) is None
    assert check_server_tools(policy(GROUPS), body, None) is None


def test_a_long_tool_name_is_cut_in_the_message():
    err = check_server_tools(policy(GROUPS), {"tools": [{"type": "x" * 5000, "name": "y" * 5000}]}, person("dev"))
    assert err is not None and len(err.message) < 400 and "xxx…" in err.message and "yyy…" in err.message
