"""Redaction of log text: what the gateway prints can never show a token or a secret.

Pure (no mitmproxy import). Applied to every rendered log line and every line mitmproxy's
Dumper prints (`gatehouse.mitm.logsafety` installs it). In order:

1. literal secrets the gateway holds (its injected API keys), longest first;
2. credential shapes that are never legitimate in a log: JWTs (three base64url parts),
   ``Bearer``/``Basic`` credentials, credential headers (``Authorization: ...``,
   ``x-api-key=...``), passwords in URLs (``http://user:PASSWORD@host``), Anthropic keys;
3. the policy's masker (everything masking replaces on the wire), when there is one.

If anything goes wrong while redacting, the line is withheld rather than printed as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote

REDACTED = "[REDACTED]"

# base64url runs; a JWT's header is base64url JSON, so it starts with "eyJ" ('{"'). A dot may
# arrive percent-encoded (a token in a URL). Every repeat is bounded: these run on whatever a
# client sends (mitmproxy logs a whole unparsable request head), so no pattern may backtrack
# over a long line.
_B64 = r"[A-Za-z0-9_-]"
_DOT = r"(?:\.|%2[eE])"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A JWT (an unsigned one has an empty third part).
    (re.compile(rf"eyJ{_B64}{{4,8192}}{_DOT}{_B64}{{4,16384}}{_DOT}{_B64}{{0,8192}}"), "[REDACTED:jwt]"),
    # Any other three long base64url parts joined by dots (JWS/JWE-like).
    (
        re.compile(rf"(?<![A-Za-z0-9_.-]){_B64}{{16,8192}}{_DOT}{_B64}{{16,16384}}{_DOT}{_B64}{{16,8192}}"),
        "[REDACTED:jwt]",
    ),
    # Credentials after an HTTP auth scheme (in a header, a repr of headers, a message).
    (re.compile(r"(?i)(?<![A-Za-z0-9])(bearer|basic)(\s{1,8}|%20|\+)[A-Za-z0-9._~+/=%-]{4,16384}"), rf"\1\2{REDACTED}"),
    # The value of a credential header, as "name: value", "name=value" or a ('name', 'value')
    # repr; the name may follow a literal "\r\n" of a bytes repr.
    (
        re.compile(
            r"(?i)(?:(?<![A-Za-z0-9-])|(?<=\\r)|(?<=\\n))(proxy-authorization|authorization|x-api-key|x-gatehouse-token|cookie|"
            r"""set-cookie)(['"]?\s{0,8}[:=,]\s{0,8}b?['"]?)(?!(?:bearer|basic)\b)([^\s'",;)\]]{1,16384})"""
        ),
        rf"\1\2{REDACTED}",
    ),
    # A password in a URL's userinfo (not a documentation placeholder such as TOKEN).
    (
        re.compile(
            r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{0,31}://[^/\s:@'\"]{0,256}):(?![A-Z_]{1,16}@)"
            r"([^/\s@'\"]{1,256})@"
        ),
        rf"\1:{REDACTED}@",
    ),
    # Anthropic API keys, whatever the policy's masking says.
    (re.compile(r"sk-ant-[A-Za-z0-9_-]{6,}"), "[REDACTED:anthropic-key]"),
)

MIN_LITERAL = 8  # shorter "secrets" would redact ordinary words
# A longer line is cut here before it is redacted: a log line is not the audit trail, and no
# line a client can make long may cost the event loop more than a bounded scan.
MAX_LINE_CHARS = 16384
# Terminal colours (mitmproxy's flow lines on a tty) would split a header name from its value.
_ANSI = re.compile(r"\x1b\[[0-9;]{0,16}m")
# Escapes of a Python bytes or str repr, as mitmproxy's protocol errors print them.
_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|[rnt0'\"\\])")
# Percent-encoded runs (between these separators) are decoded and checked too, or
# `ghp%5F...` passes every rule.
_SEPARATORS = re.compile(r"([\s'\"]+)")


def carries_credential(text: str) -> bool:
    """Whether `text` holds something shaped like a credential (the shapes above): one place
    for what a credential looks like, for logs and for headers (`gatehouse.wire.headers`)."""
    return any(p.search(text) for p, _ in _PATTERNS)


class Redactor:
    """Redacts text; `literals` and `mask` can be swapped at any time (policy reloads)."""

    def __init__(
        self,
        literals: Iterable[str] = (),
        mask: Callable[[str], str] | None = None,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self._literals: tuple[str, ...] = ()
        self.mask = mask
        # Called before each redaction, e.g. to re-read rotated keys (it calls set_literals).
        self.refresh = refresh
        self.set_literals(literals)

    def set_literals(self, literals: Iterable[str]) -> None:
        values = {v for v in literals if v and len(v) >= MIN_LITERAL}
        self._literals = tuple(sorted(values, key=len, reverse=True))

    def redact(self, text: str, *, dynamic: bool = True) -> str:
        """`text` redacted. ``dynamic=False`` skips `refresh` and `mask` (static rules and the
        literals known so far): for text logged while redacting, which must not recurse."""
        try:
            return self._redact(text, dynamic)
        except Exception as e:  # never print what could not be checked
            return f"[gatehouse: a log line was withheld: redaction failed ({type(e).__name__})]"

    def _redact(self, text: str, dynamic: bool) -> str:
        if not text:
            return text
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + f" [gatehouse: {len(text) - MAX_LINE_CHARS} more characters withheld]"
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        if dynamic and self.refresh is not None:
            self.refresh()
        if "%" in text:
            # Split on separators (linear; a regex over runs would backtrack on long ones).
            text = "".join(
                self._percent_run(piece, dynamic) if "%" in piece else piece for piece in _SEPARATORS.split(text)
            )
        return self._redact_plain(text, dynamic)

    def _percent_run(self, run: str, dynamic: bool) -> str:
        """A percent-encoded run, withheld whole when its decoded form holds anything."""
        decoded = unquote(run)
        if decoded == run:
            return run
        return "[REDACTED:encoded]" if self._redact_plain(decoded, dynamic) != decoded else run

    def _redact_plain(self, text: str, dynamic: bool) -> str:
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, "[REDACTED:gateway-key]")
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        if dynamic and self.mask is not None:
            masked = self.mask(text)
            if masked == text and "\\" in text:
                # A bytes repr (b'a\x00ghp_...') glues an escape's last character to what
                # follows, which hides it from rules that want a boundary there: check the line
                # with escapes as spaces, and print that form when it holds anything.
                spaced = _ESCAPE.sub(" ", text)
                masked_spaced = self.mask(spaced)
                if masked_spaced != spaced:
                    masked = masked_spaced
            text = masked
        return text


class LineRedactor:
    """Redacts a stream of writes line by line, so a secret split across two writes of one
    line is still seen whole. `flush()` emits what is pending (a partial last line)."""

    def __init__(self, redactor: Redactor, emit: Callable[[str], object], max_pending: int = 1 << 20) -> None:
        self.redactor = redactor
        self.emit = emit
        self.max_pending = max_pending
        self._pending = ""

    def write(self, text: str) -> None:
        data = self._pending + text
        head, sep, tail = data.rpartition("\n")
        if sep:
            self.emit(self.redactor.redact(head + sep))
        elif len(tail) > self.max_pending:
            self.emit(self.redactor.redact(tail))
            tail = ""
        self._pending = tail

    def flush(self) -> None:
        if self._pending:
            self.emit(self.redactor.redact(self._pending))
            self._pending = ""
