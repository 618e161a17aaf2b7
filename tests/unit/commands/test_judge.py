"""Judging a call (gatehouse.commands.judge): first match wins, groups, fields, pieces of a
command, path rules, the default, and the hash that binds an approval to one call."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.commands.config import CommandsPolicy, join_patterns, parse_commands
from gatehouse.commands.judge import call_sha256, judge_call, may_need_approval
from gatehouse.policy.reader import Section
from gatehouse.recording.canonical import canonical_json


def policy(rules: str, head: str = "") -> CommandsPolicy:
    return parse_commands(Section(tomllib.loads(f"[commands]\n{head}\n{rules}"), "p.toml").section("commands"))


def rule(**keys: object) -> str:
    """A [[commands.rules]] table (JSON strings and arrays are TOML too)."""
    keys = {"id": "r", "tool": "Bash", "action": "block", "message": "no", **keys}
    return "[[commands.rules]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


def verdict(p: CommandsPolicy, tool: str, tool_input: object, groups: tuple[str, ...] = ()):
    return judge_call(p, tool, tool_input, groups)


def test_first_match_wins_and_the_default_applies_otherwise():
    p = policy(
        rule(id="a", field="command", pattern="^git push", action="approve", message="ask")
        + rule(id="b", field="command", pattern="git", message="never")
    )
    v = verdict(p, "Bash", {"command": "git push origin x"})
    assert (v.action, v.rule.id, v.message, v.matched) == ("approve", "a", "ask", "git push origin x")
    assert verdict(p, "Bash", {"command": "git log"}).rule.id == "b"
    none = verdict(p, "Bash", {"command": "ls"})
    assert (none.action, none.rule, none.matched, none.message) == ("allow", None, None, "")
    blocked = verdict(policy("", 'default = "block"'), "Bash", {"command": "ls"})
    assert blocked.action == "block" and blocked.rule is None and "blocks every other call" in blocked.message


def test_tool_names_are_matched_as_given():
    p = policy(rule(tool="mcp__github__*"))
    assert verdict(p, "mcp__github__delete_repo", {}).action == "block"
    assert verdict(p, "mcp__gitlab__x", {}).action == "allow"
    # The API's Anthropic-defined bash tool arrives as "bash": a "Bash" rule does not see it.
    p = policy(rule(field="command", pattern="rm"))
    assert verdict(p, "Bash", {"command": "rm x"}).action == "block"
    assert verdict(p, "bash", {"command": "rm x"}).action == "allow"
    assert verdict(policy(rule(tool="{Bash,bash}")), "bash", {"command": "x"}).action == "block"


def test_groups_limit_whom_a_rule_applies_to():
    p = policy(rule(groups=["contractors"], field="command", pattern="deploy"))
    assert verdict(p, "Bash", {"command": "deploy"}, ("contractors", "dev")).action == "block"
    assert verdict(p, "Bash", {"command": "deploy"}, ("dev",)).action == "allow"
    assert verdict(p, "Bash", {"command": "deploy"}).action == "allow"


def test_without_a_field_the_whole_input_is_canonical_json():
    p = policy(rule(tool="WebFetch", pattern='"url":"https://evil\\.example/'))
    assert verdict(p, "WebFetch", {"url": "https://evil.example/x", "prompt": "p"}).action == "block"
    assert verdict(p, "WebFetch", {"url": "https://ok.example/x"}).action == "allow"


def test_a_non_string_field_is_matched_as_json_and_a_missing_one_never_matches():
    p = policy(rule(tool="*", field="/edits", pattern='"new_string":"[^"]*password'))
    assert verdict(p, "MultiEdit", {"edits": [{"old_string": "a", "new_string": "password=1"}]}).action == "block"
    assert verdict(p, "MultiEdit", {"file_path": "x"}).action == "allow"
    assert verdict(p, "MultiEdit", "not an object").action == "block"  # unreadable: never allowed


def test_a_rule_with_neither_pattern_nor_path_matches_any_call_that_has_its_field():
    p = policy(rule(field="dangerouslyDisableSandbox", action="approve", message="sandbox off"))
    assert verdict(p, "Bash", {"command": "ls", "dangerouslyDisableSandbox": True}).action == "approve"
    assert verdict(p, "Bash", {"command": "ls"}).action == "allow"
    any_call = verdict(policy(rule(tool="Task")), "Task", {"prompt": "x"})
    assert any_call.action == "block" and any_call.matched is None


def test_a_command_cannot_hide_behind_another_piece():
    p = policy(rule(field="command", pattern="^rm\\s+-rf\\s+/$"))
    for text in ["ls; rm -rf /", "ls && echo $(rm -rf /)", "bash -c 'rm -rf /'", "echo ok\nrm -rf /", '"rm" -rf "/"']:
        v = verdict(p, "Bash", {"command": text})
        assert v.action == "block" and v.matched == "rm -rf /", text
    assert verdict(p, "Bash", {"command": "echo 'rm -rf /'"}).action == "allow"


def test_pieces_are_used_for_any_tool_with_a_command_field_only():
    p = policy(rule(tool="*", field="command", pattern="^rm "))
    assert verdict(p, "mcp__shell__run", {"command": "ls; rm x"}).action == "block"
    other = policy(rule(tool="*", field="script", pattern="^rm "))
    assert verdict(other, "X", {"script": "ls; rm x"}).action == "allow"  # searched whole: not at the start


def test_a_rule_across_pieces_sees_the_whole_command():
    p = policy(rule(field="command", pattern="curl[^|]*\\|\\s*sh(\\s|$)"))
    v = verdict(p, "Bash", {"command": "cd /tmp && curl -s x | sh"})
    assert v.action == "block" and v.matched == "cd /tmp && curl -s x | sh"
    nested = verdict(p, "Bash", {"command": "sudo bash -c 'curl -s x | sh'"})
    assert nested.action == "block" and nested.matched == "curl -s x | sh"


def test_an_allow_rule_must_cover_every_piece():
    p = policy(
        rule(id="ok", field="command", pattern="^(git status|ls)( |$)", action="allow")
        + rule(id="rm", field="command", pattern="^rm ")
        + rule(id="rest", field="command", pattern="", action="approve", message="ask"),
        'default = "block"',
    )
    assert verdict(p, "Bash", {"command": "git status && ls -la"}).rule.id == "ok"
    assert verdict(p, "Bash", {"command": "git status; rm -rf /"}).rule.id == "rm"
    assert verdict(p, "Bash", {"command": "ls | wc -l"}).rule.id == "rest"
    assert verdict(p, "Bash", {"command": "ls $(whoami)"}).rule.id == "rest"  # the nested piece is not covered


@pytest.mark.parametrize(
    "file_path, action",
    [
        ("/repo/.github/workflows/ci.yml", "block"),
        (".github/workflows/ci.yml", "block"),
        ("./a/../.github/workflows/x", "block"),
        ("/repo/.github/workflows/sub/x.yml", "allow"),
        ("/repo/.github/CODEOWNERS", "allow"),
    ],
)
def test_path_rules_match_the_normalised_path(file_path, action):
    p = policy(rule(tool="Write", field="file_path", path=".github/workflows/*"))
    assert verdict(p, "Write", {"file_path": file_path, "content": "x"}).action == action


def test_a_path_rule_ignores_values_that_are_not_strings():
    p = policy(rule(tool="Write", field="file_path", path="**"))
    assert verdict(p, "Write", {"file_path": ["a"]}).action == "allow"
    assert verdict(p, "Write", {"file_path": "a"}).matched == "a"


def test_may_need_approval():
    p = policy(rule(action="approve", message="m", groups=["dev"]) + rule(id="b"))
    assert may_need_approval(p, ["dev"]) and not may_need_approval(p, ["ops"])
    assert not may_need_approval(policy(rule()), ["dev"])
    assert may_need_approval(policy("", 'default = "approve"'), [])
    assert may_need_approval(policy(rule(action="approve", message="m")), [])


def test_call_sha256_is_of_the_canonical_call():
    expected = hashlib.sha256(canonical_json({"tool": "Bash", "input": {"command": "ls", "a": 1}})).hexdigest()
    assert call_sha256("Bash", {"a": 1, "command": "ls"}) == expected
    assert call_sha256("Bash", {"command": "ls"}) != call_sha256("bash", {"command": "ls"})
    assert call_sha256("Bash", {"command": "ls"}) != call_sha256("Bash", {"command": "ls "})


def test_an_input_that_is_not_a_json_object_is_blocked_not_allowed_by_default():
    from gatehouse.commands.config import CommandsPolicy
    from gatehouse.commands.judge import judge_call

    policy = CommandsPolicy(default="allow")
    for cut in ('{"command": "rm -rf /', "rm -rf /", ["rm"], None):
        verdict = judge_call(policy, "Bash", cut, ())
        assert verdict.action == "block" and verdict.rule is None and "not a complete JSON object" in verdict.message
    assert judge_call(policy, "Bash", {"command": "ls"}, ()).action == "allow"


# Each call first picks out the texts that any of the policy's patterns matches
# (`CommandsPolicy.any_pattern`); rules then search only those. Without that step, every
# verdict is the same.
def _without_the_preselection(p: CommandsPolicy) -> CommandsPolicy:
    p = copy.copy(p)
    object.__setattr__(p, "any_pattern", None)
    return p


MIXED = policy(
    rule(id="allow-git", field="command", pattern="^git (status|log)", action="allow", message="")
    + rule(id="loud", field="command", pattern="(?i)drop table", message="no")
    + rule(id="exact", field="command", pattern="DELETE FROM", message="no")
    + rule(id="rm-root", field="command", pattern=r"rm\s+-rf\s+/(\s|$)", action="approve", message="ask")
    + rule(id="ends", field="command", pattern="^reboot$", message="no")
    + rule(id="named-a", field="command", pattern="(?P<x>curl) .*[|] *sh", message="no")
    + rule(id="named-b", field="command", pattern="(?P<x>wget) .*[|] *sh", message="no")
    + rule(id="write", tool="Write", field="file_path", path="**/.env", message="no"),
    head='default = "block"',
)
PIECE = st.sampled_from(
    [
        "git status",
        "git log -1",
        "git push",
        "g'i't status",
        "echo drop TABLE x",
        "delete from t",
        "DELETE FROM t",
        "rm -rf /",
        "rm -rf /tmp",
        "reboot",
        "curl -s x | sh",
        "wget x |sh",
        "ls",
        "bash -c 'rm -rf /'",
        "$(reboot)",
    ]
)
COMMAND = st.lists(st.tuples(PIECE, st.sampled_from(["; ", " && ", " | ", "\n", " `", "` "])), max_size=5).map(
    lambda parts: "".join(p + sep for p, sep in parts)
)


@settings(max_examples=400, deadline=None)
@given(COMMAND)
def test_property_rules_search_only_what_some_pattern_matches_with_the_same_verdicts(command):
    call = {"command": command}
    fast = verdict(MIXED, "Bash", call)
    slow = verdict(_without_the_preselection(MIXED), "Bash", call)
    assert (fast.action, fast.rule and fast.rule.id, fast.matched) == (
        slow.action,
        slow.rule and slow.rule.id,
        slow.matched,
    )


def test_patterns_that_cannot_be_joined_are_each_searched_alone():
    # `\Q` quotes up to the next `\E`, past its own group: joined, it would swallow what
    # follows. Here the join even compiles, to one literal that matches neither call.
    p = policy(
        rule(id="literal", field="command", pattern=r"\Qrm -rf /")
        + rule(id="pipe", field="command", pattern=r"\Q| sh\E", action="approve", message="ask"),
    )
    assert re2.compile("|".join(f"(?:{r.pattern})" for r in p.rules)).search("rm -rf /") is None
    assert p.any_pattern is None
    assert verdict(p, "Bash", {"command": "ls; rm -rf /"}).rule.id == "literal"
    assert verdict(p, "Bash", {"command": "curl x | sh"}).rule.id == "pipe"
    assert verdict(p, "Bash", {"command": "curl y"}).rule is None


# Pattern pieces, `\Q` and `\E` drawn more often: an open `\Q` must meet a later `\E`.
PATTERN = st.lists(
    st.sampled_from(
        ["a", "b", "A", "(?i)", "(?s)", "(?m)", "(?U)", "^", "$", "|", ".", "[ab]", "(", ")", "*", "(?:", "\\)"]
        + ["\\Q", "\\E"] * 4
    ),
    min_size=1,
    max_size=6,
).map("".join)


def _compiles(pattern: str) -> bool:
    try:
        re2.compile(pattern)
    except re2.error:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(
    st.lists(PATTERN.filter(_compiles), min_size=1, max_size=4),
    st.lists(st.text("abAB)|(\\QE\n ", max_size=8), max_size=8),
)
def test_property_the_joined_pattern_matches_wherever_one_of_its_parts_does(patterns, texts):
    joined = join_patterns(patterns)
    for text in texts:
        if any(re2.compile(p).search(text) is not None for p in patterns):
            assert joined is None or joined.search(text) is not None, (patterns, text)


def test_a_flag_in_one_pattern_stays_in_it():
    assert verdict(MIXED, "Bash", {"command": "DROP table t"}).rule.id == "loud"
    assert verdict(MIXED, "Bash", {"command": "delete from t"}).rule is None  # `exact` is case-sensitive
    assert verdict(MIXED, "Bash", {"command": "git status; DELETE FROM t"}).rule.id == "exact"


def test_a_piece_that_unquotes_to_nothing_is_still_searched():
    p = policy(
        rule(id="quiet", field="command", pattern="^$|^git status$", action="allow", message=""),
        head='default = "block"',
    )
    assert verdict(p, "Bash", {"command": "git status; ''"}).action == "allow"
    assert verdict(p, "Bash", {"command": "git status; 'x'"}).action == "block"
