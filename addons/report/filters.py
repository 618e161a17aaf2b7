"""The Jinja filters of the pages (times, durations, numbers, masked spans, JSON) and the masked-span
format they mark.

Recorded content reaches HTML only through autoescape or `masked_text`, which escapes first and
then marks each ``[MASKED:rule:fp]`` span; data for scripts goes through `json_for_script`, with
``<``, ``>`` and ``&`` escaped.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

# `[MASKED:<rule-id>:<fingerprint>]`, as gatehouse.masking.masker writes it.
MASK_RE = re.compile(r"\[MASKED:([a-z0-9._-]{1,64}):([0-9a-f]{4,64})\]")


def fmt_time(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def fmt_int(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


def json_for_script(value: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: no ``</script>``, no ``<!--``."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


def masked_text(text: Any) -> Markup:
    """Escaped text with each ``[MASKED:rule:fp]`` span marked (the Jinja ``masked`` filter)."""
    if text is None:
        return Markup("")
    if not isinstance(text, str):
        text = str(text)
    out: list[str] = []
    pos = 0
    for m in MASK_RE.finditer(text):
        out.append(str(escape(text[pos : m.start()])))
        rule, fp = m.group(1), m.group(2)
        out.append(
            f'<mark class="mask" data-rule="{escape(rule)}" title="secret masked by rule '
            f'{escape(rule)}, fingerprint {escape(fp)}">'
            f'<span class="mask-rule">{escape(rule)}</span><span class="mask-fp">{escape(fp)}</span>'
            f'<span class="mask-raw">{escape(m.group(0))}</span></mark>'
        )
        pos = m.end()
    out.append(str(escape(text[pos:])))
    return Markup("".join(out))


def count_masks(text: Any, seen: set[tuple[str, str]] | None = None) -> int:
    """The masked spans in `text`; each (rule, fingerprint) is added to `seen`."""
    if not isinstance(text, str) or "[MASKED:" not in text:
        return 0
    n = 0
    for m in MASK_RE.finditer(text):
        n += 1
        if seen is not None:
            seen.add((m.group(1), m.group(2)))
    return n


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
