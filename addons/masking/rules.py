"""A secret-masking rule: its RE2 pattern and refinements, and the hit it produces in a text.

A rule is an RE2 pattern (linear-time matching: a hostile prompt cannot make the gateway
backtrack for minutes; the same syntax as gitleaks rules) plus optional refinements:

- the *secret* is the first capture group that took part in the match, or `secret_group`,
  or the whole match when the pattern has no group: context such as ``password =`` is
  matched but not replaced;
- `keywords`: the rule applies only to a text that contains one of them (case-insensitive);
- `min_entropy`: a candidate whose Shannon entropy (bits per character) is lower is ignored;
- an allowlist: `patterns` (RE2, searched in the secret, or in the whole match with
  ``target = "match"``) and `stopwords` (case-insensitive substrings of the secret).

Rules are read from packs and policies by `gatehouse.masking.config` and applied by
`gatehouse.masking.scanner`. Pure (no mitmproxy).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import re2

# RE2 memory budget per compiled Set/pattern. The Set's DFA is built lazily and reset when
# full; a generous budget keeps it from ever running out on hostile input (an RE2 Set that
# runs out of memory reports "no match", which here would mean a leak).
_RE2_MAX_MEM = 64 << 20


def re2_options() -> re2.Options:
    """The RE2 options of every rule pattern and pattern set: the memory budget, no logging."""
    opts = re2.Options()
    opts.max_mem = _RE2_MAX_MEM
    opts.log_errors = False
    return opts


def compile_pattern(pattern: str) -> Any:
    """Compile with RE2, raising `re2.error` with RE2's message on a bad pattern."""
    return re2.compile(pattern, re2_options())


def shannon_entropy(s: str) -> float:
    """Bits per character of `s` (0 for an empty string)."""
    n = len(s)
    if n == 0:
        return 0.0
    return -sum((c / n) * math.log2(c / n) for c in Counter(s).values())


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


def make_allowlist(patterns: Iterable[str] = (), stopwords: Iterable[str] = (), target: str = "secret") -> Allowlist:
    patterns = tuple(patterns)
    # Each pattern in its own group, so that its inline flags such as (?i) stay inside it.
    compiled = compile_pattern("|".join(f"(?:{p})" for p in patterns)) if patterns else None
    return Allowlist(patterns=patterns, stopwords=tuple(w.lower() for w in stopwords), target=target, compiled=compiled)


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


# --------------------------------------------------------------------------------------------
# What a pattern's matches look like while they are still arriving (for streamed text)
# --------------------------------------------------------------------------------------------
#
# A streamed text may release its characters as soon as no match of any rule can still
# begin among them. `match_prefix_pattern` turns a rule's RE2 pattern into one that matches
# every *prefix* of every string the rule matches: searched as ``(?:P)\z`` in the text
# received so far, its leftmost match is the earliest position where a match could be in
# progress. The derivation works on the pattern's syntax tree (`_parse`), keeps every atom
# (a character, a class, `.`) as written, with the flags that were in force, and is
# conservative: assertions (``^ $ \b \B \A \z``) become "always true", which only widens the
# language. A pattern it cannot read (syntax it does not know) gives None, and the caller
# falls back to a fixed hold-back window.


class _Unsupported(Exception):
    """Syntax the derivation does not read: the caller falls back."""


