"""The ``[groups.NAME]`` tables and endpoint lists (gatehouse.access.config)."""

from __future__ import annotations

import tomllib

import pytest

from gatehouse.access.config import GroupPolicy, parse_endpoints, parse_groups
from gatehouse.access.endpoints import Endpoint
from gatehouse.policy.reader import PolicyError, Section


def root(text: str) -> Section:
    return Section(tomllib.loads(text), "p.toml")


def test_groups_in_policy_order_with_defaults():
    groups = parse_groups(
        root('[groups.sre]\nmodels = ["claude-opus-*"]\nendpoints = ["GET /v1/models*"]\n[groups.developers]\n')
    )
    assert list(groups) == ["sre", "developers"]
    assert groups["developers"] == GroupPolicy(name="developers", models=("*",), endpoints=None)
    assert groups["sre"].models == ("claude-opus-*",)
    assert groups["sre"].endpoints == (Endpoint.parse("GET /v1/models*"),)


def test_no_groups():
    assert parse_groups(root("")) == {}


def test_allows_model_by_glob():
    g = GroupPolicy(name="dev", models=("claude-sonnet-*", "claude-haiku-4"))
    assert g.allows_model("claude-sonnet-4-5") and g.allows_model("claude-haiku-4")
    assert not g.allows_model("claude-opus-4") and not g.allows_model("claude-haiku-4-5")
    assert GroupPolicy(name="all").allows_model("anything")


@pytest.mark.parametrize(
    "text, key, message",
    [
        ('[groups.dev]\nendpoints = ["POST v1/x"]\n', "groups.dev.endpoints[0]", "must start with '/'"),
        (
            '[groups.dev]\nendpoints = ["/v1/messages", "FETCH /v1/x"]\n',
            "groups.dev.endpoints[1]",
            "unknown HTTP method FETCH",
        ),
        ('[groups.dev]\nmodels = "claude-*"\n', "groups.dev.models", "expected an array of strings"),
        ('[groups.dev]\nmodel = ["claude-*"]\n', "groups.dev.model", "unknown key"),
        ("[groups]\ndev = 1\n", "groups.dev", "expected a table"),
    ],
)
def test_refusals_name_file_and_key(text, key, message):
    with pytest.raises(PolicyError) as e:
        parse_groups(root(text))
    assert str(e.value).startswith(f"p.toml: {key}: ")
    assert message in str(e.value)


def test_parse_endpoints_default_and_absent():
    sec = root("")
    assert parse_endpoints(sec, "allowed_endpoints", None) is None
    assert parse_endpoints(sec, "allowed_endpoints", ("/v1/messages",)) == (Endpoint.parse("POST /v1/messages"),)
