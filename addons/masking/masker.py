"""Masking secrets in texts and in JSON bodies (the Claude Messages API and any other).

`Masker` replaces every secret a policy's rules find with ``[MASKED:<rule-id>:<fingerprint>]``
(`gatehouse.masking.fingerprints`).

JSON bodies are masked *deny by default* (`Masker.mask_document`): every string value and
every object key, at any depth, of any block type or field (known or not), is scanned and
masked, except the fields of `BYTE_IDENTICAL_FIELDS` (`gatehouse.masking.byte_identical`),
which the API signs or encrypts (or which are binary media) and which must come back
byte-identical. A base64 source whose media type is not binary (a ``text/plain`` document) is
decoded, scanned, and re-encoded when a secret is found. Within a content list (a message's
content, the system list, a response's content), adjacent texts are also scanned across their
boundary, so that a secret split in two blocks is found (`Masker._join`). `mask_request` and
`mask_response_message` are this same walk; `mask_for_record` masks everything, those fields
included, for the recorder's copy. A streamed text is masked by a `TextStream`
(`Masker.text_stream`).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import sys
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import re2

from gatehouse.common.lru import Lru
from gatehouse.exchange import Finding
from gatehouse.masking.byte_identical import EXEMPT_BY_TYPE, TOOL_BLOCK_TYPES, child_slot, is_binary_media
from gatehouse.masking.config import MaskingPolicy
from gatehouse.masking.fingerprints import fingerprint, fingerprint_key_for, mask_token
from gatehouse.masking.rules import Hit
from gatehouse.masking.text_stream import MAX_HOLD_CHARS, TextStream

if TYPE_CHECKING:  # only its type: the caller parses the document
    from gatehouse.wire.jsonbody import Spanned

# Content lists: the adjacent texts of a list under one of these keys (a message's content,
# the system list, a response's content, at any depth outside tool inputs) are also scanned
# across their boundaries. The texts that take part: string values of `text` and `content`,
# the `data` of a text source, and strings that are direct items of a list, in walk order
# (an object's own strings before its nested lists).
_GROUP_KEYS = frozenset({"content", "system"})
_JOIN_KEYS = frozenset({"text", "content"})
# A boundary match this close to its window's edge widens the window (it may go on).
_JOIN_SLACK = 96

# Short strings known to hold no secret (object keys, enum values such as "text", "object",
# "user"): a body repeats them thousands of times, and a set lookup is ~50x cheaper than a scan.
_CLEAN_CACHE_MAX_LEN = 64
_CLEAN_CACHE_SIZE = 16384
# Long texts found clean, by their exact text, up to about this many bytes in all (a text over a
# sixteenth of it is not kept): the newest turn's texts (a tool's output, a file read) are walked
# twice, for the wire and for the record, and each walk scanned them (a few µs per KB, more
# before RE2's automaton has warmed up). Texts under 1024 characters are mostly unique (log
# lines, URLs, streamed deltas): a miss and a put for each would be overhead for nothing.
# Unmasked text, in memory only, as the flows themselves hold it.
CLEAN_TEXT_BYTES = 16 * 1024 * 1024
_CLEAN_TEXT_MIN_LEN = 1024
_CLEAN_TEXT_OVERHEAD = 112  # the map's entry and the size it holds, beside the text itself

_NO_KEY = object()

# `Masker.mask_spanned` remembers this many parts in which nothing was masked (each entry is a
# digest and a few findings' worth: ~200 bytes), and this many with something masked, which
# keep their masked copy and text, up to this size each (in characters of JSON).
SEEN_LIMIT = 65536
SEEN_MASKED_LIMIT = 512
_SEEN_MASKED_MAX_CHARS = 128 * 1024


def _dumps(value: Any) -> str:
    """Compact JSON, non-ASCII as is: how the gateway writes a body it changed."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class _Unit:
    """What masking one part of a document gave, remembered by the digest of its text."""

    masked: Any  # the masked value; None when nothing in it changed
    text: str | None  # its compact JSON, when it changed
    findings: tuple[tuple[str, str, str], ...]  # (rule, `where` after the part's own path, fingerprint)


