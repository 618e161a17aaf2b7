"""Secret-masking rules: the rule model, rule packs, the `[masking]` policy section, the scanner.

A rule is an RE2 pattern (linear-time matching: a hostile prompt cannot make the gateway
backtrack for minutes; the same syntax as gitleaks rules) plus optional refinements:

- the *secret* is the first capture group that took part in the match, or `secret_group`,
  or the whole match when the pattern has no group: context such as ``password =`` is
  matched but not replaced;
- `keywords`: the rule applies only to a text that contains one of them (case-insensitive);
- `min_entropy`: a candidate whose Shannon entropy (bits per character) is lower is ignored;
- an allowlist: `patterns` (RE2, searched in the secret, or in the whole match with
  ``target = "match"``) and `stopwords` (case-insensitive substrings of the secret).

Scanning does not make one pass per rule: all patterns go into one RE2 `Set`, whose DFA
says in a single pass which rules match anywhere in the text. Only those rules then run
`finditer` to find positions and groups, and most texts stop after the first pass.

Everything here is pure (no mitmproxy); `parse_masking` is what the policy loader calls.
"""

from __future__ import annotations

import importlib.resources
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import re2

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

# A streamed text is never held longer than this, even while a private-key block waits for
# its END marker or a match keeps growing (a 16384-bit RSA key in PEM is ~12,700 characters).
MAX_HOLD_CHARS = 65536

ON_UNPARSEABLE = ("refuse", "forward")

# What a replacement looks like; the scanner never treats text inside one as a secret, so
# masking is idempotent (a masked conversation resent next turn comes out unchanged, which
# prompt caching depends on).
MASK_PREFIX = "[MASKED:"

# RE2 memory budget per compiled Set/pattern. The Set's DFA is built lazily and reset when
# full; a generous budget keeps it from ever running out on hostile input (an RE2 Set that
# runs out of memory reports "no match", which here would mean a leak).
_RE2_MAX_MEM = 64 << 20

_RULE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _options() -> re2.Options:
    opts = re2.Options()
    opts.max_mem = _RE2_MAX_MEM
    opts.log_errors = False
    return opts


def _compile(pattern: str) -> Any:
    """Compile with RE2, raising `re2.error` with RE2's message on a bad pattern."""
    return re2.compile(pattern, _options())


def shannon_entropy(s: str) -> float:
    """Bits per character of `s` (0 for an empty string)."""
    n = len(s)
    if n == 0:
        return 0.0
    return -sum((c / n) * math.log2(c / n) for c in Counter(s).values())


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allowlist:
    """Candidates that are not secrets: placeholders, examples, known-public values."""

    patterns: tuple[str, ...] = ()
    stopwords: tuple[str, ...] = ()
    target: str = "secret"  # "secret": test the secret; "match": the whole match (context too)
    # All patterns as one alternation: one search per candidate, not one per pattern.
    compiled: Any = field(default=None, compare=False, repr=False)

    def __bool__(self) -> bool:
        return bool(self.patterns or self.stopwords)

    def allows(self, secret: str, match: str) -> bool:
        if self.compiled is not None and self.compiled.search(match if self.target == "match" else secret) is not None:
            return True
        if self.stopwords:
            low = secret.lower()
            return any(w in low for w in self.stopwords)
        return False


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    pattern: str
    secret_group: int | None = None  # None: first participating group, else the whole match
    keywords: tuple[str, ...] = ()  # lower-case
    min_entropy: float | None = None
    allowlist: Allowlist = Allowlist()
    source: str = ""  # "file: key" where the rule was defined, for messages
    regex: Any = field(default=None, compare=False, repr=False)
    groups: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Hit:
    """One secret found in a text. Offsets are character offsets into that text.

    `start`/`end` delimit what is replaced (the secret, or the union of overlapping
    secrets); `match_start`/`match_end` the whole match, context included. `secret` is the
    value the fingerprint is computed over: it never leaves the gateway.
    """

    rule: Rule
    start: int
    end: int
    match_start: int
    match_end: int
    secret: str

    @property
    def rule_id(self) -> str:
        return self.rule.id


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
    scanner: "Scanner" = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.scanner is None:
            object.__setattr__(self, "scanner", Scanner(self.rules, self.allowlist))

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)


# ----------------------------------------------------------------------------------------
# Parsing rules, packs and the [masking] section
# ----------------------------------------------------------------------------------------


def _parse_allowlist(sec: Section) -> Allowlist:
    patterns = sec.str_list("patterns", ())
    for i, p in enumerate(patterns):
        try:
            _compile(p)
        except re2.error as e:
            raise PolicyError(sec.file, f"{sec.key_path('patterns')}[{i}]", f"invalid RE2 pattern: {e}") from None
    stopwords = tuple(w.lower() for w in sec.str_list("stopwords", ()))
    target = sec.str("target", "secret", choices=("secret", "match"))
    sec.done()
    return make_allowlist(patterns, stopwords, target)


def make_allowlist(patterns: Iterable[str] = (), stopwords: Iterable[str] = (), target: str = "secret") -> Allowlist:
    patterns = tuple(patterns)
    # Each pattern in its own group, so that its inline flags such as (?i) stay inside it.
    compiled = _compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
    return Allowlist(patterns=patterns, stopwords=tuple(w.lower() for w in stopwords), target=target, compiled=compiled)


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
        regex = _compile(pattern)
    except re2.error as e:
        raise sec.error("pattern", f"rule {rule_id!r}: invalid RE2 pattern: {e}") from None
    secret_group = sec.int("secret_group", None, min=0)
    if secret_group is not None and secret_group > regex.groups:
        raise sec.error("secret_group", f"rule {rule_id!r}: the pattern has only {regex.groups} capture group(s)")
    try:
        # Which rules match is decided by an RE2 Set over all patterns: refuse now what the
        # Set would refuse later.
        probe = re2.Set.SearchSet(_options())
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
            raise PolicyError(sec.file, f"{sec.key_path('packs')}[{i}]",
                              f"a pack is a built-in name (e.g. 'secrets') or a path ending in .toml; got {name!r}")
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
            raise PolicyError(sec.file, f"{sec.key_path('disable')}[{i}]",
                              f"no rule {rid!r} in the packs or rules (known: {', '.join(sorted(by_id)) or 'none'})")
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


