"""Strict JSON for request bodies the gateway inspects, and where a body's parts are in its text.

Python's `json.loads` keeps the last of duplicate keys. A body with two `"messages"` (or two
`"model"`) keys would then be checked on one copy and forwarded with both, and an upstream
that reads the first copy would get what the gateway never inspected. Such bodies are refused.

`loads_spanned` parses a body that is a JSON object the same way, and also says where each
member's value, and each item of one list member (a request's ``messages``), lies in the text:
the exact text of each part, which names it (`Spanned.digest`) without encoding it again. Claude
Code resends its whole conversation every turn; the masker and the recorder remember the parts
they have seen by that name, and with `KnownItems` the parse itself recognises a part (a
message, the tools, the system prompt) whose exact text it parsed before: it is neither decoded
nor hashed again.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import sys
from dataclasses import dataclass, field
from json.decoder import scanstring
from typing import Any

from gatehouse.common.lru import Lru


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
_ITEM_CLOSERS = (",", "]")  # what may follow a list item
_MEMBER_CLOSERS = (",", "}")  # what may follow an object member's value


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
            d = self._digests[(start, end)] = _digest(self.text[start:end])
        return d


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class _KnownItem:
    text: str
    digest: bytes
    pickled: bytes  # the parsed value as it was parsed: unpickled anew for every body
    # No NaN or Infinity in it (none of those words in its text at all): it parses the same
    # where they are refused.
    plain: bool

    @property
    def weight(self) -> int:
        """About the bytes it holds: its text as Python stores it, its pickle, the rest."""
        return sys.getsizeof(self.text) + len(self.pickled) + _ITEM_OVERHEAD


_ITEM_OVERHEAD = 400  # the lookup key (up to HEAD characters), the objects, the map's entry


class KnownItems:
    """Items of split lists (a conversation's messages), and object or list members (its tools,
    its system prompt), whose exact text was parsed before, for `loads_spanned` to take instead
    of decoding and hashing them again: a late turn of a Claude Code session resends a megabyte
    of messages, all but the newest seen on the previous turn, with the same tools and system.

    An item is looked up by the text where it would start (its first `HEAD` characters: a few
    items that share them are kept side by side) and taken only when the body holds its whole
    text there, followed by what may follow it there (a list's next `,` or its `]`; for a
    member, `,` or `}`). JSON values delimit themselves, so that text parses to the same value,
    ending in the same place: the parse is the one `loads_spanned` would make. (The closer
    matters for a scalar, whose text may be the start of a longer one; an object or a list
    closes itself, and whatever follows it is checked by the parse that goes on.) Each taker
    gets a fresh copy of the value (unpickled), since readers mask values in place. Items
    shorter than `min_chars` are not kept: they are cheap to parse, and a body of a million tiny
    items must not fill the map. Bounded by `max_bytes` (about what the texts and their pickles
    take), no item weighing over a sixteenth of it, so that one huge part cannot push out every
    conversation's; shared between threads. `hits` counts the items taken (approximate across
    threads)."""

    HEAD = 256
    MIN_CHARS = 256
    SHARING_A_HEAD = 4  # items kept under one HEAD, most recently parsed first

    def __init__(self, max_bytes: int, *, min_chars: int = MIN_CHARS) -> None:
        self._items: Lru[str, tuple[_KnownItem, ...]] = Lru(max_bytes, weight=lambda v: sum(k.weight for k in v))
        self.min_chars = min_chars
        self.max_item_bytes = max_bytes // 16
        self.hits = 0

    def match(
        self, text: str, start: int, allow_nan: bool, closers: tuple[str, str] = _ITEM_CLOSERS
    ) -> tuple[Any, int, bytes] | None:
        """The item whose text starts at `start` (value, end, digest), if known: followed by one
        of `closers` (a list item's; a member's are ``,`` and ``}``)."""
        candidates = self._items.get(text[start : start + self.HEAD])
        for known in candidates or ():
            if not (allow_nan or known.plain) or not text.startswith(known.text, start):
                continue
            end = start + len(known.text)
            j = _WS.match(text, end).end()
            if text[j : j + 1] not in closers:
                continue  # a number's text is a prefix of a longer number's
            self.hits += 1
            return pickle.loads(known.pickled), end, known.digest
        return None

    def add(self, text: str, start: int, end: int, value: Any, allow_nan: bool) -> bytes:
        """Remember the item `value` parsed from `text[start:end]`; its digest."""
        item_text = text[start:end]
        digest = _digest(item_text)
        # Its weight is about twice its text (the text and its pickle): too heavy, not pickled.
        if end - start < self.min_chars or 2 * sys.getsizeof(item_text) + _ITEM_OVERHEAD > self.max_item_bytes:
            return digest
        try:
            pickled = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except RecursionError:
            return digest  # nested too deeply to copy this way: parsed every time
        plain = not allow_nan or ("NaN" not in item_text and "Infinity" not in item_text)
        item = _KnownItem(item_text, digest, pickled, plain)
        if item.weight > self.max_item_bytes:
            return digest
        head = text[start : start + self.HEAD]
        others = tuple(k for k in self._items.get(head) or () if k.text != item_text)
        self._items.put(head, (item, *others[: self.SHARING_A_HEAD - 1]))
        return digest


def _part(
    text: str,
    i: int,
    decode: Any,
    known: KnownItems | None,
    allow_nan: bool,
    closers: tuple[str, str],
    digests: dict[tuple[int, int], bytes],
) -> tuple[Any, int]:
    """The value at `i` (a split list's item, or a member) and where it ends: taken from `known`
    when it holds that text there, else decoded (and remembered); its digest, when `known`
    gives one, goes into `digests`."""
    if known is not None:
        hit = known.match(text, i, allow_nan, closers)
        if hit is not None:
            value, end, digest = hit
            digests[(i, end)] = digest
            return value, end
    value, end = decode(text, i)
    if known is not None:
        digests[(i, end)] = known.add(text, i, end, value, allow_nan)
    return value, end


def loads_spanned(
    text: str, *, split: str = "messages", allow_nan: bool = True, known: KnownItems | None = None
) -> Spanned | None:
    """Parse `text` as `loads` does (duplicate keys refused, at any depth) when it is a JSON
    object, with the spans of its parts. None when it is not an object or is not valid JSON:
    the caller parses it with `loads` (or its own parser), which says why. With `known`, items of
    `split` and members that are objects or lists, parsed before, are taken from it (with their
    digests) and new ones are added."""
    decode = (_DECODER if allow_nan else _DECODER_NO_NAN).raw_decode
    ws = _WS.match
    digests: dict[tuple[int, int], bytes] = {}
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
                            item, end = _part(text, i, decode, known, allow_nan, _ITEM_CLOSERS, digests)
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
                elif known is not None and text[i : i + 1] in ("[", "{"):
                    # A container member (a request's tools, its system prompt) is the same
                    # every turn too: remembered like an item.
                    v, i = _part(text, i, decode, known, allow_nan, _MEMBER_CLOSERS, digests)
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
    return Spanned(value, text, tuple(members), split, items, digests)