class _Seen:
    """The parts `mask_spanned` remembers: two bounded maps, the clean parts and the masked ones."""

    def __init__(self, limit: int, masked_limit: int) -> None:
        self.clean: Lru[tuple[Any, ...], _Unit] = Lru(limit)
        self.masked: Lru[tuple[Any, ...], _Unit] = Lru(masked_limit)

    def get(self, key: tuple[Any, ...]) -> _Unit | None:
        return self.clean.get(key) or self.masked.get(key)

    def put(self, key: tuple[Any, ...], unit: _Unit) -> None:
        (self.clean if unit.masked is None else self.masked).put(key, unit)


@dataclass
class MaskedDocument:
    """What `Masker.mask_spanned` made of a document: its findings, in the walk's order; each
    member's masked value (`values`; the split list's items also in `items`); the digests of
    the parts (`member_digests`, `item_digests`: None for a document walked whole), which name
    them for the recorder's cache; and what changed, for `encode`."""

    doc: Spanned
    record: bool
    findings: list[Finding] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    items: list[Any] | None = None
    item_digests: list[bytes] | None = None
    member_digests: dict[str, bytes] = field(default_factory=dict)
    # Member -> its masked JSON text (None: the split list, spliced from `changed_items`).
    changed: dict[str, str | None] = field(default_factory=dict)
    changed_items: dict[int, str] = field(default_factory=dict)
    whole: bool = False

    def full(self, root: dict[str, Any]) -> None:
        """The document was walked whole, in place (no parts, no digests)."""
        self.whole = True
        self.values = root
        split = root.get(self.doc.split)
        self.items = split if isinstance(split, list) else None
        self.item_digests = None
        self.member_digests = {}

    def encode(self) -> str:
        """The masked document as JSON text: the parts that did not change are the original's
        text as it came, the others their compact masked JSON."""
        if not self.findings:  # nothing masked, nothing changed
            return self.doc.text
        if self.whole:
            return _dumps(self.values)
        text = self.doc.text
        parts: list[str] = []
        for k, a, b in self.doc.members:
            if k not in self.changed:
                vt = text[a:b]
            elif self.changed[k] is not None:
                vt = self.changed[k]  # type: ignore[assignment]
            else:
                spans = self.doc.items or ()
                got = self.changed_items
                vt = "[" + ",".join(got[i] if i in got else text[ia:ib] for i, (ia, ib) in enumerate(spans)) + "]"
            parts.append(f"{_dumps(k)}:{vt}")
        return "{" + ",".join(parts) + "}"


def format_where(path: tuple[str | int, ...]) -> str:
    """``("messages", 3, "content", 1, "content")`` -> ``messages[3].content[1].content``."""
    out: list[str] = []
    for p in path:
        if isinstance(p, int):
            out.append(f"[{p}]")
        else:
            out.append(f".{p}" if out else p)
    return "".join(out)


# A finding's `where` names at most this many levels: deeper, it is the innermost ones after
# "...", so that many findings deep in a hostile body cost linear, not quadratic, time.
MAX_WHERE_DEPTH = 48


def _where(pnode: Any, key: Any = _NO_KEY) -> str:
    """The `where` of a path kept as a linked list ``(parent, key)`` (built only for findings:
    a walk 100,000 levels deep must not copy a path tuple per level)."""
    parts: list[Any] = [] if key is _NO_KEY else [key]
    while pnode is not None and len(parts) < MAX_WHERE_DEPTH:
        parts.append(pnode[1])
        pnode = pnode[0]
    parts.reverse()
    where = format_where(tuple(parts))
    if pnode is not None:
        return "..." + (where if where.startswith("[") else "." + where)
    return where


def _copy_json(obj: Any) -> Any:
    """A deep copy of dicts and lists (other values shared), without recursion.

    The dict and list branches are written out, not shared through a helper: a call per value
    cost about a fifth of `mask_request` on a 1 MB body (benchmarks/masking_throughput.py).
    """
    if isinstance(obj, dict):
        root: Any = {}
    elif isinstance(obj, list):
        root = []
    else:
        return obj
    stack = [(obj, root)]
    while stack:
        src, dst = stack.pop()
        if isinstance(src, dict):
            for k, v in src.items():
                if isinstance(v, dict):
                    nv: Any = {}
                    stack.append((v, nv))
                elif isinstance(v, list):
                    nv = []
                    stack.append((v, nv))
                else:
                    nv = v
                dst[k] = nv
        else:
            for v in src:
                if isinstance(v, dict):
                    nv = {}
                    stack.append((v, nv))
                elif isinstance(v, list):
                    nv = []
                    stack.append((v, nv))
                else:
                    nv = v
                dst.append(nv)
    return root


