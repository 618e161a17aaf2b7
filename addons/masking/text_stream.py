"""Masking a text that arrives in pieces (the text deltas of one streamed content block).

`TextStream` releases text only once it is a hold-back window behind the newest character, and
gives the same result as masking the whole text at once for every secret that fits in the
window, and for private-key blocks. A match still growing when the hold limit is reached is
masked, never released, and its continuation is swallowed.
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
# Text is scanned (and released) in batches of at least this many characters: a delta is a
# few characters, and scanning the window after each one would cost ~8x more CPU for no
# visible gain.
_MIN_RELEASE = 32
# A character that ends most secrets: when one arrives, a match that was still growing may
# have become complete, so a blocked stream is re-scanned at once instead of later.
_TERMINATOR = re2.compile(r"[^A-Za-z0-9+/=_.\-]")


class TextStream:
    """Masks one text that arrives in pieces (the text deltas of one content block).

    `push(piece)` returns the masked text that is now safe to send (possibly ""), `flush()`
    the rest at the end of the block. Text is released only once it is `hold_back_chars`
    behind the newest character, so a secret of up to that length is whole in the buffer
    before any of it leaves; a match that is still growing at the end of the buffer, and a
    ``-----BEGIN ... PRIVATE KEY-----`` marker without its END marker, hold the text from
    their start. Released text was masked exactly as masking the whole text at once would
    mask it, for secrets up to the window and private-key blocks.

    The hold is bounded by `max_hold_chars`. When it is reached, what is held is released
    masked, and a match still in progress is never let out: its held part becomes one
    ``[MASKED:rule:fp]`` token (the fingerprint of the part seen so far), and its
    continuation is swallowed (dropped, not sent): up to the next character that ends a
    token (`_TERMINATOR`) for a token-like match, up to and including the END marker for a
    private-key block (to the end of the text if none comes). Memory stays bounded: while
    swallowing, only the last characters are kept (an END marker cut in two).

    Each scan looks at a bounded window (the pending text plus `hold_back_chars` of
    already-sent context), not at the whole text; while a long hold is waiting, re-scans
    happen only when the text has grown by a fraction of the hold or a terminator arrives,
    so a long hold costs linear, not quadratic, time.
    """

    def __init__(self, masker: Masker, where: str, hold_back_chars: int, max_hold_chars: int = MAX_HOLD_CHARS) -> None:
        self.masker = masker
        self.where = where
        self.hold_back = max(1, hold_back_chars)
        self.context = self.hold_back
        self.max_hold = max(max_hold_chars, 2 * self.hold_back)
        self.findings: list[Finding] = []
        self._buf = ""  # the text from global offset _base on
        self._base = 0
        self._released = 0  # global offset up to which text has been sent (or swallowed)
        self._pem_start: int | None = None  # global offset of an unterminated BEGIN marker
        self._pem_next = 0  # where the marker search resumes
        self._blocked_at: int | None = None  # total length at the last scan that was blocked
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
        self._released = self._base
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

    def _release(self, final: bool, new: str) -> str:
        total = self.total
        released = self._released
        if total == released:
            return ""
        forced = False
        if final:
            limit = total
        else:
            limit = total - self.hold_back
            if self._pem_start is not None:
                limit = min(limit, max(self._pem_start, released))
            if total - released > self.max_hold:
                # Held too long (a key block without END, an endless match): release what is
                # held, masked, and swallow the rest of a match still in progress.
                forced = final = True
                limit = total
            elif limit - released < _MIN_RELEASE:
                return ""
            elif self._blocked_at is not None:
                grown = total - self._blocked_at
                if grown < max(64, (total - released) // 4) and _TERMINATOR.search(new) is None:
                    return ""
        self._blocked_at = None

        # The window: pending text plus already-sent context, plus one character before it
        # so that \b at the window's start is judged as in the whole text.
        w0 = max(released - self.context, self._base)
        ctx0 = max(w0 - 1, self._base)
        window = self._buf[ctx0 - self._base :]
        off = ctx0  # global offset of window[0]
        hits = self.masker.scanner.scan(window, w0 - ctx0, released - off)

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
                if ge <= released or gs >= cut:
                    continue
                unstable = not final and off + h.match_end >= total
                if unstable:
                    new_cut = max(min(gs, off + h.match_start), released)
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
        if swallow is not None:
            self._swallow = swallow
            # the held text's end: an END marker may have begun in it
            self._swallow_tail = self._buf[-_PEM_MARKER_MAX:] if swallow == "pem" else ""
            self._buf = ""
            self._base = total
            self._pem_next = total
        else:
            self._trim()
        return "".join(parts)

    def _replace(self, hit: Hit) -> str:
        """The token that replaces `hit` in the released text, its finding noted."""
        fp = self.masker.fingerprint(hit.secret)
        self.findings.append(Finding(hit.rule.id, self.where, fp))
        return mask_token(hit.rule.id, fp)

    def _trim(self) -> None:
        keep_from = max(self._base, self._released - self.context - 1)
        if self._pem_start is not None:
            keep_from = min(keep_from, max(self._pem_start, self._base))
        if keep_from - self._base > 4096 or keep_from - self._base > len(self._buf) // 2:
            self._buf = self._buf[keep_from - self._base :]
            self._base = keep_from
