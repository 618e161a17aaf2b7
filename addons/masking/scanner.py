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

from gatehouse.masking.rules import (
    Allowlist,
    Hit,
    Rule,
    compile_pattern,
    keywords_in_every_match,
    match_prefix_pattern,
    re2_options,
    shannon_entropy,
)

# RE2's unanchored search, for the wrapper's native match call (None if it has none).
_UNANCHORED: Any = getattr(getattr(getattr(re2, "_re2", None), "RE2", None), "Anchor", None)
_UNANCHORED = getattr(_UNANCHORED, "UNANCHORED", None)

# What a replacement looks like; the scanner never treats text inside one as a secret, so
# masking is idempotent (a masked conversation resent next turn comes out unchanged, which
# prompt caching depends on).
MASK_PREFIX = "[MASKED:"


def _char_offsets(data: bytes, offsets: Iterable[int]) -> dict[int, int]:
    """Byte offsets into `data` (the UTF-8 of a text) mapped to character offsets."""
    char_at: dict[int, int] = {}
    last_b = last_c = 0
    for b in sorted(offsets):
        last_c += len(data[last_b:b].decode("utf-8", "replace"))
        char_at[b] = last_c
        last_b = b
    return char_at


class StreamGuard:
    """Where a match of a rule set could still be in progress at the end of a text that is
    still arriving (`gatehouse.masking.text_stream` holds the text from there on).

    `live_start(data)` is the smallest offset ``p`` such that ``data[p:]`` is a prefix of a
    match of some rule that can be judged this way (``len(data)`` when there is none): one
    search of the rules' prefix patterns (`gatehouse.masking.rules.match_prefix_pattern`)
    anchored at the end, which RE2 runs backwards from the end, so its cost is the length of
    the part that could still be a match, not of the text.

    `full_window` names the rules that cannot be judged this way and need the text held a
    whole hold-back window: a pattern the derivation cannot read, or keywords that a match
    does not spell out itself (such a rule may start to apply when a keyword arrives after
    the secret).
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        parts: list[str] = []
        full: list[str] = []
        for r in rules:
            pp = match_prefix_pattern(r.pattern)
            if pp is None or not keywords_in_every_match(r.pattern, r.keywords):
                full.append(r.id)
            else:
                parts.append(pp)
        self.full_window: tuple[str, ...] = tuple(full)
        self._rx: Any = None
        if parts:
            combined = "(?:" + "|".join(f"(?:{p})" for p in parts) + r")\z"
            try:
                self._rx = compile_pattern(combined)
            except re2.error:  # too large together: judge every rule by the window
                self.full_window = tuple(r.id for r in rules)
        # This runs once per text delta: the wrapper's `search` builds a match object and
        # maps offsets through Python (~10 us); RE2's own call is a fraction of that.
        self._native: Any = getattr(getattr(self._rx, "_regexp", None), "Match", None) if _UNANCHORED else None

    def live_start(self, data: bytes) -> int:
        if self._rx is None:
            return len(data)
        if self._native is not None:
            start = self._native(_UNANCHORED, data, 0, len(data))[0][0]
            return len(data) if start < 0 else start
        m = self._rx.search(data)
        return len(data) if m is None else m.start()


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
        self._guard: StreamGuard | None = None

    @property
    def stream_guard(self) -> StreamGuard:
        """The rules' `StreamGuard`, built on first use (streams only)."""
        if self._guard is None:
            self._guard = StreamGuard(self.rules)
        return self._guard

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

    def raw_hits(
        self, text: str, pos: int = 0, min_end: int = 0, spans: list[tuple[int, int]] | None = None
    ) -> list[Hit]:
        """Every accepted match of every rule, overlapping ones included, from `pos` on.

        Matching starts at `pos` but sees the text before it as context (for ``\\b``).
        Secrets that end at or before `min_end` are skipped (a stream's already-sent text).
        The text is scanned as UTF-8 bytes (RE2's own encoding: no per-match conversion);
        offsets are mapped back to characters only for the hits.

        Each rule's search steps from match to match: the next search begins where the
        previous secret ends, so a match that starts inside an earlier one of the same rule
        is not looked for. Which matches are found therefore depends on where scanning
        starts: a scan from a position inside such a step can find matches the scan of the
        whole text never sees, and miss ones it finds. `spans`, when given, receives
        ``(match_start, resume)`` for every step of every rule (accepted or not, ending
        before `min_end` or not) that covers more than one character: a scan from a
        position that lies strictly inside none of them (and none of the steps before the
        scanned region) finds exactly the whole-text scan's matches from there on
        (`gatehouse.masking.text_stream` starts its scans only at such positions).
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
        steps: list[tuple[int, int]] = []  # (match start, where the rule's next search began), bytes
        end = len(data)
        for rule in cands:
            rx = rule.regex
            at = bpos
            while at <= end and (m := rx.search(data, at)) is not None:
                g = rule.secret_group
                if g is None:
                    g = 0
                    for i in range(1, rule.groups + 1):
                        if m.start(i) >= 0:
                            g = i
                            break
                s, e = m.span(g)
                ms, me = m.span(0)
                if s < 0 or e <= s:
                    at = me if me > ms else ms + 1
                else:
                    found.append((rule, s, e, ms, me))
                    # The next match may begin right after this secret: the character that
                    # ended it (a space, a quote) is also the one a following secret starts
                    # after (``ghp_A ghp_B``). Resuming at the match's end would skip it.
                    at = e
                if spans is not None and at > ms + 1:
                    steps.append((ms, at))
        if spans is not None and steps:
            if ascii_only:
                spans.extend(steps)
            else:
                char_at = _char_offsets(data, {o for step in steps for o in step})
                spans.extend((char_at[a], char_at[b]) for a, b in steps)
        if not found:
            return []
        if ascii_only:
            conv: Callable[[int], int] = int
        else:
            conv = _char_offsets(data, {o for _, s, e, ms, me in found for o in (s, e, ms, me)}).__getitem__
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

    def scan(self, text: str, pos: int = 0, min_end: int = 0, spans: list[tuple[int, int]] | None = None) -> list[Hit]:
        """The secrets of `text` (from `pos`, ending after `min_end`), non-overlapping, in order.
        `spans`: as for `raw_hits`."""
        return self.resolve(self.raw_hits(text, pos, min_end, spans))