# Node kinds of the tree: ("atom", src, char) one character (src as written, wrapped in its
# flags; char: the literal character or None for a class), ("empty",) an assertion or
# nothing, ("cat", [nodes]), ("alt", [nodes]), ("rep", node, min, max|None).
_Node = tuple
_SPECIAL_LITERAL = {"{": r"\{", "}": r"\}", "]": r"\]"}
_REPEAT = compile_pattern(r"\{(\d+)(?:(,)(\d*))?\}")


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.flags: frozenset[str] = frozenset()

    def parse(self) -> _Node:
        node = self._alt()
        if self.i != len(self.p):
            raise _Unsupported(f"unexpected {self.p[self.i]!r} at {self.i}")
        return node

    def _alt(self) -> _Node:
        saved = self.flags
        branches = [self._cat()]
        while self.i < len(self.p) and self.p[self.i] == "|":
            self.i += 1
            branches.append(self._cat())
        self.flags = saved
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def _cat(self) -> _Node:
        items: list[_Node] = []
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            atom = self._atom()
            if atom is None:  # a flag group such as (?i): applies to what follows
                continue
            while self.i < len(self.p):
                c = self.p[self.i]
                if c in "*+?":
                    lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                    self.i += 1
                elif c == "{" and (m := _REPEAT.match(self.p, self.i)) is not None:
                    lo = int(m.group(1))
                    hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                    self.i = m.end()
                else:
                    break
                if self.i < len(self.p) and self.p[self.i] == "?":  # lazy: same language
                    self.i += 1
                atom = ("rep", atom, lo, hi)
            items.append(atom)
        return items[0] if len(items) == 1 else ("cat", items)

    def _leaf(self, src: str, char: str | None) -> _Node:
        fl = "".join(sorted(self.flags & {"i", "s"}))
        return ("atom", f"(?{fl}:{src})" if fl else src, char, "i" in self.flags)

    def _atom(self) -> _Node | None:
        p, i = self.p, self.i
        c = p[i]
        if c == "(":
            return self._group()
        if c == "[":
            return self._class()
        if c in "^$":
            self.i += 1
            return ("empty",)
        if c == ".":
            self.i += 1
            return self._leaf(".", None)
        if c == "\\":
            return self._escape()
        if c in "*+?":
            raise _Unsupported("repetition without an operand")
        self.i += 1
        return self._leaf(_SPECIAL_LITERAL.get(c, c), c)

    def _escape(self) -> _Node:
        p, i = self.p, self.i
        if i + 1 >= len(p):
            raise _Unsupported("trailing backslash")
        c = p[i + 1]
        self.i = i + 2
        if c in "bBAz":
            return ("empty",)
        if c in "dDwWsS":
            return self._leaf(p[i : i + 2], None)
        if c in "pP":
            if self.i < len(p) and p[self.i] == "{":
                end = p.find("}", self.i)
                if end < 0:
                    raise _Unsupported("unterminated \\p{")
                self.i = end + 1
            else:
                self.i += 1
            return self._leaf(p[i : self.i], None)
        if c == "x":
            if self.i < len(p) and p[self.i] == "{":
                end = p.find("}", self.i)
                if end < 0:
                    raise _Unsupported("unterminated \\x{")
                self.i = end + 1
            else:
                self.i += 2
            return self._leaf(p[i : self.i], None)
        if c in "aftnrv":
            return self._leaf(p[i : i + 2], {"a": "\a", "f": "\f", "t": "\t", "n": "\n", "r": "\r", "v": "\v"}[c])
        if c.isascii() and not c.isalnum():
            return self._leaf(p[i : i + 2], c)
        raise _Unsupported(f"escape \\{c}")

    def _class(self) -> _Node:
        p, start = self.p, self.i
        i = start + 1
        if i < len(p) and p[i] == "^":
            i += 1
        if i < len(p) and p[i] == "]":  # a ] first is a literal
            i += 1
        while True:
            if i >= len(p):
                raise _Unsupported("unterminated character class")
            c = p[i]
            if c == "]":
                break
            if c == "\\":
                if p.startswith(("\\x{", "\\p{", "\\P{"), i):
                    end = p.find("}", i)
                    if end < 0:
                        raise _Unsupported("unterminated escape in a class")
                    i = end + 1
                else:
                    i += 2
            elif p.startswith("[:", i) and (end := p.find(":]", i + 2)) >= 0:
                i = end + 2
            else:
                i += 1
        self.i = i + 1
        return self._leaf(p[start : self.i], None)

    def _group(self) -> _Node | None:
        p = self.p
        self.i += 1
        if p.startswith("?", self.i):
            j = self.i + 1
            if p.startswith(("P<", "<"), j) and not p.startswith(("<=", "<!"), j):
                end = p.find(">", j)
                if end < 0:
                    raise _Unsupported("unterminated group name")
                self.i = end + 1
            else:
                k = j
                while k < len(p) and p[k] in "imsU-":
                    k += 1
                if k >= len(p) or p[k] not in ":)":
                    raise _Unsupported(f"group (?{p[j : k + 1]}")
                flags = set(self.flags)
                on = True
                for f in p[j:k]:
                    if f == "-":
                        on = False
                    elif on:
                        flags.add(f)
                    else:
                        flags.discard(f)
                self.i = k + 1
                if p[k] == ")":  # (?i): the rest of the enclosing group
                    self.flags = frozenset(flags)
                    return None
                saved, self.flags = self.flags, frozenset(flags)
                node = self._alt()
                self.flags = saved
                return self._close(node)
        saved = self.flags
        node = self._alt()
        self.flags = saved
        return self._close(node)

    def _close(self, node: _Node) -> _Node:
        if self.i >= len(self.p) or self.p[self.i] != ")":
            raise _Unsupported("missing )")
        self.i += 1
        return node


