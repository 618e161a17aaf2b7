"""Judging one tool call against the ``[commands]`` rules: allow, block or approve, which rule,
and what matched. Also the call hash that binds an approval to exactly one call.

Rules are checked in order and the first that matches decides; when none does, the policy's
``default`` applies. A rule matches a call when it applies to the caller (its ``groups``, if
any, meet the caller's), its ``tool`` glob matches the tool's name as the model gave it
(Claude Code's ``Bash``, the API's Anthropic-defined ``bash``, ``mcp__server__tool``), and:

- with neither ``pattern`` nor ``path``: the input has the rule's ``field`` (or the rule has
  none): any call of the tool;
- ``pattern`` (RE2, searched) in the field's text (`fields.as_text`; a missing field never
  matches). For a ``command`` field the command is also checked piece by piece
  (`shell.split_command`): each simple command, as written and with its quotes removed, and
  every nested script and line (`shell.command_texts`), so ``ls; rm -rf /`` cannot hide
  behind ``ls``;
- ``path`` (a glob) against the field's value as a normalised path (`fields`).

A ``block`` or ``approve`` rule matches a command when *any* of those texts matches. An
``allow`` rule lets a command through only when *every* piece matches it: otherwise an allow
rule for ``^git status`` would let ``git status; rm -rf /`` through before the rule that
blocks ``rm -rf /`` is reached. Pure (no mitmproxy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gatehouse.commands import fields, shell
from gatehouse.commands.config import CommandRule, CommandsPolicy
from gatehouse.recording.canonical import canonical_json

DEFAULT_MESSAGES = {
    "allow": "",
    "block": "No [commands] rule allows this call, and the policy blocks every other call.",
    "approve": "No [commands] rule covers this call, and the policy asks an approver for every other call.",
}


@dataclass(frozen=True)
class Verdict:
    action: str  # allow | block | approve
    rule: CommandRule | None  # None: [commands] default applied
    message: str
    matched: str | None  # the piece of the command (or field value) that matched, for the notice


def call_sha256(tool: str, tool_input: Any) -> str:
    """The hash of a call (of its masked input): what an approval and its grant are bound to."""
    return hashlib.sha256(canonical_json({"tool": tool, "input": tool_input})).hexdigest()


@dataclass
class _Command:
    """A command's texts, computed once per call and field."""

    candidates: list[str]  # what a block or approve rule is searched in, most specific first
    piece_forms: list[tuple[str, str]]  # (as written, unquoted) per simple command
    # The texts above that some pattern of the policy matches: no rule matches any other, so
    # each rule searches only these (a 16 KB heredoc has hundreds of texts, which nine rules
    # each searched in turn).
    hits: frozenset[str]


def _command(text: str, any_pattern: Any) -> _Command:
    reading = shell.read_command(text)
    pieces, texts, unquote = reading.pieces, reading.texts, reading.unquote
    forms = [(p, unquote(p)) for p in pieces]
    # As written before unquoted, pieces before wholes: the notice then shows `rm -rf /`
    # rather than the whole line it was found in.
    ordered = [*pieces, *texts, *(plain for _, plain in forms), *(unquote(t) for t in texts)]
    candidates = list(dict.fromkeys(x for x in ordered if x))
    searched = dict.fromkeys([*candidates, *(form for pair in forms for form in pair)])
    if any_pattern is None:
        hits = frozenset(searched)
    else:
        hits = frozenset(s for s in searched if any_pattern.search(s) is not None)
    return _Command(candidates=candidates, piece_forms=forms, hits=hits)


_NO = object()


def _match(rule: CommandRule, tool_input: Any, commands: dict[str, _Command], any_pattern: Any) -> Any:
    """What in `tool_input` `rule` matched (a string, or None when it matches without one),
    or `_NO`. `any_pattern`: the policy's (`CommandsPolicy.any_pattern`)."""
    value = fields.lookup(tool_input, rule.field)
    if value is fields.MISSING:
        return _NO
    if rule.path_re is not None:
        if not isinstance(value, str):
            return _NO
        return value if rule.path_re.search(fields.normalise_path(value)) is not None else _NO
    if rule.pattern_re is None:
        return None
    text = fields.as_text(value)
    if not (isinstance(value, str) and fields.is_command_field(rule.field)):
        return text if rule.pattern_re.search(text) is not None else _NO
    cmd = commands.get(text)
    if cmd is None:
        cmd = commands[text] = _command(text, any_pattern)
    search, hits = rule.pattern_re.search, cmd.hits
    if rule.action == "allow":
        if not cmd.piece_forms:  # nothing to run (an empty command): the text itself decides
            return text if search(text) is not None else _NO
        if all(
            (raw in hits and search(raw) is not None) or (plain in hits and search(plain) is not None)
            for raw, plain in cmd.piece_forms
        ):
            return text
        return _NO
    for candidate in cmd.candidates:
        if candidate in hits and search(candidate) is not None:
            return candidate
    return _NO


# A tool's input is always a JSON object. One that is not (a stream cut short by max_tokens,
# partial JSON) cannot be matched by field, yet the SDKs partial-parse it and an agent loop
# may still run it: it is blocked, never let through by the default.
UNREADABLE_INPUT_MESSAGE = (
    "The tool call's input is not a complete JSON object (the response was cut short?), so "
    "Gatehouse could not check it against the policy."
)


def judge_call(policy: CommandsPolicy, tool: str, tool_input: Any, groups: Iterable[str]) -> Verdict:
    """The verdict on one call of `tool` with `tool_input` (masked) by a caller in `groups`."""
    if not isinstance(tool_input, dict):
        return Verdict("block", None, UNREADABLE_INPUT_MESSAGE, None)
    caller = frozenset(groups)
    commands: dict[str, _Command] = {}
    any_pattern = policy.any_pattern
    for rule in policy.rules:
        if not rule.applies_to(caller) or not rule.matches_tool(tool):
            continue
        matched = _match(rule, tool_input, commands, any_pattern)
        if matched is not _NO:
            return Verdict(rule.action, rule, rule.message, matched)
    return Verdict(policy.default, None, DEFAULT_MESSAGES[policy.default], None)


def may_need_approval(policy: CommandsPolicy, groups: Iterable[str]) -> bool:
    """Whether some call by a caller in `groups` could be held for an approver: an approve
    rule applies to them, or the default is approve. (Then their responses are buffered.)"""
    if policy.default == "approve":
        return True
    caller = frozenset(groups)
    return any(r.action == "approve" and r.applies_to(caller) for r in policy.rules)
