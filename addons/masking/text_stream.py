"""Masking a text that arrives in pieces (the text deltas of one streamed content block).

`TextStream` releases text as soon as no secret can still begin in it, and gives the same
result as masking the whole text at once.

The invariant (what makes releasing early safe). A character is released only when it lies
before `live`, the earliest offset at which a match of some rule could still be in progress
at the end of the text received so far (`gatehouse.masking.scanner.StreamGuard`: each
rule's pattern turned into one that accepts every prefix of every match, assertions dropped
and repetition counts widened, so it accepts more, never less). Take any match ``m`` of a
rule, in the whole text as it will be at the end, that starts at ``s`` before the release
point: had it ended at or after the end of the text received then, that text from ``s`` on
would have been a prefix of ``m``, so ``live <= s``: not released. Hence ``m`` was whole,
with the character after it there too (what its end assertions look at), when its first
character was released: the scan of that release saw it exactly as the whole text's scan
does, and masked it. Released text is also never cut inside a hit of that scan.

"Exactly as the whole text's scan" needs one more thing: a rule's scan steps from one match
to the end of its secret (`Scanner.raw_hits`), so which overlapping candidates it sees
depends on where it starts. In ``password = password = hunter22`` the whole text's scan
takes the second ``password`` as the (rejected) value of the first and never sees the
match that begins there; a scan started between the two would see only that one, and in
``password = password = password = hunter22`` would step over the match the whole text
masks. So a scan starts where the whole text's scan also passes: never strictly inside one
of its steps (`TextStream._resync`). Such a start is a step boundary of every rule, and from
one the scan steps as the whole text's does, through every match that begins before `live`
(those the text still arriving cannot change): by induction, each scan's steps before the
release point are the whole text's, and the next start is chosen among them.

What the guard cannot judge keeps the old fixed window: a rule whose pattern it cannot read,
or whose keywords a match does not spell out itself (the rule may start to apply when a
keyword arrives after the secret), holds text `hold_back_chars` behind the newest
character; a ``-----BEGIN ... PRIVATE KEY-----`` marker without its END marker holds the
text from its start. Each scan sees the pending text plus `hold_back_chars` of sent text
(keywords, and the text before a match, count within that window), or more when a step of
the whole text's scan reaches back further.

Usually only the last word is held (it could be the start of ``my_password = ...``), so text
reaches the client a delta or two after it arrives. The hold is bounded by
`max_hold_chars`: a match still growing when it is reached is masked, never released, and
its continuation is swallowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import re2

from gatehouse.exchange import Finding
from gatehouse.masking.fingerprints import mask_token
from gatehouse.masking.rules import Hit

if TYPE_CHECKING:
    from gatehouse.masking.masker import Masker

# A streamed text is never held longer than this, even while a private-key block waits for
# its END marker or a match keeps growing (a 16384-bit RSA key in PEM is ~12,700 characters).
MAX_HOLD_CHARS = 65536

_PEM_BEGIN = re2.compile(r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re2.compile(r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_MARKER_MAX = 80  # longer than any marker the two patterns above accept
# Already-sent characters a scan sees again when every rule is judged by the stream guard
# (one is what the invariant needs: the character before a match, for ``\b``; a few more
# cost nothing).
_GUARDED_CONTEXT = 16
# A character that ends most secrets: when one arrives, a match that was still growing may
# have become complete, so a blocked stream is re-scanned at once instead of later.
_TERMINATOR = re2.compile(r"[^A-Za-z0-9+/=_.\-]")


class TextStream:
    """Masks one text that arrives in pieces (the text deltas of one content block).

    `push(piece)` returns the masked text that is now safe to send (possibly ""), `flush()`
    the rest at the end of the block. Text is released once no match of any rule can still
    begin in it (the module docstring states the invariant), so that released text was
    masked exactly as masking the whole text at once would mask it. Rules the stream guard
    cannot judge hold the text `hold_back_chars` behind the newest character, and a
    ``-----BEGIN ... PRIVATE KEY-----`` marker without its END marker holds it from its start.

    The hold is bounded by `max_hold_chars`. When it is reached, what is held is released
    masked, and a match still in progress is never let out: its held part becomes one
    ``[MASKED:rule:fp]`` token (the fingerprint of the part seen so far), and its
    continuation is swallowed (dropped, not sent): up to the next character that ends a
    token (`_TERMINATOR`) for a token-like match, up to and including the END marker for a
    private-key block (to the end of the text if none comes). Memory stays bounded: while
    swallowing, only the last characters are kept (an END marker cut in two).

    Each scan looks at a bounded window (the pending text plus `hold_back_chars` of
    already-sent context, reaching back to the start of a step of the whole text's scan that
    would contain its start), not at the whole text. The guard's search starts where the
    previous one found a possible match (such a position only ever moves forward) and costs
    the length of what is held; while a long hold waits, searches and scans happen only when
    the text has grown by a fraction of the hold or a terminator arrives, so a long hold
    costs linear, not quadratic, time.
    """

    def __init__(self, masker: Masker, where: str, hold_back_chars: int, max_hold_chars: int = MAX_HOLD_CHARS) -> None:
        self.masker = masker
        self.where = where
        self.hold_back = max(1, hold_back_chars)
        # Sent text each scan sees again. With the invariant, a match that a scan must find
        # starts at or after the release point; the characters before it are only what its
        # first assertion or context character looks at. Rules judged by the window also
        # need their keywords within it.
        guarded = not masker.enabled or not masker.scanner.stream_guard.full_window
        self.context = _GUARDED_CONTEXT if guarded else self.hold_back
        self.max_hold = max(max_hold_chars, 2 * self.hold_back)
        self.findings: list[Finding] = []
        self._buf = ""  # the text from global offset _base on
        self._base = 0
        self._released = 0  # global offset up to which text has been sent (or swallowed)
        # Where the next scan starts (global offset): never inside a step of the whole
        # text's scan (`_resync`), so that it finds the same matches.
        self._sync = 0
        self._pem_start: int | None = None  # global offset of an unterminated BEGIN marker
        self._pem_next = 0  # where the marker search resumes
        self._blocked_at: int | None = None  # total length at the last scan that was blocked
        self._live = 0  # global offset from which a match could be in progress (never decreases)
        self._live_at: int | None = None  # total length when `_live` was last computed
        self._swallow: str | None = None  # "token" or "pem" while a cut-off match's rest is dropped
        self._swallow_tail = ""  # the last swallowed characters (an END marker cut in two)
        self.swallowed = 0  # characters dropped so far

    @property
    def total(self) -> int:
        return self._base + len(self._buf)

    @property
    def pending(self) -> int:
        """Characters received but not yet released."""
        return self.total - self._released

    def push(self, piece: str) -> str:
        if not piece:
            return ""
        if not self.masker.enabled:
            self._buf += piece
            return self._release_plain()
        if self._swallow is not None:
            piece = self._swallow_piece(piece)
            if not piece:
                return ""
        self._buf += piece
        self._track_pem()
        return self._release(final=False, new=piece)

    def flush(self) -> str:
        if not self.masker.enabled:
            return self._release_plain()
        if self._swallow is not None:  # the text ended inside a cut-off match: nothing more
            self._swallow = None
            self._swallow_tail = ""
            return ""
        return self._release(final=True, new="")

    # -- internals --------------------------------------------------------------------------

    def _release_plain(self) -> str:
        out = self._buf[self._released - self._base :]
        self._released = self.total
        self._trim()
        return out

    def _skip(self, n: int) -> None:
        """Drop `n` characters of swallowed text (the buffer is empty while swallowing)."""
        self._base += n
        self._released = self._sync = self._base
        self._pem_next = self._base
        self.swallowed += n

    def _swallow_piece(self, piece: str) -> str:
        """Drop the part of `piece` that continues a cut-off match; return the rest."""
        if self._swallow == "token":
            m = _TERMINATOR.search(piece)
            if m is None:
                self._skip(len(piece))
                return ""
            self._skip(m.start())
            self._swallow = None
            return piece[m.start() :]
        region = self._swallow_tail + piece
        m = _PEM_END.search(region)
        if m is None:
            self._swallow_tail = region[-_PEM_MARKER_MAX:]
            self._skip(len(piece))
            return ""
        cut = m.end() - len(self._swallow_tail)
        self._skip(cut)
        self._swallow = None
        self._swallow_tail = ""
        return piece[cut:]

    def _track_pem(self) -> None:
        """Follow BEGIN/END private-key markers through the new text (incrementally: only
        the text since the last call, plus enough before it to catch a marker cut in two)."""
        start = max(self._pem_next, self._base)
        region = self._buf[start - self._base :]
        pos = 0
        if self._pem_start is None and "PRIVATE KEY" not in region:
            self._pem_next = max(start, self.total - _PEM_MARKER_MAX)
            return
        while True:
            rx = _PEM_BEGIN if self._pem_start is None else _PEM_END
            m = rx.search(region, pos)
            if m is None:
                break
            self._pem_start = start + m.start() if self._pem_start is None else None
            pos = m.end()
        # Resume where a marker cut by the end of the buffer could still begin.
        self._pem_next = max(start + pos, self.total - _PEM_MARKER_MAX)

    def _live_limit(self, new: str) -> int | None:
        """The offset up to which text may be released now (the invariant), or None when
        nothing new can be released (or a long hold is not re-checked yet)."""
        total, released = self.total, self._released
        start = max(self._live, released)
        held = total - start
        if (
            self._live_at is not None
            and held > self.hold_back
            and total - self._live_at < max(64, held // 4)
            and _TERMINATOR.search(new) is None
        ):
            return None  # a long hold: the match in progress cannot have ended yet
        pending = self._buf[start - self._base :]
        data = pending.encode("utf-8", "replace")  # a lone surrogate is one "?" byte
        p = self.masker.scanner.stream_guard.live_start(data)
        if len(data) != len(pending):
            p = len(data[:p].decode("utf-8", "replace"))
        self._live = start + p
        self._live_at = total
        limit = self._live
        if self.masker.scanner.stream_guard.full_window:
            limit = min(limit, total - self.hold_back)
        if self._pem_start is not None:
            limit = min(limit, max(self._pem_start, released))
        if limit <= released:
            return None
        if self._blocked_at is not None and total - released > self.hold_back:
            # the last scan was held back by a hit that reached past the limit
            grown = total - self._blocked_at
            if grown < max(64, (total - released) // 4) and _TERMINATOR.search(new) is None:
                return None
        return limit

    def _release(self, final: bool, new: str) -> str:
        total = self.total
        released = self._released
        if total == released:
            return ""
        forced = False
        if final:
            limit = total
        elif total - released > self.max_hold:
            # Held too long (a key block without END, an endless match): release what is
            # held, masked, and swallow the rest of a match still in progress.
            forced = final = True
            limit = total
        else:
            found = self._live_limit(new)
            if found is None:
                return ""
            limit = found
        self._blocked_at = None

        # The window: pending text plus already-sent context, from where the whole text's
        # scan would also look (`_sync`), plus one character before it so that \b at the
        # window's start is judged as in the whole text.
        w0 = max(min(released - self.context, self._sync), self._base)
        ctx0 = max(w0 - 1, self._base)
        window = self._buf[ctx0 - self._base :]
        off = ctx0  # global offset of window[0]
        steps: list[tuple[int, int]] = []
        hits = self.masker.scanner.scan(window, w0 - ctx0, released - off, steps)

        # A forced release inside an open private-key block: from the block's start (or the
        # start of the hit that covers it) to the end, all of it becomes one token.
        pem_hit: Hit | None = None
        cut = limit
        if forced and self._pem_start is not None:
            ps = self._pem_start
            for h in hits:
                if off + h.start <= ps < off + h.end:
                    pem_hit = h
                    cut = max(off + h.start, released)
                    break
            self._pem_start = None
            self._pem_next = total

        changed = True
        while changed:
            changed = False
            for h in hits:
                if h is pem_hit:
                    continue
                gs, ge = off + h.start, off + h.end
                if ge <= released or (gs >= cut and off + h.match_start >= cut):
                    continue
                ms = off + h.match_start
                unstable = not final and off + h.match_end >= total
                if unstable or (gs >= cut and ms < cut):
                    # still growing, or its context would leave without its secret (the
                    # next scan must see the whole match): held from the match's start
                    new_cut = max(min(gs, ms), released)
                elif ge > cut:
                    new_cut = max(gs, released)
                else:
                    continue
                if new_cut < cut:
                    cut = new_cut
                    changed = True
        if cut < limit and pem_hit is None:
            self._blocked_at = total
        if cut <= released and pem_hit is None:
            return ""

        parts: list[str] = []
        pos = released
        swallow: str | None = None
        for h in hits:
            if h is pem_hit:
                continue
            gs, ge = off + h.start, off + h.end
            if ge <= released or gs >= cut:
                continue
            # gs < released only for a secret longer than the window, whose start already
            # left before it could be recognised: the rest is still masked.
            s = max(gs, released)
            parts.append(self._buf[pos - self._base : s - self._base])
            parts.append(self._replace(h))
            pos = ge
            if forced and ge >= total:
                swallow = "token"  # the match may go on: its continuation is not released
        parts.append(self._buf[pos - self._base : cut - self._base])
        if pem_hit is not None:
            parts.append(self._replace(pem_hit))
            cut = total
            swallow = "pem"
        self._released = cut
        self._resync(w0, off, steps)
        if swallow is not None:
            self._swallow = swallow
            # the held text's end: an END marker may have begun in it
            self._swallow_tail = self._buf[-_PEM_MARKER_MAX:] if swallow == "pem" else ""
            self._buf = ""
            self._base = self._sync = total
            self._pem_next = total
        else:
            self._trim()
        return "".join(parts)

    def _resync(self, w0: int, off: int, steps: list[tuple[int, int]]) -> None:
        """Choose where the next scan starts, after text up to `_released` left.

        A rule's scan steps from one match to the next (`Scanner.raw_hits`): a scan that
        starts inside one of the whole text's steps (a rejected ``password = password``
        whose value is a match's name, a secret that contains the start of another match)
        can find matches the whole text's scan never sees, and step over ones it finds: a
        leak. So a scan starts `context` characters before the release point, moved back to
        the start of every step (of any rule) that would contain it. This scan started at
        such a position (`w0`), so its steps are the whole text's from there on, as far as
        the text could not still change them: those that start before the release point
        (which is before `live`, the module docstring's invariant).
        """
        target = max(self._released - self.context, w0)
        # Latest start first: a step passed over can contain no later (smaller) target.
        for ms, resume in sorted(steps, reverse=True):
            if off + ms < target < off + resume:
                target = off + ms
        self._sync = target

    def _replace(self, hit: Hit) -> str:
        """The token that replaces `hit` in the released text, its finding noted."""
        fp = self.masker.fingerprint(hit.secret)
        self.findings.append(Finding(hit.rule.id, self.where, fp))
        return mask_token(hit.rule.id, fp)

    def _trim(self) -> None:
        keep_from = max(self._base, min(self._released - self.context, self._sync) - 1)
        if self._pem_start is not None:
            keep_from = min(keep_from, max(self._pem_start, self._base))
        if keep_from - self._base > 4096 or keep_from - self._base > len(self._buf) // 2:
            self._buf = self._buf[keep_from - self._base :]
            self._base = keep_from
