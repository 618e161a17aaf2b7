"""Just-in-time access rules (gatehouse.access.rules): ``[[access.rules]]`` parsed strictly, and
the rule that covers a request outside the caller's groups."""

from __future__ import annotations

import tomllib

import pytest

from gatehouse.access.endpoints import Endpoint
from gatehouse.access.rules import AccessRule, jit_rule_for, jit_target, parse_access_rules
from gatehouse.exchange import Identity
from gatehouse.policy.reader import PolicyError, Section


def root(text: str) -> Section:
    return Section(tomllib.loads(text), "p.toml")


def person(*groups: str) -> Identity:
    return Identity(issuer="https://login.example.com", subject="u1", email="u1@example.com", groups=groups)


FULL = """
[[access.rules]]
id = "opus"
models = ["claude-opus-*"]
groups = ["developers"]
action = "approve"
approvers = ["leads", "sre"]
grant_seconds = 1800
approvals_required = 2

[[access.rules]]
id = "files"
endpoints = ["POST,GET /v1/files*", "/v1/models*"]
action = "approve"
"""


def test_rules_parsed_in_order_with_defaults():
    rules = parse_access_rules(root(FULL))
    assert rules == (
        AccessRule(
            id="opus",
            models=("claude-opus-*",),
            groups=("developers",),
            approvers=("leads", "sre"),
            grant_seconds=1800.0,
            approvals_required=2,
        ),
        AccessRule(
            id="files",
            endpoints=(Endpoint.parse("POST,GET /v1/files*"), Endpoint.parse("GET /v1/models*")),
        ),
    )
    assert rules[1].groups is None and rules[1].approvers is None and rules[1].grant_seconds is None
    assert rules[1].approvals_required is None and rules[1].action == "approve"


def test_no_access_table():
    assert parse_access_rules(root("")) == ()
    assert parse_access_rules(root("[access]\n")) == ()


BASE = 'id = "r"\nmodels = ["claude-opus-*"]\naction = "approve"\n'


@pytest.mark.parametrize(
    "text, key, message",
    [
        ("[access]\nrule = []\n", "access.rule", "unknown key"),
        ("[access]\nrules = 1\n", "access.rules", "expected an array of tables"),
        ("[[access.rules]]\n" + BASE.replace('id = "r"\n', ""), "access.rules[0].id", "is required"),
        ('[[access.rules]]\nid = "r"\naction = "approve"\n', "access.rules[0]", "needs `models` or `endpoints`"),
        (
            '[[access.rules]]\nid = "r"\nmodels = []\nendpoints = []\naction = "approve"\n',
            "access.rules[0]",
            "needs `models` or `endpoints`",
        ),
        ("[[access.rules]]\n" + BASE.replace('action = "approve"\n', ""), "access.rules[0].action", "is required"),
        ("[[access.rules]]\n" + BASE.replace('"approve"', '"allow"'), "access.rules[0].action", "one of 'approve'"),
        ("[[access.rules]]\n" + BASE + "grant_seconds = 0\n", "access.rules[0].grant_seconds", "more than 0"),
        ("[[access.rules]]\n" + BASE + "grant_seconds = -5\n", "access.rules[0].grant_seconds", "more than 0"),
        ("[[access.rules]]\n" + BASE + 'grant_seconds = "1h"\n', "access.rules[0].grant_seconds", "a number"),
        (
            "[[access.rules]]\n" + BASE + "approvals_required = 0\n",
            "access.rules[0].approvals_required",
            "at least 1",
        ),
        ("[[access.rules]]\n" + BASE + "groups = []\n", "access.rules[0].groups", "at least one group"),
        ("[[access.rules]]\n" + BASE + "approvers = []\n", "access.rules[0].approvers", "at least one group"),
        ("[[access.rules]]\n" + BASE + 'approvers = "leads"\n', "access.rules[0].approvers", "array of strings"),
        (
            '[[access.rules]]\nid = "r"\nmodels = [""]\naction = "approve"\n',
            "access.rules[0].models[0]",
            "must not be empty",
        ),
        (
            '[[access.rules]]\nid = "r"\nendpoints = ["FETCH /v1/x"]\naction = "approve"\n',
            "access.rules[0].endpoints[0]",
            "unknown HTTP method FETCH",
        ),
        ("[[access.rules]]\n" + BASE + 'mode = "hold"\n', "access.rules[0].mode", "unknown key"),
        (
            "[[access.rules]]\n" + BASE + "[[access.rules]]\n" + BASE,
            "access.rules[1].id",
            "duplicate rule id 'r' (also access.rules[0].id)",
        ),
    ],
)
def test_refusals_name_file_and_key(text, key, message):
    with pytest.raises(PolicyError) as e:
        parse_access_rules(root(text))
    assert str(e.value).startswith(f"p.toml: {key}: "), str(e.value)
    assert message in str(e.value)


def test_jit_rule_for_models_by_glob_and_groups():
    rules = parse_access_rules(root(FULL))
    assert jit_rule_for(rules, person("developers"), model="claude-opus-4-1").id == "opus"
    assert jit_rule_for(rules, person("sre", "developers"), model="claude-opus-4-1").id == "opus"
    assert jit_rule_for(rules, person("sre"), model="claude-opus-4-1") is None  # not in the rule's groups
    assert jit_rule_for(rules, person("developers"), model="claude-sonnet-4-5") is None
    assert jit_rule_for(rules, person("developers"), model="Claude-Opus-4") is None  # case-sensitive
    assert jit_rule_for(rules, None, model="claude-opus-4-1") is None


def test_jit_rule_for_endpoints_by_method_and_path():
    rules = parse_access_rules(root(FULL))
    anyone = person()
    assert jit_rule_for(rules, anyone, method="POST", path="/v1/files").id == "files"
    assert jit_rule_for(rules, anyone, method="get", path="/v1/files/file_1?beta=true").id == "files"
    assert jit_rule_for(rules, anyone, method="DELETE", path="/v1/files/file_1") is None
    assert jit_rule_for(rules, anyone, method="GET", path="/v1/models/claude-x").id == "files"
    assert jit_rule_for(rules, anyone, method="POST", path="/v1/models") is None
    assert jit_rule_for(rules, anyone, method="POST", path="/v1/batches") is None
    assert jit_rule_for(rules, anyone, path="/v1/files") is None  # a method is needed


def test_first_matching_rule_wins():
    text = (
        '[[access.rules]]\nid = "a"\nmodels = ["claude-opus-*"]\ngroups = ["x"]\naction = "approve"\n'
        '[[access.rules]]\nid = "b"\nmodels = ["claude-*"]\naction = "approve"\n'
        '[[access.rules]]\nid = "c"\nmodels = ["claude-opus-*"]\naction = "approve"\n'
    )
    rules = parse_access_rules(root(text))
    assert jit_rule_for(rules, person("x"), model="claude-opus-4").id == "a"
    assert jit_rule_for(rules, person("y"), model="claude-opus-4").id == "b"


def test_jit_target():
    assert jit_target(model="claude-opus-4-1") == "model claude-opus-4-1"
    assert jit_target(method="post", path="/v1/files?beta=true") == "POST /v1/files"
    with pytest.raises(ValueError):
        jit_target(method="POST")