# JSON string literals in a text that may not be valid JSON (a tool input cut by max_tokens):
# a quote, then characters or escapes, then a closing quote or the end of the text.
_JSON_STRING = re2.compile(r'"((?:[^"\\]|\\[\s\S])*)("|\\?\z)')
_JSON_ESCAPE = re2.compile(r"\\(u[0-9a-fA-F]{4}|[\s\S])")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}


def _json_unescape(body: str) -> str:
    """Decode the escapes of a JSON string body leniently (unknown escapes keep their
    character; surrogate pairs are joined)."""

    def repl(m: Any) -> str:
        e = m.group(1)
        if len(e) == 5:
            return chr(int(e[1:], 16))
        return _SIMPLE_ESCAPES.get(e, e)

    out = _JSON_ESCAPE.sub(repl, body)
    if any("\ud800" <= c <= "\udfff" for c in out):
        out = out.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return out


@dataclass(frozen=True, slots=True)
class Span:
    """A masked span of a text, for tools (the CLI): character offsets in the input."""

    rule: str
    start: int
    end: int
    fingerprint: str


class Masker:
    """Masks texts and JSON bodies with a policy's rules. Thread-safe."""

    def __init__(self, policy: MaskingPolicy, fingerprint_key: bytes) -> None:
        if not fingerprint_key:
            raise ValueError("fingerprint_key must not be empty")
        self.policy = policy
        self.scanner = policy.scanner
        self._key = fingerprint_key
        self._clean: set[str] = set()
        self._clean_texts: Lru[str, int] = Lru(CLEAN_TEXT_BYTES, weight=lambda size: size)
        self._clean_text_max = CLEAN_TEXT_BYTES // 16
        # Parts of documents masked before (`mask_spanned`): the clean ones (most) and the
        # ones with something masked, which hold their masked copy, apart and fewer.
        self._seen: _Seen = _Seen(SEEN_LIMIT, SEEN_MASKED_LIMIT)
        # Adjacent texts are scanned across their boundary over this many characters on each
        # side (grown while a match reaches the window's edge, up to MAX_HOLD_CHARS).
        self.join_window = max(policy.hold_back_chars, 64)

    def __repr__(self) -> str:  # never show the key
        return f"Masker(rules={len(self.policy.rules)})"

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    # -- texts ------------------------------------------------------------------------------

    def fingerprint(self, secret: str) -> str:
        return fingerprint(self._key, secret)

    def replacement(self, rule_id: str, secret: str) -> str:
        return mask_token(rule_id, self.fingerprint(secret))

    def _hits(self, s: str) -> list[Hit]:
        """`scanner.scan(s)`, skipping strings already seen clean (the same text scans the same)."""
        if len(s) <= _CLEAN_CACHE_MAX_LEN:
            if s in self._clean:
                return []
            hits = self.scanner.scan(s)
            if not hits:
                clean = self._clean
                if len(clean) >= _CLEAN_CACHE_SIZE:
                    clean.clear()
                clean.add(s)
            return hits
        if len(s) < _CLEAN_TEXT_MIN_LEN or not self.enabled:
            return self.scanner.scan(s)
        if self._clean_texts.get(s) is not None:
            return []
        hits = self.scanner.scan(s)
        if not hits:
            size = sys.getsizeof(s) + _CLEAN_TEXT_OVERHEAD
            if size <= self._clean_text_max:
                self._clean_texts.put(s, size)
        return hits

    def _apply(self, text: str, hits: list[Hit]) -> tuple[str, list[tuple[Hit, str]]]:
        parts: list[str] = []
        done: list[tuple[Hit, str]] = []
        last = 0
        for h in hits:
            fp = self.fingerprint(h.secret)
            parts.append(text[last : h.start])
            parts.append(mask_token(h.rule.id, fp))
            last = h.end
            done.append((h, fp))
        parts.append(text[last:])
        return "".join(parts), done

    def mask_text(self, text: str, where: str = "") -> tuple[str, list[Finding]]:
        """`text` with every secret replaced, and one Finding per replacement."""
        if not text:
            return text, []
        hits = self._hits(text)
        if not hits:
            return text, []
        masked, done = self._apply(text, hits)
        return masked, [Finding(h.rule.id, where, fp) for h, fp in done]

    def mask_spans(self, text: str) -> tuple[str, list[Span]]:
        """Like `mask_text`, with the character offsets (in `text`) of what was replaced."""
        hits = self._hits(text) if text else []
        if not hits:
            return text, []
        masked, done = self._apply(text, hits)
        return masked, [Span(h.rule.id, h.start, h.end, fp) for h, fp in done]

    def mask_json_text(self, text: str, where: str = "") -> tuple[str, list[Finding]]:
        """Mask a text that should be JSON but may not be (a tool input cut short by
        max_tokens, an event's data): each string literal is decoded (``\\u0067``, ``\\/``...)
        and scanned, and re-encoded masked when it holds a secret; then the whole text is
        scanned as it is (unquoted secrets, and rules that read ``"key": "value"`` context)."""
        if not text or not self.enabled:
            return text, []
        found: list[Finding] = []
        if "\\" in text:
            parts: list[str] = []
            last = 0
            for m in _JSON_STRING.finditer(text):
                body = m.group(1)
                if "\\" not in body:
                    continue
                closed = m.group(2) == '"'
                decoded = _json_unescape(body)
                masked, f = self.mask_text(decoded, where)
                if not f:
                    continue
                found.extend(f)
                parts.append(text[last : m.start()])
                parts.append(json.dumps(masked, ensure_ascii=False)[: None if closed else -1])
                last = m.end()
            if parts:
                parts.append(text[last:])
                text = "".join(parts)
        text, f = self.mask_text(text, where)
        found.extend(f)
        return text, found

    def text_stream(
        self, where: str = "", hold_back_chars: int | None = None, max_hold_chars: int = MAX_HOLD_CHARS
    ) -> TextStream:
        return TextStream(self, where, hold_back_chars or self.policy.hold_back_chars, max_hold_chars)

    # -- JSON values: the generic walk ------------------------------------------------------

    def _mask_base64(self, node: dict[str, Any], key: Any, value: str, pnode: Any, out: list[Finding]) -> None:
        """The `data` of a base64 source whose media type is not binary: decoded, scanned, and
        re-encoded masked when it holds a secret. Data that is not base64 is scanned as it is."""
        try:
            # Line-wrapped (the base64 tool, MIME) or unpadded base64 is still base64 to a
            # reader: decode it as one, or the secret inside is never seen.
            compact = "".join(value.split())
            raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            hits = self._hits(value)
            if hits:
                self._put_masked(node, key, value, hits, pnode, out)
            return
        text = raw.decode("utf-8", "surrogateescape")
        hits = self.scanner.scan(text)
        if hits:
            masked, done = self._apply(text, hits)
            node[key] = base64.b64encode(masked.encode("utf-8", "surrogateescape")).decode("ascii")
            w = _where(pnode)
            out.extend(Finding(h.rule.id, w, fp) for h, fp in done)
            return
        # Some secrets are valid base64 themselves (`AKIA...` decodes to noise): what goes on
        # the wire is the value, so the value is scanned as text too.
        hits = self._hits(value)
        if hits:
            self._put_masked(node, key, value, hits, pnode, out)

    def _put_masked(self, node: Any, key: Any, text: str, hits: list[Hit], pnode: Any, out: list[Finding]) -> None:
        """``node[key]`` = `text` with `hits` masked, their findings (at path node `pnode`) onto `out`."""
        node[key], done = self._apply(text, hits)
        w = _where(pnode)
        out.extend(Finding(h.rule.id, w, fp) for h, fp in done)

    def _walk(
        self,
        root: Any,
        out: list[Finding],
        base: Any,
        *,
        exempt: bool,
        join: bool,
        free: bool = False,
        block: bool = False,
        group_root: bool = False,
    ) -> None:
        """Mask, in place, every string value and every object key inside the dict or list
        `root`. `exempt`: leave `BYTE_IDENTICAL_FIELDS` as they are (False for the record);
        `join`: scan the adjacent texts of content lists across their boundaries; `free`: the
        root is free JSON (a tool input): no exemption applies; `block`: the root is a content
        block; `group_root`: the root is a content list (under `content` or `system`) whose
        adjacent texts are joined. Iterative; each string is scanned once (plus boundary windows
        of joined texts).

        An exemption applies only where the API puts such an object (a "slot"): a block of a
        message's or a response's content list, the block or delta of a streamed event, the
        results of a server tool, a citation of a block, the source of an image or document.
        The same type anywhere else (inside an error, a tool result, another endpoint's body)
        is scanned like everything else."""
        hits_of = self._hits
        apply = self._apply
        exempt_by_type = EXEMPT_BY_TYPE if exempt else {}
        join_keys = _JOIN_KEYS
        tool_types = TOOL_BLOCK_TYPES
        # (node, path node, free, group, slot); node None: the end of `group`, whose texts are
        # joined. `slot`: a dict sits where the API puts blocks; a list's items do.
        stack: list[tuple[Any, Any, bool, Any, bool]] = [(root, base, free, None, block)]
        if group_root:
            g: list[Any] = []
            stack = [(None, None, False, g, False), (root, base, free, g, block)]
        while stack:
            node, pnode, free, group, slot = stack.pop()
            if node is None:
                self._join(group, out)
                continue
            children: list[tuple[Any, Any, bool, Any, bool]] = []
            if type(node) is dict:
                t = node.get("type")
                ex = None
                if type(t) is not str:
                    t = None
                elif not free and slot:
                    ex = exempt_by_type.get(t)
                renames: list[tuple[Any, str]] | None = None
                for k, v in node.items():
                    mk = k
                    if type(k) is str and k:
                        kh = hits_of(k)
                        if kh:
                            mk, done = apply(k, kh)
                            w = _where(pnode, mk)
                            out.extend(Finding(h.rule.id, w, fp) for h, fp in done)
                            if renames is None:
                                renames = []
                            renames.append((k, mk))
                    tv = type(v)
                    if tv is str:
                        if not v:
                            continue
                        if ex is not None and k in ex:
                            if t == "base64" and not is_binary_media(node):
                                self._mask_base64(node, k, v, (pnode, mk), out)
                            continue
                        if not exempt and t == "base64" and k == "data" and not is_binary_media(node):
                            self._mask_base64(node, k, v, (pnode, mk), out)
                            continue
                        hits = hits_of(v)
                        if hits:
                            self._put_masked(node, k, v, hits, (pnode, mk), out)
                        if group is not None and (k in join_keys or (k == "data" and t == "text")):
                            group.append((node, k, (pnode, mk), v, hits))
                    elif tv is dict or tv is list:
                        # An error carries the upstream's words: nothing in it is exempt.
                        cfree = free or (k == "input" and t in tool_types) or k == "error"
                        if cfree:
                            children.append((v, (pnode, mk), True, None, False))
                            continue
                        cslot = child_slot(t, k, tv is list, slot)
                        if join and group is None and tv is list and k in _GROUP_KEYS:
                            g = []
                            children.append((v, (pnode, mk), False, g, cslot))
                            children.append((None, None, False, g, False))
                        else:
                            children.append((v, (pnode, mk), False, group, cslot))
                if renames is not None:
                    self._rename_keys(node, renames)
            else:  # a list
                for i, v in enumerate(node):
                    tv = type(v)
                    if tv is str:
                        if not v:
                            continue
                        hits = hits_of(v)
                        if hits:
                            self._put_masked(node, i, v, hits, (pnode, i), out)
                        if group is not None:
                            group.append((node, i, (pnode, i), v, hits))
                    elif tv is dict or tv is list:
                        children.append((v, (pnode, i), free, group, slot and tv is dict))
            if children:
                children.reverse()
                stack.extend(children)

    @staticmethod
    def _rename_keys(node: dict[str, Any], renames: list[tuple[Any, str]]) -> None:
        """Replace keys by their masked form, in place, keeping the order. A masked key that
        collides with another key gets a suffix ``#2``, ``#3``... (deterministic: by order)."""
        new_names = dict(renames)
        taken = {k for k in node if k not in new_names}
        final: dict[Any, Any] = {}
        for old, new in renames:
            name, n = new, 2
            while name in taken:
                name = f"{new}#{n}"
                n += 1
            taken.add(name)
            final[old] = name
        items = list(node.items())
        node.clear()
        for k, v in items:
            node[final.get(k, k)] = v

    def _join(self, refs: list[Any], out: list[Finding]) -> None:
        """Find secrets split across adjacent texts of one content list, and mask them.

        The texts are seen as if concatenated (T); around each boundary only a window of
        `join_window` characters on each side is scanned (widened to the start of a secret
        of the previous text that ends within that window, to the end of one of the next text
        that starts within it, and doubled while a match touches the window's edge). A match that crosses a
        boundary (its secret, or its context) is merged with the texts' own hits, and each
        text it touches is rebuilt from its original: the text where the secret starts gets
        the ``[MASKED:rule:fp]`` token, the following texts lose their part of the secret
        (removed). So the output depends only on the input (deterministic), and masking the
        output again changes nothing.
        """
        refs = [r for r in refs if r[3]]
        if len(refs) < 2:
            return
        origs = [r[3] for r in refs]
        starts: list[int] = []
        pos = 0
        for s in origs:
            starts.append(pos)
            pos += len(s)
        total = pos
        bounds = starts[1:]
        W = self.join_window
        cap = MAX_HOLD_CHARS
        wins: list[list[int]] = []
        for j in range(1, len(refs)):
            b = starts[j]
            lo, hi = b - W, b + W
            prev_hits = refs[j - 1][4]
            if prev_hits:
                last = prev_hits[-1]
                if len(origs[j - 1]) - last.end <= W:
                    lo = min(lo, starts[j - 1] + last.match_start)
            next_hits = refs[j][4]
            if next_hits:
                first = next_hits[0]
                if first.start <= W:
                    hi = max(hi, b + first.match_end)
            lo = max(lo, 0, b - cap)
            hi = min(hi, total, b + cap)
            if wins and lo <= wins[-1][1]:
                wins[-1][0] = min(wins[-1][0], lo)
                wins[-1][1] = max(wins[-1][1], hi)
            else:
                wins.append([lo, hi])

        T = "".join(origs)

        def crosses(a: int, z: int) -> bool:
            i = bisect_right(bounds, a)
            return i < len(bounds) and bounds[i] < z

        crossing: list[Hit] = []
        scan = self.scanner.scan
        for lo, hi in wins:
            while True:
                c0 = lo - 1 if lo > 0 else 0
                found: list[Hit] = []
                grow_l = grow_r = False
                for h in scan(T[c0:hi], lo - c0):
                    s, e, ms, me = h.start + c0, h.end + c0, h.match_start + c0, h.match_end + c0
                    if crosses(s, e) or crosses(ms, me):
                        found.append(Hit(h.rule, s, e, ms, me, h.secret))
                        # near an edge, the match may go on beyond it (a private-key block
                        # whose last line in the window is too short to match, a long token)
                        grow_l = grow_l or (ms <= lo + _JOIN_SLACK and lo > 0)
                        grow_r = grow_r or (me >= hi - _JOIN_SLACK and hi < total)
                if not (grow_l or grow_r) or hi - lo >= 2 * cap:
                    break
                width = hi - lo
                if grow_l:
                    lo = max(0, lo - width)
                if grow_r:
                    hi = min(total, hi + width)
            crossing.extend(found)
        if not crossing:
            return

        own: list[Hit] = []
        own_spans: set[tuple[int, int, str]] = set()
        for j, r in enumerate(refs):
            a = starts[j]
            for h in r[4]:
                own.append(Hit(h.rule, h.start + a, h.end + a, h.match_start + a, h.match_end + a, h.secret))
                own_spans.add((h.start + a, h.end + a, h.rule.id))
        resolved = self.scanner.resolve(own + crossing)
        r_starts = [R.start for R in resolved]
        r_ends = [R.end for R in resolved]
        new_idx: set[int] = set()
        for c in crossing:  # the resolved hit that contains each crossing hit
            new_idx.add(bisect_right(r_starts, c.start) - 1)
        affected: set[int] = set()
        for i in sorted(new_idx):
            R = resolved[i]
            if (R.start, R.end, R.rule.id) not in own_spans:
                j = bisect_right(starts, R.start) - 1
                out.append(Finding(R.rule.id, _where(refs[j][2]), self.fingerprint(R.secret)))
            affected.update(range(bisect_right(starts, R.start) - 1, bisect_right(starts, R.end - 1)))
        for j in sorted(affected):
            a = starts[j]
            z = a + len(origs[j])
            parts: list[str] = []
            last_pos = a
            i = bisect_right(r_ends, a)
            while i < len(resolved) and resolved[i].start < z:
                R = resolved[i]
                i += 1
                s = max(R.start, a)
                parts.append(T[last_pos:s])
                if R.start >= a:  # the secret starts here: the token; otherwise its part is removed
                    parts.append(self.replacement(R.rule.id, R.secret))
                last_pos = min(R.end, z)
            parts.append(T[last_pos:z])
            container, key = refs[j][0], refs[j][1]
            container[key] = "".join(parts)

    def mask_document(self, doc: Any, where: str = "", *, block: bool = False) -> list[Finding]:
        """Mask a JSON value in place, deny by default: every string value and object key at
        any depth, except `BYTE_IDENTICAL_FIELDS`; text base64 sources decoded and scanned;
        adjacent texts of content lists joined. For a request, a response, an error body or
        any other endpoint's body. A bare string cannot be masked in place: use
        `mask_json_value` (or `mask_text`)."""
        out: list[Finding] = []
        if not self.enabled:
            return out
        if isinstance(doc, str):
            raise TypeError("mask_document masks dicts and lists in place; use mask_json_value for a string")
        if isinstance(doc, (dict, list)):
            self._walk(doc, out, (None, where) if where else None, exempt=True, join=True, block=block)
        return out

    def mask_json_value(self, value: Any, where: str = "") -> tuple[Any, list[Finding]]:
        """Like `mask_document`, for any JSON value, strings included: returns the value."""
        if isinstance(value, str):
            return self.mask_text(value, where) if self.enabled else (value, [])
        return value, self.mask_document(value, where)

    def mask_value(self, value: Any, where: str = "") -> tuple[Any, list[Finding]]:
        """A free JSON value (a tool input) with every string value and key masked (nothing
        is exempt); masks in place when it is a dict or list. Findings' `where` extends
        `where` with the keys inside the value."""
        out: list[Finding] = []
        if not self.enabled:
            return value, out
        if isinstance(value, str):
            return self.mask_text(value, where)
        if isinstance(value, (dict, list)):
            self._walk(value, out, (None, where) if where else None, exempt=True, join=False, free=True)
        return value, out

    # -- the Messages API -------------------------------------------------------------------

    def mask_request(self, body: Any) -> list[Finding]:
        """Mask a `/v1/messages` (or count_tokens, or any JSON) request body in place, with
        the generic walk: it stays valid for the API (signed, encrypted and binary fields are
        byte-identical)."""
        return self.mask_document(body) if isinstance(body, (dict, list)) else []

    def mask_response_message(self, msg: Any, *, join_adjacent: bool = True) -> list[Finding]:
        """Mask a Messages API response (or error body) in place, with the generic walk.
        Thinking blocks and signatures are untouched: the client sends them back, signed.
        `join_adjacent=False` masks each text on its own, as the streaming pipeline does."""
        out: list[Finding] = []
        if not self.enabled or not isinstance(msg, (dict, list)):
            return out
        self._walk(msg, out, None, exempt=True, join=join_adjacent)
        return out

    # -- documents with parts seen before ----------------------------------------------------

    def mask_spanned(self, doc: Spanned, *, record: bool = False, where: str = "") -> MaskedDocument:
        """Mask a JSON object parsed with `loads_spanned`, remembering each part by the digest
        of its exact text: a part seen before (with the same context) is not walked again; its
        masked form and findings come from the cache, the findings' `where` rebuilt for where
        the part is now (a message's index changes from turn to turn).

        The parts are the object's container members (``system``, ``tools``...) and the items
        of its `doc.split` list (each message). The result equals the walk's: `mask_request` on
        the object (`record` False) or, with `record` True, `mask_for_record` of an object
        holding it under the key `where` (``"body"``): same masked values, same findings, in
        the same order. An object the shortcut does not cover (a ``type`` member, a key that
        holds a secret) is walked whole. `doc.value` is masked in part in place: use the
        result's `values`, `items` and `encode()`."""
        exempt = not record
        base = (None, where) if where else None
        shape_base = (where,) if where else ()
        result = MaskedDocument(doc, record)
        root = doc.value
        if not self.enabled:
            result.full(root)
            return result
        if type(root.get("type")) is str or any(type(k) is str and k and self._hits(k) for k in root):
            if record:
                self._walk(root, result.findings, base, exempt=False, join=True)
            else:
                result.findings.extend(self.mask_request(root))
            result.full(root)
            return result
        out = result.findings
        # The walk masks an object's own strings before it goes into its members: here they
        # are masked as an object of their own, with the same paths.
        own = {k: v for k, v in root.items() if type(v) is str and v}
        if record:
            self._walk(own, out, base, exempt=False, join=True)
        else:
            out.extend(self.mask_request(own))
        for k, v in root.items():
            if k in own and own[k] != v:
                root[k] = own[k]
                result.changed[k] = _dumps(own[k])
            result.values[k] = root[k]
        for k, a, b in doc.members:
            v = root[k]
            tv = type(v)
            if tv is not dict and tv is not list:
                continue
            pnode = (base, k)
            free = k == "error"  # an error carries the upstream's words: nothing in it is exempt
            slot = False if free else child_slot(None, k, tv is list, False)
            grouped = not free and tv is list and k in _GROUP_KEYS
            if k == doc.split and doc.items is not None and not free and not grouped:
                result.items = items = list(v)
                result.item_digests = digests = [b""] * len(items)
                for i, item in enumerate(items):  # strings first, as the walk does
                    if type(item) is str and item:
                        hits = self._hits(item)
                        if hits:
                            self._put_masked(items, i, item, hits, (pnode, i), out)
                            result.changed_items[i] = _dumps(items[i])
                for i, item in enumerate(items):
                    ti = type(item)
                    ia, ib = doc.items[i]
                    digests[i] = doc.digest(ia, ib)
                    if ti is dict or ti is list:
                        shape = (*shape_base, k, int)
                        items[i], text = self._unit(
                            item, digests[i], (pnode, i), shape, exempt, False, slot and ti is dict, False, out, ib - ia
                        )
                        if text is not None:
                            result.changed_items[i] = text
                result.values[k] = items
                if result.changed_items:
                    result.changed[k] = None  # spliced from its items by `encode`
                continue
            digest = doc.digest(a, b)
            result.member_digests[k] = digest
            result.values[k], text = self._unit(
                v, digest, pnode, (*shape_base, k), exempt, free, slot, grouped, out, b - a
            )
            if text is not None:
                result.changed[k] = text
        return result

    def _unit(
        self,
        value: Any,
        digest: bytes,
        pnode: Any,
        shape: tuple[Any, ...],
        exempt: bool,
        free: bool,
        slot: bool,
        grouped: bool,
        out: list[Finding],
        size: int,
    ) -> tuple[Any, str | None]:
        """One part of `mask_spanned`: (its masked value, its masked JSON text or None when
        unchanged), findings onto `out`. Remembered by everything the walk of it depends on:
        the mode, where it sits (its path's shape, not its index), and its text's digest."""
        key = (exempt, shape, free, slot, grouped, digest)
        hit = self._seen.get(key)
        if hit is not None:
            if hit.findings:  # the path is spelled out only when a finding names it
                prefix = _where(pnode)
                out.extend(Finding(rule, prefix + rest, fp) for rule, rest, fp in hit.findings)
            if hit.masked is None:
                return value, None
            return hit.masked, hit.text
        prefix = _where(pnode)
        found: list[Finding] = []
        self._walk(value, found, pnode, exempt=exempt, join=True, free=free, block=slot, group_root=grouped)
        out.extend(found)
        text = _dumps(value) if found else None
        if found and size > _SEEN_MASKED_MAX_CHARS:
            return value, text
        n = len(prefix)
        rel: list[tuple[str, str, str]] = []
        for f in found:
            w = f.where
            # A `where` cut short ("...", a part nested very deeply) cannot be rebuilt elsewhere.
            if not w.startswith(prefix) or w[n : n + 1] not in ("", ".", "["):
                return value, text
            rel.append((f.rule, w[n:], f.fingerprint))
        unit = _Unit(value if found else None, text, tuple(rel))
        self._seen.put(key, unit)
        return value, text

    def mask_for_record(self, obj: Any) -> tuple[Any, list[Finding]]:
        """A deep copy of `obj` with every string masked (dict keys too), thinking and
        signatures included: the recorder's copy, which nobody sends back to the API."""
        out: list[Finding] = []
        if isinstance(obj, str):
            return self.mask_text(obj) if self.enabled else (obj, out)
        copied = _copy_json(obj)
        if not isinstance(copied, (dict, list)):
            return copy.deepcopy(obj), out
        if self.enabled:
            self._walk(copied, out, None, exempt=False, join=True)
        return copied, out


def build_masker(policy: MaskingPolicy | None, state_dir: Path) -> Masker | None:
    """The gateway's masker for a policy's `[masking]` section (None when masking is off).
    Build it once per policy load and hand the same one to the Masking addon and the
    recorder. Raises FingerprintKeyError (and OSError) when the key is unusable."""
    if policy is None or not policy.enabled:
        return None
    return Masker(policy, fingerprint_key_for(policy, state_dir))