# ----------------------------------------------------------------------------------------
# Scanning
# ----------------------------------------------------------------------------------------


class Scanner:
    """Finds the secrets of a rule set in texts. Thread-safe; build once per policy."""

    def __init__(self, rules: Iterable[Rule], allowlist: Allowlist = Allowlist()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.allowlist = allowlist
        self._order = {r.id: i for i, r in enumerate(self.rules)}
        self._set: Any = None
        if self.rules:
            s = re2.Set.SearchSet(_options())
            for r in self.rules:
                s.Add(r.pattern)
            s.Compile()
            self._set = s

    def candidates(self, text: str | bytes) -> list[Rule]:
        """The rules that match somewhere in `text` (one DFA pass) and whose keywords appear."""
        if self._set is None or not text:
            return []
        idx = self._set.Match(text)
        if not idx:
            return []
        low: str | None = None
        out = []
        for i in sorted(idx):
            rule = self.rules[i]
            if rule.keywords:
                if low is None:
                    low = text.lower() if isinstance(text, str) else text.decode("utf-8", "replace").lower()
                if not any(k in low for k in rule.keywords):
                    continue
            out.append(rule)
        return out

    def _accept(self, rule: Rule, secret: str, match: Callable[[], str]) -> bool:
        if MASK_PREFIX in secret or not secret.strip():
            return False
        if rule.min_entropy is not None and shannon_entropy(secret) < rule.min_entropy:
            return False
        if rule.allowlist and rule.allowlist.allows(secret, match() if rule.allowlist.target == "match" else ""):
            return False
        if self.allowlist and self.allowlist.allows(secret, match() if self.allowlist.target == "match" else ""):
            return False
        return True

    def raw_hits(self, text: str, pos: int = 0, min_end: int = 0) -> list[Hit]:
        """Every accepted match of every rule, overlapping ones included, from `pos` on.

        Matching starts at `pos` but sees the text before it as context (for ``\\b``).
        Secrets that end at or before `min_end` are skipped (a stream's already-sent text).
        The text is scanned as UTF-8 bytes (RE2's own encoding: no per-match conversion);
        offsets are mapped back to characters only for the hits.
        """
        if self._set is None or not text:
            return []
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (JSON allows "\\ud800") cannot be encoded: scan a copy in which
            # each is one "?" byte, so character offsets still line up with `text`.
            data = text.encode("utf-8", "replace")
        ascii_only = len(data) == len(text)
        cands = self.candidates(data)
        if not cands:
            return []
        bpos = pos if ascii_only or not pos else len(text[:pos].encode("utf-8", "replace"))
        found: list[tuple[Rule, int, int, int, int]] = []  # rule, secret span, match span (bytes)
        for rule in cands:
            rx = rule.regex
            for m in rx.finditer(data, bpos):
                g = rule.secret_group
                if g is None:
                    g = 0
                    for i in range(1, rule.groups + 1):
                        if m.start(i) >= 0:
                            g = i
                            break
                s, e = m.span(g)
                if s < 0 or e <= s:
                    continue
                ms, me = m.span(0)
                found.append((rule, s, e, ms, me))
        if not found:
            return []
        if ascii_only:
            conv: Callable[[int], int] = int
        else:
            offsets = sorted({o for _, s, e, ms, me in found for o in (s, e, ms, me)})
            char_at: dict[int, int] = {}
            last_b = last_c = 0
            for b in offsets:
                last_c += len(data[last_b:b].decode("utf-8", "replace"))
                char_at[b] = last_c
                last_b = b
            conv = char_at.__getitem__
        hits: list[Hit] = []
        for rule, s, e, ms, me in found:
            cs, ce, cms, cme = conv(s), conv(e), conv(ms), conv(me)
            if ce <= min_end:
                continue
            secret = text[cs:ce]
            if self._accept(rule, secret, lambda: text[cms:cme]):
                hits.append(Hit(rule, cs, ce, cms, cme, secret))
        return hits

    def resolve(self, hits: list[Hit]) -> list[Hit]:
        """Merge overlapping hits: the union of their spans is replaced, in the name of the
        longest secret (ties: the rule listed first), so no part of either survives."""
        if len(hits) <= 1:
            return hits
        order = self._order
        hits = sorted(hits, key=lambda h: (h.start, -(h.end - h.start), order.get(h.rule.id, 0)))
        out: list[Hit] = []
        cur = hits[0]
        best = cur
        for h in hits[1:]:
            if h.start < cur.end:
                if (h.end - h.start) > (best.end - best.start):
                    best = h
                cur = Hit(best.rule, cur.start, max(cur.end, h.end),
                          min(cur.match_start, h.match_start), max(cur.match_end, h.match_end), best.secret)
            else:
                out.append(cur)
                cur = best = h
        out.append(cur)
        return out

    def scan(self, text: str, pos: int = 0, min_end: int = 0) -> list[Hit]:
        """The secrets of `text` (from `pos`, ending after `min_end`), non-overlapping, in order."""
        return self.resolve(self.raw_hits(text, pos, min_end))
