"""The `[masking]` section of a policy, and the rule packs it names, parsed and validated into
a `MaskingPolicy` (its rules, allowlist, hold-back window, fingerprint secret, what to do with
a body that cannot be inspected) with its compiled `Scanner`. `parse_masking` is what the
policy loader calls. Pure (no mitmproxy).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re2

from gatehouse.masking.rules import Allowlist, Rule, compile_pattern, make_allowlist, re2_options
from gatehouse.masking.scanner import Scanner
from gatehouse.policy.reader import PolicyError, Section, read_toml

DEFAULT_PACKS = ("secrets",)

# Streaming text is released only once it is this many characters behind the newest
# delta, so that a secret split across deltas is whole in the buffer before any of it
# leaves. 256 covers every fixed-format credential of the built-in pack with its context
# (the longest are OpenAI project keys, ~170 characters, and real PyPI tokens, ~220) and
# typical JWTs; it costs about 60 tokens of display latency, all released at block end.
DEFAULT_HOLD_BACK_CHARS = 256
MIN_HOLD_BACK_CHARS = 64  # a whole BEGIN ... PRIVATE KEY marker must fit in the window
MAX_HOLD_BACK_CHARS = 65536

ON_UNPARSEABLE = ("refuse", "forward")

_RULE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class MaskingPolicy:
    """The `[masking]` section, validated, with its compiled scanner.

    Masking is on with the built-in pack when the section is absent; it is off only when
    no rule is left (``packs = []`` and no `[[masking.rules]]`).
    """

    packs: tuple[str, ...] = DEFAULT_PACKS
    rules: tuple[Rule, ...] = ()
    disable: tuple[str, ...] = ()
    allowlist: Allowlist = Allowlist()
    hold_back_chars: int = DEFAULT_HOLD_BACK_CHARS
    fingerprint_secret_env: str | None = None
    on_unparseable: str = "refuse"
    scanner: Scanner = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.scanner is None:
            object.__setattr__(self, "scanner", Scanner(self.rules, self.allowlist))

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)


def _parse_allowlist(sec: Section) -> Allowlist:
    patterns = sec.str_list("patterns", ())
    for i, p in enumerate(patterns):
        try:
            compile_pattern(p)
        except re2.error as e:
            raise PolicyError(sec.file, f"{sec.key_path('patterns')}[{i}]", f"invalid RE2 pattern: {e}") from None
    stopwords = tuple(w.lower() for w in sec.str_list("stopwords", ()))
    target = sec.str("target", "secret", choices=("secret", "match"))
    sec.done()
    return make_allowlist(patterns, stopwords, target)


def _allowlist_from_raw(parent: Section, key: str) -> Allowlist:
    """`allowlist` as a table (patterns, stopwords, target) or, for short, an array of patterns."""
    value = parent.raw(key, None)
    if value is None:
        return Allowlist()
    if isinstance(value, list):
        sec = Section({"patterns": value}, parent.file, parent.key_path(key), parent.base_dir)
        return _parse_allowlist(sec)
    if isinstance(value, dict):
        return _parse_allowlist(Section(value, parent.file, parent.key_path(key), parent.base_dir))
    raise parent.error(key, "expected a table (patterns, stopwords, target) or an array of patterns")


def parse_rule(sec: Section) -> Rule:
    """One rule table, from a pack (`[[rules]]`) or a policy (`[[masking.rules]]`)."""
    rule_id = sec.str("id")
    if not set(rule_id) <= _RULE_ID_CHARS or not rule_id[0].isalnum():
        raise sec.error("id", f"must be lower-case letters, digits, '-', '_' or '.'; got {rule_id!r}")
    description = sec.str("description", "", nonempty=False)
    pattern = sec.str("pattern")
    try:
        regex = compile_pattern(pattern)
    except re2.error as e:
        raise sec.error("pattern", f"rule {rule_id!r}: invalid RE2 pattern: {e}") from None
    secret_group = sec.int("secret_group", None, min=0)
    if secret_group is not None and secret_group > regex.groups:
        raise sec.error("secret_group", f"rule {rule_id!r}: the pattern has only {regex.groups} capture group(s)")
    try:
        # Which rules match is decided by an RE2 Set over all patterns: refuse now what the
        # Set would refuse later.
        probe = re2.Set.SearchSet(re2_options())
        probe.Add(pattern)
    except re2.error as e:
        raise sec.error("pattern", f"rule {rule_id!r}: cannot be used in a pattern set: {e}") from None
    if regex.search("") is not None:
        raise sec.error("pattern", f"rule {rule_id!r}: the pattern matches the empty string")
    keywords = tuple(k.lower() for k in sec.str_list("keywords", ()))
    min_entropy = sec.float("min_entropy", None, min=0.0, max=8.0)
    allowlist = _allowlist_from_raw(sec, "allowlist")
    sec.done()
    return Rule(
        id=rule_id,
        description=description,
        pattern=pattern,
        secret_group=secret_group,
        keywords=keywords,
        min_entropy=min_entropy,
        allowlist=allowlist,
        source=f"{sec.file}: {sec.path}",
        regex=regex,
        groups=regex.groups,
    )


def _parse_rule_list(sections: list[Section]) -> list[Rule]:
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for rsec in sections:
        rule = parse_rule(rsec)
        if rule.id in seen:
            raise rsec.error("id", f"duplicate rule id {rule.id!r} (first defined at {seen[rule.id]})")
        seen[rule.id] = rsec.path
        rules.append(rule)
    return rules


def pack_path(name: str, base_dir: Path | None = None) -> Path:
    """Where pack `name` lives: a built-in pack by name, or a .toml path (relative to the policy)."""
    if name.endswith(".toml") or "/" in name:
        p = Path(name).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return p
    return Path(str(importlib.resources.files("gatehouse.policies") / "rules" / f"{name}.toml"))


def load_pack(name: str, base_dir: Path | None = None) -> list[Rule]:
    """Read and validate a rule pack: a TOML file with `description` and `[[rules]]`."""
    path = pack_path(name, base_dir)
    data, _ = read_toml(path, f"rule pack {name!r}")
    root = Section(data, path, "", path.resolve().parent)
    root.str("description", "", nonempty=False)
    rules = _parse_rule_list(root.sections("rules"))
    root.done()
    return rules


def parse_masking(sec: Section | None) -> MaskingPolicy:
    """The `[masking]` section; `None` (section absent) means the defaults: built-in pack on."""
    if sec is None:
        return MaskingPolicy(rules=tuple(load_pack(DEFAULT_PACKS[0])))

    packs = sec.str_list("packs", DEFAULT_PACKS)
    by_id: dict[str, Rule] = {}
    for i, name in enumerate(packs):
        if not (name.endswith(".toml") or "/" in name) and not set(name) <= _RULE_ID_CHARS:
            raise PolicyError(
                sec.file,
                f"{sec.key_path('packs')}[{i}]",
                f"a pack is a built-in name (e.g. 'secrets') or a path ending in .toml; got {name!r}",
            )
        for rule in load_pack(name, sec.base_dir):
            # A later pack may redefine a rule of an earlier one (same id): the later wins.
            by_id[rule.id] = rule
    disable = sec.str_list("disable", ())
    # A policy rule with the id of a pack rule replaces it: that is how a built-in is tuned.
    for rule in _parse_rule_list(sec.sections("rules")):
        by_id.pop(rule.id, None)
        by_id[rule.id] = rule
    for i, rid in enumerate(disable):
        if rid not in by_id:
            raise PolicyError(
                sec.file,
                f"{sec.key_path('disable')}[{i}]",
                f"no rule {rid!r} in the packs or rules (known: {', '.join(sorted(by_id)) or 'none'})",
            )
        del by_id[rid]
    allowlist = _allowlist_from_raw(sec, "allowlist")
    hold_back = sec.int("hold_back_chars", DEFAULT_HOLD_BACK_CHARS, min=MIN_HOLD_BACK_CHARS, max=MAX_HOLD_BACK_CHARS)
    env = sec.str("fingerprint_secret_env", None)
    if env is not None and not env.replace("_", "").isalnum():
        raise sec.error("fingerprint_secret_env", f"must be an environment variable name; got {env!r}")
    on_unparseable = sec.str("on_unparseable", "refuse", choices=ON_UNPARSEABLE)
    sec.done()
    rules = tuple(by_id.values())
    try:
        scanner = Scanner(rules, allowlist)
    except re2.error as e:  # each pattern compiled alone; together they exceed RE2's limits
        raise sec.error("", f"the {len(rules)} rules cannot be compiled together: {e}") from None
    return MaskingPolicy(
        packs=packs,
        rules=rules,
        disable=disable,
        allowlist=allowlist,
        hold_back_chars=hold_back,
        fingerprint_secret_env=env,
        on_unparseable=on_unparseable,
        scanner=scanner,
    )


def masking_from_rules(rules: Iterable[Rule], **kw: Any) -> MaskingPolicy:
    """A policy from rules already parsed (tests, tools), e.g. ``masking_from_rules(load_pack("secrets"))``."""
    return MaskingPolicy(rules=tuple(rules), **kw)
