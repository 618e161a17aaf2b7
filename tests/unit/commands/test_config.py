"""`[commands]` and the built-in pack (gatehouse.commands.config): what is accepted, what is
refused (naming the file and key), and how policy rules replace pack rules."""

from __future__ import annotations

import tomllib

import pytest

from gatehouse.commands.config import CommandRule, CommandsPolicy, load_pack, pack_path, parse_commands
from gatehouse.policy.reader import PolicyError, Section

RULE = 'id = "r"\ntool = "Bash"\naction = "block"\nmessage = "no"\n'


def parse(text: str) -> CommandsPolicy | None:
    return parse_commands(Section(tomllib.loads(text), "p.toml").section("commands"))


def refused(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        parse(text)
    return e.value


def test_absent_section_is_none_and_an_empty_one_allows():
    assert parse("") is None
    assert parse("[commands]\n") == CommandsPolicy(default="allow", packs=(), rules=())


def test_a_full_rule():
    policy = parse(
        '[commands]\ndefault = "block"\n[[commands.rules]]\nid = "tf"\ntool = "Bash"\nfield = "command"\n'
        'pattern = "terraform apply"\naction = "approve"\nmessage = "needs review"\ngroups = ["dev"]\n'
        'approvers = ["platform"]\nmode = "retry"\napprovals_required = 2\n'
    )
    [rule] = policy.rules
    assert policy.default == "block"
    assert (rule.id, rule.tool, rule.field, rule.pattern, rule.path, rule.action) == (
        "tf",
        "Bash",
        "command",
        "terraform apply",
        None,
        "approve",
    )
    assert (rule.groups, rule.approvers, rule.mode, rule.approvals_required, rule.source) == (
        ("dev",),
        ("platform",),
        "retry",
        2,
        "policy",
    )


def test_an_allow_rule_needs_no_message_and_a_rule_may_have_neither_pattern_nor_path():
    [rule] = parse('[commands]\n[[commands.rules]]\nid = "a"\ntool = "mcp__*"\naction = "allow"\n').rules
    assert rule.message == "" and rule.pattern is None and rule.path is None and rule.field is None


@pytest.mark.parametrize(
    "extra, key, message",
    [
        ('pattern = "(unclosed"\n', "commands.rules[0].pattern", "invalid RE2 pattern: missing ): (unclosed"),
        ('pattern = "(?=x)"\n', "commands.rules[0].pattern", "invalid RE2 pattern"),
        ('field = "file_path"\npath = "[abc"\n', "commands.rules[0].path", "unbalanced '['"),
        ('path = "*.yml"\n', "commands.rules[0].path", "needs `field`"),
        ('field = "f"\npath = "x"\npattern = "x"\n', "commands.rules[0].path", "not both"),
        ('field = "/a~2"\n', "commands.rules[0].field", "RFC 6901"),
        ("wat = 1\n", "commands.rules[0].wat", "unknown key"),
        ('examples.match = [{command = "x"}]\n', "commands.rules[0].examples", "unknown key"),
        ("groups = []\n", "commands.rules[0].groups", "at least one group"),
        ('approvers = ["x"]\n', "commands.rules[0].approvers", 'only a rule with action = "approve"'),
        ('mode = "retry"\n', "commands.rules[0].mode", 'only a rule with action = "approve"'),
    ],
)
def test_bad_rule_keys_are_refused_naming_the_key(extra, key, message):
    e = refused("[commands]\n[[commands.rules]]\n" + RULE + extra)
    assert e.file == "p.toml" and e.key == key and message in e.message


@pytest.mark.parametrize(
    "rule, key, message",
    [
        ('tool = "Bash"\naction = "block"\nmessage = "m"\n', "commands.rules[0].id", "is required"),
        ('id = "Bad Id"\ntool = "Bash"\naction = "block"\nmessage = "m"\n', "commands.rules[0].id", "lower-case"),
        ('id = "r"\naction = "block"\nmessage = "m"\n', "commands.rules[0].tool", "is required"),
        ('id = "r"\ntool = "[Bash"\naction = "block"\nmessage = "m"\n', "commands.rules[0].tool", "unbalanced"),
        ('id = "r"\ntool = "Bash"\nmessage = "m"\n', "commands.rules[0].action", "is required"),
        ('id = "r"\ntool = "Bash"\naction = "deny"\nmessage = "m"\n', "commands.rules[0].action", "must be one of"),
        ('id = "r"\ntool = "Bash"\naction = "block"\n', "commands.rules[0].message", "is required"),
        ('id = "r"\ntool = "Bash"\naction = "approve"\n', "commands.rules[0].message", "is required"),
        (
            'id = "r"\ntool = "Bash"\naction = "approve"\nmessage = "m"\napprovals_required = 0\n',
            "commands.rules[0].approvals_required",
            "at least 1",
        ),
        (
            'id = "r"\ntool = "Bash"\naction = "approve"\nmessage = "m"\nmode = "wait"\n',
            "commands.rules[0].mode",
            "must be one of",
        ),
    ],
)
def test_required_and_typed_keys(rule, key, message):
    e = refused("[commands]\n[[commands.rules]]\n" + rule)
    assert e.key == key and message in e.message


def test_section_keys_are_checked():
    assert refused('[commands]\ndefault = "deny"\n').key == "commands.default"
    assert refused("[commands]\nrule = []\n").key == "commands.rule"
    e = refused('[commands]\npacks = ["secrets"]\n')
    assert e.key == "commands.packs[0]" and "unknown command rule pack 'secrets'" in e.message
    assert "listed twice" in refused('[commands]\npacks = ["commands", "commands"]\n').message


def test_duplicate_ids_are_refused():
    e = refused("[commands]\n[[commands.rules]]\n" + RULE + "[[commands.rules]]\n" + RULE)
    assert e.key == "commands.rules[1].id" and "duplicate rule id 'r'" in e.message


def test_the_pack_is_off_unless_named_and_comes_after_the_policy_rules():
    assert parse("[commands]\n[[commands.rules]]\n" + RULE).rules[0].source == "policy"
    policy = parse('[commands]\npacks = ["commands"]\n[[commands.rules]]\n' + RULE)
    assert policy.packs == ("commands",)
    assert policy.rules[0].id == "r" and len(policy.rules) == 1 + len(load_pack("commands"))
    assert {r.source for r in policy.rules[1:]} == {"pack:commands"}
    # The pack works alone: every rule blocks, so it needs no approvers.
    assert {r.action for r in load_pack("commands")} == {"block"}


def test_a_policy_rule_with_a_pack_rules_id_replaces_it_in_place():
    policy = parse(
        '[commands]\npacks = ["commands"]\n[[commands.rules]]\n' + RULE + "[[commands.rules]]\n"
        'id = "no-terraform-apply"\ntool = "Bash"\nfield = "command"\npattern = "terraform apply"\n'
        'action = "approve"\nmessage = "ask platform"\napprovers = ["platform"]\n'
    )
    ids = [r.id for r in policy.rules]
    assert ids.count("no-terraform-apply") == 1 and ids[:2] == ["r", "no-terraform-apply"]
    replaced = policy.rules[1]
    assert replaced.action == "approve" and replaced.source == "policy"
    assert len(policy.rules) == 1 + len(load_pack("commands"))


def test_a_bad_pack_names_the_pack_file_and_key(tmp_path, monkeypatch):
    bad = tmp_path / "commands.toml"
    bad.write_text('[[rules]]\nid = "x"\ntool = "Bash"\npattern = "(x"\naction = "block"\nmessage = "m"\n')
    monkeypatch.setattr("gatehouse.commands.config.pack_path", lambda name: bad)
    with pytest.raises(PolicyError) as e:
        parse('[commands]\npacks = ["commands"]\n')
    assert e.value.file == str(bad) and e.value.key == "rules[0].pattern"


def test_the_pack_file_is_found_in_the_package():
    assert pack_path("commands").name == "commands.toml" and pack_path("commands").is_file()


def test_a_rule_built_directly_compiles_its_globs_and_pattern():
    rule = CommandRule(id="x", tool="mcp__*", field=None, pattern="a+", path=None, action="block", message="m")
    assert rule.matches_tool("mcp__s__t") and not rule.matches_tool("Bash")
    assert rule.pattern_re.search("caab")
    with pytest.raises(ValueError):
        CommandRule(id="x", tool="[", field=None, pattern=None, path=None, action="block", message="m")
