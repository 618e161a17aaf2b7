"""The built-in pack (policies/rules/commands.toml): every true and false positive written
beside its rule, judged with the pack enabled, for every tool the rule names."""

from __future__ import annotations

import pytest

from gatehouse.commands.config import CommandsPolicy, load_pack, load_pack_examples
from gatehouse.commands.judge import judge_call

PACK = load_pack("commands")
EXAMPLES = load_pack_examples("commands")
POLICY = CommandsPolicy(packs=("commands",), rules=PACK)
BY_ID = {r.id: r for r in PACK}


def _cases():
    for ex in EXAMPLES:
        for tool in ex.tools:
            yield pytest.param(ex, tool, id=f"{ex.where}-{tool}")


@pytest.mark.parametrize("ex, tool", list(_cases()))
def test_example(ex, tool):
    with_pack = judge_call(POLICY, tool, ex.input, [])
    alone = judge_call(CommandsPolicy(rules=(BY_ID[ex.rule_id],)), tool, ex.input, [])
    if ex.should_match:
        assert with_pack.action == "block" and with_pack.rule.id == ex.rule_id, (ex.input, with_pack)
        assert with_pack.message == BY_ID[ex.rule_id].message
    else:
        assert alone.action == "allow", (ex.input, alone.matched)
        assert with_pack.rule is None or with_pack.rule.id != ex.rule_id


def test_every_rule_has_two_true_and_two_false_positives():
    for rule in PACK:
        mine = [e for e in EXAMPLES if e.rule_id == rule.id]
        assert sum(e.should_match for e in mine) >= 2, rule.id
        assert sum(not e.should_match for e in mine) >= 2, rule.id


def test_the_pack_covers_the_issue_list():
    assert {
        "no-rm-rf-root",
        "no-curl-pipe-shell",
        "no-force-push-main",
        "no-terraform-apply",
        "no-kubectl-prod",
        "no-write-ci-workflows",
        "no-bash-write-ci-workflows",
        "no-write-ssh",
        "no-bash-write-ssh",
        "no-chmod-777",
        "no-read-cloud-credentials",
        "no-read-cloud-credentials-file",
    } <= set(BY_ID)


@pytest.mark.parametrize(
    "command",
    ["ls -la", "npm test", "git status", "pytest -q tests/", "git push origin feature/x", "make build 2>&1 | tail"],
)
def test_everyday_commands_pass(command):
    assert judge_call(POLICY, "Bash", {"command": command}, []).action == "allow"
