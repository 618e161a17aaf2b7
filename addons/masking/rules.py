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
