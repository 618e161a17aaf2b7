"""`gatehouse policy test`: judging one tool call against a policy file from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatehouse.cli.main import main
from gatehouse.commands.judge import call_sha256

POLICY = """
[[issuers]]
name = "dev"
issuer = "gatehouse-dev"
audience = "gatehouse"
algorithms = ["EdDSA"]
jwks_file = "dev.jwks.json"

[approvals]
approvers = ["leads"]

[commands]
packs = ["commands"]

[[commands.rules]]
id = "tf-plan-ok"
tool = "Bash"
field = "command"
pattern = '^terraform plan'
action = "allow"

[[commands.rules]]
id = "deploy"
tool = "Bash"
field = "command"
pattern = '^make deploy'
action = "approve"
message = "Deploys need a lead."
groups = ["developers"]
approvals_required = 2
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return p


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["policy", "test", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_pack_rule_blocks_a_hidden_piece(capsys, policy_file):
    code, out, _ = run(capsys, str(policy_file), "--tool", "Bash", "--input", '{"command": "ls; rm -rf /"}')
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("block  rule no-rm-rf-root (pack:commands): Recursively deleting /")
    assert "  matched: rm -rf /" in lines and "  call: Bash: ls; rm -rf /" in lines
    assert f"  call sha256: {call_sha256('Bash', {'command': 'ls; rm -rf /'})}" in lines


def test_an_approve_rule_for_the_callers_group_names_the_approvers(capsys, policy_file):
    args = [str(policy_file), "--tool", "Bash", "--input", json.dumps({"command": "make deploy"})]
    code, out, _ = run(capsys, *args, "--user", "alice", "--groups", "developers, ops")
    assert code == 0
    assert out.startswith("approve  rule deploy (policy): Deploys need a lead.\n")
    assert "  approvers: leads (2 approvals needed, mode hold)" in out
    assert "  caller: alice, groups: developers, ops" in out
    # Another group: the rule does not apply, the default does.
    code, out, _ = run(capsys, *args, "--groups", "ops")
    assert code == 0 and out.startswith("allow  no rule matched: the [commands] default is allow\n")


def test_an_allow_rule_and_a_path_rule(capsys, policy_file):
    code, out, _ = run(capsys, str(policy_file), "--tool", "Bash", "--input", '{"command": "terraform plan -out x"}')
    assert code == 0 and out.startswith("allow  rule tf-plan-ok (policy)\n")
    write = json.dumps({"file_path": "/repo/./.github/workflows/ci.yml", "content": "on: push"})
    code, out, _ = run(capsys, str(policy_file), "--tool", "Write", "--input", write)
    assert code == 0 and out.startswith("block  rule no-write-ci-workflows (pack:commands): ")


def test_a_policy_without_commands_allows_everything(capsys, tmp_path):
    p = tmp_path / "empty.toml"
    p.write_text("")
    code, out, _ = run(capsys, str(p), "--tool", "Bash", "--input", '{"command": "rm -rf /"}')
    assert code == 0 and out.startswith("allow  the policy has no [commands] section")


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '"ls"', "NaN"])
def test_bad_input_exits_2(capsys, policy_file, bad):
    code, out, err = run(capsys, str(policy_file), "--tool", "Bash", "--input", bad)
    assert code == 2 and out == "" and "--input" in err


def test_a_bad_policy_exits_1_naming_the_key(capsys, tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[commands]\n[[commands.rules]]\nid = "x"\ntool = "Bash"\npattern = "(x"\naction = "block"\n')
    code, out, err = run(capsys, str(p), "--tool", "Bash", "--input", "{}")
    assert code == 1 and out == ""
    assert f"{p}: commands.rules[0]" in err
