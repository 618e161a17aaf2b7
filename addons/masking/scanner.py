"""Finding the secrets of a rule set in a text.

Scanning does not make one pass per rule: all patterns go into one RE2 `Set`, whose DFA
says in a single pass which rules match anywhere in the text. Only those rules then run
`finditer` to find positions and groups, and most texts stop after the first pass.
Overlapping hits are merged, so that no part of any secret survives. Pure (no mitmproxy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import re2

from gatehouse.masking.rules import Allowlist, Hit, Rule, re2_options, shannon_entropy

# What a replacement looks like; the scanner never treats text inside one as a secret, so
# masking is idempotent (a masked conversation resent next turn comes out unchanged, which
# prompt caching depends on).
MASK_PREFIX = "[MASKED:"


class Scanner:
    """Finds the secrets of a rule set in texts. Thread-safe; build once per policy."""

    def __init__(self, rules: Iterable[Rule], allowlist: Allowlist = Allowlist()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.allowlist = allowlist
        self._order = {r.id: i for i, r in enumerate(self.rules)}
        self._set: Any = None
        if self.rules:
            s = re2.Set.SearchSet(re2_options())
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
            if self._accept(rule, secret, lambda cms=cms, cme=cme: text[cms:cme]):
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
                cur = Hit(
                    best.rule,
                    cur.start,
                    max(cur.end, h.end),
                    min(cur.match_start, h.match_start),
                    max(cur.match_end, h.match_end),
                    best.secret,
                )
            else:
                out.append(cur)
                cur = best = h
        out.append(cur)
        return out

    def scan(self, text: str, pos: int = 0, min_end: int = 0) -> list[Hit]:
        """The secrets of `text` (from `pos`, ending after `min_end`), non-overlapping, in order."""
        return self.resolve(self.raw_hits(text, pos, min_end))