def _full(n: _Node) -> str:
    """A regex for the language of `n`, assertions dropped."""
    kind = n[0]
    if kind == "atom":
        return n[1]
    if kind == "empty":
        return ""
    if kind == "cat":
        return "".join(_full(x) for x in n[1])
    if kind == "alt":
        return "(?:" + "|".join(_full(x) for x in n[1]) + ")"
    _, x, lo, hi = n
    return f"(?:{_full(x)}){_relaxed(lo, hi)}"


def _relaxed(lo: int, hi: int | None) -> str:
    """A repetition count, widened: counting (``{36,251}``) multiplies the states of the
    combined prefix pattern's automaton until RE2 runs out of cache; ``+`` and ``*`` accept
    more strings (a stream holds a little more), never fewer."""
    if hi is not None and hi <= 1:
        return "" if lo == hi == 1 else "?"
    return "+" if lo >= 1 else "*"


def _prefix(n: _Node) -> str:
    """A regex for every prefix of every string of `n` (the empty string included)."""
    kind = n[0]
    if kind == "atom":
        return f"(?:{n[1]})?"
    if kind == "empty":
        return ""
    if kind == "cat":
        # P(a b c) = P(a) | F(a) P(b c): nested, so that the size stays linear.
        out = ""
        for x in reversed(n[1]):
            px, fx = _prefix(x), _full(x)
            out = px if not out else f"(?:{fx}{out}|{px})"
        return out
    if kind == "alt":
        return "(?:" + "|".join(_prefix(x) for x in n[1]) + ")"
    _, x, lo, hi = n
    if hi == 0:
        return ""
    # A prefix of x^k (k >= 1) is x^j followed by a prefix of x, for j < k (any j: widened).
    reps = "" if hi == 1 else "*"
    return (f"(?:{_full(x)}){reps}" if reps else "") + f"(?:{_prefix(x)})"


def match_prefix_pattern(pattern: str) -> str | None:
    """An RE2 pattern matching every prefix of every match of `pattern` (and more: its
    assertions are dropped), or None when `pattern` uses syntax this derivation does not read.

    Searched with ``\\z`` appended, its leftmost match in a text is the earliest position at
    which a match of `pattern` could still be in progress at the text's end."""
    try:
        tree = _Parser(pattern).parse()
    except (_Unsupported, IndexError):
        return None
    out = _prefix(tree)
    try:
        compile_pattern(out)
    except re2.error:
        return None
    return out


def _implies(n: _Node, keywords: tuple[str, ...]) -> bool:
    """Whether every string of `n` contains one of `keywords` (lower-case), judged on the
    literal characters the pattern spells out."""
    kind = n[0]
    if kind == "atom":
        return n[2] is not None and n[2].lower() in keywords
    if kind == "alt":
        return all(_implies(x, keywords) for x in n[1])
    if kind == "rep":
        return n[2] >= 1 and _implies(n[1], keywords)
    if kind != "cat":
        return False
    run = ""
    for x in [*n[1], ("empty",)]:
        if x[0] == "atom" and x[2] is not None:
            run += x[2]
            continue
        if run and any(k in run.lower() for k in keywords):
            return True
        run = ""
        if _implies(x, keywords):
            return True
    return False


def keywords_in_every_match(pattern: str, keywords: tuple[str, ...]) -> bool:
    """True when every match of `pattern` spells out one of `keywords` itself (the built-in
    rules' keywords all are: ``pass`` in ``pass(?:word)?``), so that whether the rule applies
    depends on the match alone, not on where else in the text a keyword might appear."""
    if not keywords:
        return True
    try:
        tree = _Parser(pattern).parse()
    except (_Unsupported, IndexError):
        return False
    return _implies(tree, tuple(k.lower() for k in keywords))
