"""The ``[commands]`` section of a policy and the built-in rule pack, parsed and validated into
a `CommandsPolicy`: which tool calls are allowed, blocked or held for an approver.

    [commands]
    default = "allow"          # allow | block | approve: when no rule matches
    packs = ["commands"]       # the built-in pack, policies/rules/commands.toml (off by default)

    [[commands.rules]]
    id = "terraform-apply"
    tool = "Bash"              # exact name or glob: "Bash", "mcp__*", "{Write,Edit}"
    field = "command"          # a key or JSON pointer ("/edits/0/file_path"); absent: the whole input
    pattern = '(^|\\s)terraform\\s+apply'   # RE2, searched; or `path` (a glob), or neither
    action = "approve"
    message = "Applying Terraform needs a second pair of eyes."
    approvers = ["platform"]   # optional: groups (default [approvals] approvers)
    groups = ["developers"]    # optional: the callers it applies to (default everyone)

Rules are checked in order, first match wins: the policy's own rules first, then the packs'.
A policy rule with the id of a pack rule replaces it (as in ``[masking]``): that is how a
built-in is tuned, e.g. made ``approve`` instead of ``block``, or switched off with
``action = "allow"``. How a rule matches is `gatehouse.commands.judge`; what it looks at is
`gatehouse.commands.fields`. Pure (no mitmproxy).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2

from gatehouse.commands.fields import (
    GlobError,
    compile_glob,
    expand_braces,
    pointer_problem,
    re2_message,
    re2_options,
)
from gatehouse.policy.reader import PolicyError, Section, read_toml

ACTIONS = ("allow", "block", "approve")
MODES = ("hold", "retry")
KNOWN_PACKS = ("commands",)

_RULE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class CommandRule:
    """One rule: which calls it matches (tool, field, pattern or path, groups) and what happens."""

    id: str
    tool: str  # exact name or glob, case-sensitive: "Bash", "mcp__*"
    field: str | None  # "command", or a JSON pointer "/edits/0/file_path"; None: whole input
    pattern: str | None  # RE2 source, searched
    path: str | None  # glob for file paths, matched against the normalised path
    action: str  # allow | block | approve
    message: str
    groups: tuple[str, ...] | None = None  # callers it applies to; None: everyone
    approvers: tuple[str, ...] | None = None  # None: [approvals] approvers
    mode: str | None = None  # None: [approvals] mode
    approvals_required: int | None = None  # None: [approvals] approvals_required
    source: str = ""  # "policy" or "pack:commands"
    # Compiled forms, made from the fields above (ValueError / re2.error when they do not compile).
    tool_re: Any = dataclasses.field(default=None, init=False, compare=False, repr=False)
    pattern_re: Any = dataclasses.field(default=None, init=False, compare=False, repr=False)
    path_re: Any = dataclasses.field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_re", compile_glob(self.tool, path=False))
        if self.pattern is not None:
            object.__setattr__(self, "pattern_re", re2.compile(self.pattern, re2_options()))
        if self.path is not None:
            object.__setattr__(self, "path_re", compile_glob(self.path, path=True))

    def applies_to(self, groups: frozenset[str] | set[str]) -> bool:
        """Whether the rule is for a caller in `groups` (every caller when it names none)."""
        return self.groups is None or not groups.isdisjoint(self.groups)

    def matches_tool(self, tool: str) -> bool:
        return self.tool_re.search(tool) is not None


@dataclass(frozen=True)
class CommandsPolicy:
    default: str = "allow"  # allow | block | approve
    packs: tuple[str, ...] = ()
    rules: tuple[CommandRule, ...] = ()  # the policy's own rules first, then each pack's, in order
    # One RE2 pattern matching wherever any rule's pattern does (`join_patterns`), or None: the
    # judge searches it first, so that each rule searches only the texts it can match.
    any_pattern: Any = dataclasses.field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        patterns = [r.pattern for r in self.rules if r.pattern is not None]
        object.__setattr__(self, "any_pattern", join_patterns(patterns))


def join_patterns(patterns: Iterable[str]) -> Any:
    """The alternation of `patterns`, each in a group of its own: searched, it matches a text
    exactly when one of them does (RE2 scopes a flag such as ``(?i)`` to its group). None when
    they do not make one: no patterns; one with ``\\Q``, which quotes up to the next ``\\E``
    even past the group's end and into the next pattern, so that the join could match less
    than its parts (a miss is a call let through); or too big to compile."""
    patterns = list(patterns)
    if not patterns or any("\\Q" in p for p in patterns):
        return None
    try:
        return re2.compile("|".join(f"(?:{p})" for p in patterns), re2_options())
    except re2.error:
        return None


def _names(sec: Section, key: str) -> tuple[str, ...] | None:
    """A list of group names; absent: None. An empty list would match nobody: refused."""
    value = sec.str_list(key, None)
    if value is not None and not value:
        raise sec.error(key, "must name at least one group (leave it out for the default)")
    return value


def parse_rule(sec: Section, source: str) -> CommandRule:
    """One rule table, from a pack (``[[rules]]``) or a policy (``[[commands.rules]]``)."""
    rule_id = sec.str("id")
    if not set(rule_id) <= _RULE_ID_CHARS or not rule_id[0].isalnum():
        raise sec.error("id", f"must be lower-case letters, digits, '-', '_' or '.'; got {rule_id!r}")
    tool = sec.str("tool")
    try:
        compile_glob(tool, path=False)
    except GlobError as e:
        raise sec.error("tool", f"rule {rule_id!r}: {e}") from None
    field = sec.str("field", None)
    if field is not None and (problem := pointer_problem(field)):
        raise sec.error("field", f"rule {rule_id!r}: {problem}")
    pattern = sec.str("pattern", None, nonempty=False)
    path = sec.str("path", None)
    if pattern is not None and path is not None:
        raise sec.error("path", f"rule {rule_id!r}: give `pattern` (RE2) or `path` (a glob), not both")
    if pattern is not None:
        try:
            re2.compile(pattern, re2_options())
        except re2.error as e:
            raise sec.error("pattern", f"rule {rule_id!r}: invalid RE2 pattern: {re2_message(e)}") from None
    if path is not None:
        if field is None:
            raise sec.error(
                "path", f"rule {rule_id!r}: a `path` rule needs `field`, the key that holds the path (e.g. 'file_path')"
            )
        try:
            compile_glob(path, path=True)
        except GlobError as e:
            raise sec.error("path", f"rule {rule_id!r}: {e}") from None
    action = sec.str("action", choices=ACTIONS)
    if action == "allow":
        message = sec.str("message", "", nonempty=False)
    else:
        message = sec.str("message")  # what the agent and the user are told
    groups = _names(sec, "groups")
    approvers = _names(sec, "approvers")
    mode = sec.str("mode", None, choices=MODES)
    approvals_required = sec.int("approvals_required", None, min=1)
    if action != "approve":
        for key in ("approvers", "mode", "approvals_required"):
            if sec.has(key):
                raise sec.error(key, f'rule {rule_id!r}: only a rule with action = "approve" asks approvers')
    return CommandRule(
        id=rule_id,
        tool=tool,
        field=field,
        pattern=pattern,
        path=path,
        action=action,
        message=message,
        groups=groups,
        approvers=approvers,
        mode=mode,
        approvals_required=approvals_required,
        source=source,
    )


def _parse_rule_list(sections: list[Section], source: str, *, examples: bool = False) -> list[CommandRule]:
    rules: list[CommandRule] = []
    seen: dict[str, str] = {}
    for rsec in sections:
        rule = parse_rule(rsec, source)
        if examples:
            _examples(rsec, rule)
        rsec.done()
        if rule.id in seen:
            raise rsec.error("id", f"duplicate rule id {rule.id!r} (first defined at {seen[rule.id]})")
        seen[rule.id] = rsec.path
        rules.append(rule)
    return rules


# -- packs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackExample:
    """One true or false positive written beside a pack rule (``examples.match`` /
    ``examples.no_match``): a tool input and whether the rule must match it."""

    rule_id: str
    tools: tuple[str, ...]  # the rule's tool names (its glob's alternatives)
    input: dict[str, Any]
    should_match: bool
    where: str  # e.g. "rules[3].examples.match[1]", for a failing test's message


def _examples(sec: Section, rule: CommandRule) -> list[PackExample]:
    """A pack rule's examples, checked for shape (the tests run them; the gateway ignores them)."""
    ex = sec.section("examples")
    if ex is None:
        return []
    out: list[PackExample] = []
    try:
        tools = tuple(expand_braces(rule.tool))
    except GlobError as e:
        raise sec.error("tool", f"a pack rule with examples needs a tool name or {{a,b}} names: {e}") from None
    for key, should in (("match", True), ("no_match", False)):
        for i, value in enumerate(ex.raw(key, [])):
            where = f"{ex.key_path(key)}[{i}]"
            if not isinstance(value, dict):
                raise PolicyError(sec.file, where, 'an example is a tool input: an inline table, e.g. {command = "ls"}')
            out.append(PackExample(rule.id, tools, value, should, where))
    ex.done()
    return out


