"""Masking secrets in a request target (path and query), percent-encoded or not.

A secret can reach a URL percent-encoded (``ghp%5F...``, or every character ``%67%68...``),
where a rule run over the raw text sees nothing. Each path segment and each query name and
value is decoded, masked, and re-encoded only when something was masked, so an unchanged URL
keeps its exact bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from gatehouse.exchange import Finding

if TYPE_CHECKING:  # the masker imports neither module; only its type is needed here
    from gatehouse.masking.masker import Masker

# Characters a masked segment may keep unencoded: the replacement `[MASKED:rule:fp]` and the
# sub-delimiters RFC 3986 allows in a segment.
_SAFE_SEGMENT = "[]:@!$&'()*+,;="
_SAFE_QUERY_PART = "[]:@!$'()*+,;/?"


class UnmaskableUrl(ValueError):
    """A secret spans the URL's separators, so it cannot be masked piece by piece."""


def _mask_piece(masker: Masker, raw: str, safe: str, plus_is_space: bool) -> tuple[str, list[Finding]]:
    decoded = unquote(raw.replace("+", " ") if plus_is_space else raw, errors="surrogateescape")
    masked, found = masker.mask_text(decoded, "url")
    if not found:
        return raw, []
    return quote(masked, safe=safe, errors="surrogateescape"), found


def mask_target(masker: Masker, target: str) -> tuple[str, list[Finding]]:
    """`target` (``/path?query``) with every secret masked; raises UnmaskableUrl when a
    secret is still there after masking each piece (it spans a ``/``, ``&`` or ``=``)."""
    path, sep, query = target.partition("?")
    findings: list[Finding] = []
    segments = []
    for seg in path.split("/"):
        masked, found = _mask_piece(masker, seg, _SAFE_SEGMENT, plus_is_space=False)
        segments.append(masked)
        findings.extend(found)
    parts = []
    if sep:
        for pair in query.split("&"):
            # A pair is masked as one text: rules such as `api_key=...` need the name.
            masked, found = _mask_piece(masker, pair, _SAFE_QUERY_PART + "=", plus_is_space=True)
            parts.append(masked)
            findings.extend(found)
    out = "/".join(segments) + (sep + "&".join(parts) if sep else "")
    # What is left must be clean as a whole too, decoded: a secret cut by a separator would
    # otherwise pass as two harmless halves.
    _, rest = masker.mask_text(unquote(out.replace("+", " "), errors="surrogateescape"), "url")
    if rest:
        raise UnmaskableUrl("a secret in the URL spans its separators")
    return out, findings
