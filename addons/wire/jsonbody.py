"""Strict JSON for request bodies the gateway inspects, and where a body's parts are in its text.

Python's `json.loads` keeps the last of duplicate keys. A body with two `"messages"` (or two
`"model"`) keys would then be checked on one copy and forwarded with both, and an upstream
that reads the first copy would get what the gateway never inspected. Such bodies are refused.

`loads_spanned` parses a body that is a JSON object the same way, and also says where each
member's value, and each item of one list member (a request's ``messages``), lies in the text:
the exact text of each part, which names it (`Spanned.digest`) without encoding it again. Claude
Code resends its whole conversation every turn; the masker and the recorder remember the parts
they have seen by that name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from json.decoder import scanstring
from typing import Any


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        # The key name is structural (e.g. "messages"), not content; cut it short anyway.
        super().__init__(f"the JSON object has the key {key[:40]!r} twice")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        out[k] = v
    return out


def loads(text: str | bytes) -> Any:
    """`json.loads` that refuses duplicate keys (raises `DuplicateKey`, a ValueError)."""
    return json.loads(text, object_pairs_hook=_no_duplicates)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)
_DECODER_NO_NAN = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
_WS = re.compile(r"[ \t\n\r]*")  # what `json` skips between tokens


@dataclass(frozen=True, slots=True)
class Spanned:
    """A JSON object and where its parts are in `text`: `members` holds each key with the
    start and end of its value; `items`, the spans of the items of the member `split` when it
    is a list (None otherwise)."""

    value: dict[str, Any]
    text: str
    members: tuple[tuple[str, int, int], ...]
    split: str
    items: tuple[tuple[int, int], ...] | None
    # Digests already taken, by span: the masker and the recorder hash the same parts.
    _digests: dict[tuple[int, int], bytes] = field(default_factory=dict, compare=False, repr=False)

    def digest(self, start: int, end: int) -> bytes:
        """The SHA-256 of the exact text (UTF-8) of one part: equal digests, equal parts."""
        d = self._digests.get((start, end))
        if d is None:
            d = self._digests[(start, end)] = hashlib.sha256(
                self.text[start:end].encode("utf-8", "surrogatepass")
            ).digest()
        return d


def loads_spanned(text: str, *, split: str = "messages", allow_nan: bool = True) -> Spanned | None:
    """Parse `text` as `loads` does (duplicate keys refused, at any depth) when it is a JSON
    object, with the spans of its parts. None when it is not an object or is not valid JSON:
    the caller parses it with `loads` (or its own parser), which says why."""
    decode = (_DECODER if allow_nan else _DECODER_NO_NAN).raw_decode
    ws = _WS.match
    try:
        i = ws(text, 0).end()
        if text[i : i + 1] != "{":
            return None
        value: dict[str, Any] = {}
        members: list[tuple[str, int, int]] = []
        items: tuple[tuple[int, int], ...] | None = None
        i = ws(text, i + 1).end()
        if text[i : i + 1] == "}":
            i += 1
        else:
            while True:
                if text[i : i + 1] != '"':
                    return None
                key, i = scanstring(text, i + 1, True)
                if key in value:
                    return None  # `loads` says which key
                i = ws(text, i).end()
                if text[i : i + 1] != ":":
                    return None
                i = ws(text, i + 1).end()
                start = i
                if key == split and text[i : i + 1] == "[":
                    spans: list[tuple[int, int]] = []
                    lst: list[Any] = []
                    i = ws(text, i + 1).end()
                    if text[i : i + 1] == "]":
                        i += 1
                    else:
                        while True:
                            item, end = decode(text, i)
                            lst.append(item)
                            spans.append((i, end))
                            i = ws(text, end).end()
                            c = text[i : i + 1]
                            i += 1
                            if c == "]":
                                break
                            if c != ",":
                                return None
                            i = ws(text, i).end()
                    v: Any = lst
                    items = tuple(spans)
                else:
                    v, i = decode(text, i)
                value[key] = v
                members.append((key, start, i))
                i = ws(text, i).end()
                c = text[i : i + 1]
                i += 1
                if c == "}":
                    break
                if c != ",":
                    return None
                i = ws(text, i).end()
        if ws(text, i).end() != len(text):
            return None
    except (ValueError, RecursionError):
        return None
    return Spanned(value, text, tuple(members), split, items)
