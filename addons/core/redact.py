"""Redaction of log text: what the gateway prints can never show a token or a secret.

Pure (no mitmproxy import). Applied to every rendered log line and every line mitmproxy's
Dumper prints (`addons.logsafety` installs it). In order:

1. literal secrets the gateway holds (its injected API keys), longest first;
2. credential shapes that are never legitimate in a log: JWTs (three base64url parts),
   ``Bearer``/``Basic`` credentials, credential headers (``Authorization: ...``,
   ``x-api-key=...``), passwords in URLs (``http://user:PASSWORD@host``), Anthropic keys;
3. the policy's masker (everything masking replaces on the wire), when there is one.

If anything goes wrong while redacting, the line is withheld rather than printed as is.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

REDACTED = "[REDACTED]"

# base64url runs; a JWT's header is base64url JSON, so it starts with "eyJ" ('{"').
_B64 = r"[A-Za-z0-9_-]"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A JWT (an unsigned one has an empty third part).
    (re.compile(rf"eyJ{_B64}{{4,}}\.{_B64}{{4,}}\.{_B64}*"), "[REDACTED:jwt]"),
    # Any other three long base64url parts joined by dots (JWS/JWE-like).
    (re.compile(rf"(?<![A-Za-z0-9_.-]){_B64}{{16,}}\.{_B64}{{16,}}\.{_B64}{{16,}}"), "[REDACTED:jwt]"),
    # Credentials after an HTTP auth scheme (in a header, a repr of headers, a message).
    (re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)[A-Za-z0-9._~+/=%-]{4,}"), rf"\1\2{REDACTED}"),
    # The value of a credential header, as "name: value", "name=value" or a ('name', 'value') repr.
    (re.compile(r"(?i)\b(proxy-authorization|authorization|x-api-key|x-gatehouse-token|cookie|set-cookie)"
                r"""(['"]?\s*[:=,]\s*b?['"]?)(?!(?:bearer|basic)\b)([^\s'",;)\]]+)"""),
     rf"\1\2{REDACTED}"),
    # A password in a URL's userinfo (not a documentation placeholder such as TOKEN).
    (re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]*):(?![A-Z_]{1,16}@)([^/\s@'\"]+)@"),
     rf"\1:{REDACTED}@"),
    # Anthropic API keys, whatever the policy's masking says.
    (re.compile(r"sk-ant-[A-Za-z0-9_-]{6,}"), "[REDACTED:anthropic-key]"),
)

MIN_LITERAL = 8  # shorter "secrets" would redact ordinary words


def carries_credential(text: str) -> bool:
    """Whether `text` holds something shaped like a credential (the shapes above): one place
    for what a credential looks like, for logs and for headers (`addons.core.headers`)."""
    return any(p.search(text) for p, _ in _PATTERNS)


class Redactor:
    """Redacts text; `literals` and `mask` can be swapped at any time (policy reloads)."""

    def __init__(self, literals: Iterable[str] = (), mask: Callable[[str], str] | None = None,
                 refresh: Callable[[], None] | None = None) -> None:
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
        if dynamic and self.refresh is not None:
            self.refresh()
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, "[REDACTED:gateway-key]")
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        if dynamic and self.mask is not None:
            text = self.mask(text)
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
