"""Which HTTP headers cross the gateway, in each direction: an allowlist, every value scanned.

Deny by default. Toward the API only the headers the Claude API and its clients use are
forwarded (seen on the wire from Claude Code and the SDKs; docs/security.md lists them);
toward the client only the API's own. Everything else is dropped, and the exchange's record
names what was dropped. Every forwarded value goes through the masker, and a value that
carries a credential (a JWT, an Anthropic key, a bearer token) is dropped whatever its
header's name: the caller's credentials never leave the gateway, and the gateway injects its
own key after this filter has run.

Framing headers (content-length, transfer-encoding) are mitmproxy's to manage: it validated
them when it read the message and rewrites them when a body changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gatehouse.exchange import Finding
from gatehouse.masking.redact import carries_credential

if TYPE_CHECKING:  # the masker imports neither module; only its type is needed here
    from gatehouse.masking.masker import Masker

# Request headers forwarded to the API (names in lower case).
# Observed from Claude Code 2.1 and the Python SDK 2.15 (docs/security.md), plus the few the
# SDKs set in other configurations (workspace, profile).
REQUEST_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "pragma",
        "user-agent",
        "idempotency-key",
        "x-app",
        "x-client-request-id",
        "x-service-name",
        "anthropic-version",
        "anthropic-beta",
        "anthropic-dangerous-direct-browser-access",
        "anthropic-workspace-id",
        "anthropic-user-profile-id",
        "anthropic-client-platform",
    }
)
# Families whose members change with client versions: SDK metadata and Claude Code's session,
# agent and client headers. Values are scanned like any other.
REQUEST_HEADER_PREFIXES = ("x-stainless-", "x-claude-code-")

# Response headers passed to the client.
RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "transfer-encoding",
        "content-encoding",
        "date",
        "cache-control",
        "request-id",
        "retry-after",
        "retry-after-ms",
        "x-should-retry",
        "anthropic-organization-id",
        "anthropic-workspace-id",
        "x-organization-uuid",
        "x-gatehouse-exchange-id",
    }
)
RESPONSE_HEADER_PREFIXES = ("anthropic-ratelimit-",)

# Framing values mitmproxy has parsed and will rewrite: not scanned (they are numbers or
# codings), and never altered here.
FRAMING = frozenset({"content-length", "transfer-encoding"})

_FOLD = re.compile(r"\r?\n[ \t]+")


@dataclass
class Filtered:
    """Headers to send, in order, and what was left out (names only: values may be secret)."""

    headers: list[tuple[str, str]]
    dropped: list[str] = field(default_factory=list)
    credentials: list[str] = field(default_factory=list)  # dropped because a value held a credential
    findings: list[Finding] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.dropped or self.credentials or self.findings)


def _is_text(value: str) -> bool:
    """Whether a header value (mitmproxy decodes bytes with surrogateescape) is real text: a
    byte that is not UTF-8 cannot be scanned, so its header is not forwarded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(name: str, masker: Masker | None) -> str:
    """A dropped header's name as the record may show it: names are the caller's words too."""
    if not _is_text(name):
        return "(not UTF-8)"
    if carries_credential(name):
        return "(a credential)"
    return masker.mask_text(name)[0] if masker is not None else name


def _filter(
    headers: Iterable[tuple[str, str]],
    names: frozenset[str],
    prefixes: tuple[str, ...],
    masker: Masker | None,
    side: str,
) -> Filtered:
    out = Filtered([])

    def drop(into: list[str], name: str) -> None:
        shown = _shown(name.lower(), masker)
        if shown not in into:
            into.append(shown)

    for name, value in headers:
        n = name.lower()
        if n not in names and not n.startswith(prefixes):
            drop(out.dropped, n)
            continue
        if n in FRAMING:
            out.headers.append((name, value))
            continue
        if not _is_text(name) or not _is_text(value):
            drop(out.dropped, n)
            continue
        if "\n" in value or "\r" in value:
            # An obsolete line folding: a proxy replaces it with a space (RFC 9112 5.2); any
            # other line break in a value is not a header mitmproxy should have let through.
            value = _FOLD.sub(" ", value)
            if "\n" in value or "\r" in value:
                drop(out.dropped, n)
                continue
        if n not in names:
            # A name admitted by its prefix is the caller's words: one holding a secret or a
            # credential is dropped (a name cannot be masked without changing the header).
            if carries_credential(n) or (masker is not None and masker.mask_text(n)[1]):
                drop(out.credentials, n)
                continue
        if carries_credential(value):
            drop(out.credentials, n)
            continue
        if masker is not None:
            value, found = masker.mask_text(value, f"{side}.headers.{n}")
            out.findings.extend(found)
        out.headers.append((name, value))
    return out


def filter_request(headers: Iterable[tuple[str, str]], masker: Masker | None) -> Filtered:
    """The request headers that may go upstream (before the gateway's key is added)."""
    return _filter(headers, REQUEST_HEADERS, REQUEST_HEADER_PREFIXES, masker, "request")


def filter_response(headers: Iterable[tuple[str, str]], masker: Masker | None) -> Filtered:
    """The response headers that may reach the client."""
    return _filter(headers, RESPONSE_HEADERS, RESPONSE_HEADER_PREFIXES, masker, "response")