def pack_path(name: str) -> Path:
    """Where built-in pack `name` lives (``policies/rules/<name>.toml`` in the package)."""
    return Path(str(importlib.resources.files("gatehouse.policies") / "rules" / f"{name}.toml"))


def _pack_root(name: str) -> tuple[Section, Path]:
    path = pack_path(name)
    data, _ = read_toml(path, f"command rule pack {name!r}")
    root = Section(data, path, "", path.resolve().parent)
    root.str("description", "", nonempty=False)
    return root, path


def load_pack(name: str) -> tuple[CommandRule, ...]:
    """Read and validate a built-in pack: a TOML file with `description` and ``[[rules]]``."""
    root, _ = _pack_root(name)
    rules = _parse_rule_list(root.sections("rules"), f"pack:{name}", examples=True)
    root.done()
    return tuple(rules)


def load_pack_examples(name: str) -> list[PackExample]:
    """Every example written beside the rules of pack `name`, in order (for the tests)."""
    root, _ = _pack_root(name)
    out: list[PackExample] = []
    for rsec in root.sections("rules"):
        out.extend(_examples(rsec, parse_rule(rsec, f"pack:{name}")))
    return out


def parse_commands(sec: Section | None) -> CommandsPolicy | None:
    """The ``[commands]`` section; None when the policy has none (every call is allowed)."""
    if sec is None:
        return None
    default = sec.str("default", "allow", choices=ACTIONS)
    packs = sec.str_list("packs", ())
    for i, name in enumerate(packs):
        where = f"{sec.key_path('packs')}[{i}]"
        if name not in KNOWN_PACKS:
            known = ", ".join(repr(p) for p in KNOWN_PACKS)
            raise PolicyError(sec.file, where, f"unknown command rule pack {name!r} (built-in: {known})")
        if name in packs[:i]:
            raise PolicyError(sec.file, where, f"pack {name!r} is listed twice")
    own = _parse_rule_list(sec.sections("rules"), "policy")
    sec.done()
    # A policy rule with the id of a pack rule replaces it: it keeps its place among the
    # policy's rules, and the pack's rule is left out.
    taken = {r.id for r in own}
    rules = list(own)
    for name in packs:
        for rule in load_pack(name):
            if rule.id not in taken:
                taken.add(rule.id)
                rules.append(rule)
    return CommandsPolicy(default=default, packs=packs, rules=tuple(rules))
