"""Masking secrets in texts and in JSON bodies (the Claude Messages API and any other).

`Masker` replaces every secret a policy's rules find with ``[MASKED:<rule-id>:<fingerprint>]``,
where the fingerprint is a keyed HMAC of the secret: the same secret always gives the same
replacement (prompt caching depends on it, and auditors can tell secrets apart), and without
the gateway's key nobody can test a guess against it.

JSON bodies are masked *deny by default* (`Masker.mask_document`): every string value and
every object key, at any depth, of any block type or field (known or not), is scanned and
masked, except the fields of `BYTE_IDENTICAL_FIELDS`, which the API signs or encrypts (or
which are binary media) and which must come back byte-identical. A base64 source whose media
type is not binary (a ``text/plain`` document) is decoded, scanned, and re-encoded when a
secret is found. Within a content list (a message's content, the system list, a response's
content), adjacent texts are also scanned across their boundary, so that a secret split in
two blocks is found (`Masker._join`). `mask_request` and `mask_response_message` are this same
walk; `mask_for_record` masks everything, those fields included, for the recorder's copy.

`TextStream` masks a text that arrives in pieces (streamed text deltas) with a hold-back
window, and gives the same result as masking the whole text at once for every secret that
fits in the window, and for private-key blocks. A match still growing when the hold limit is
reached is masked, never released, and its continuation is swallowed.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import os
import secrets as _secrets
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2

from gatehouse.exchange import Finding
from gatehouse.masking.rules import MAX_HOLD_CHARS, Hit, MaskingPolicy
from gatehouse.common.statefiles import check_private, load_or_create

FINGERPRINT_CHARS = 6
FINGERPRINT_KEY_FILE = "fingerprint.key"
MIN_FINGERPRINT_SECRET_CHARS = 16

# Content blocks whose `input` is model-written JSON (tool calls). Inside an `input` the
# byte-identical list does not apply: it is free JSON, every string of it is scanned.
TOOL_BLOCK_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})

# The ONLY fields of a JSON body that masking leaves byte-identical: (the `type` of the object
# that holds the field, the field, why). Every other string value and every object key, at any
# depth, in any block type known or unknown, is scanned and masked. An entry applies to a
# string value only (a field of another JSON type is walked like any other), and never inside
# the `input` of a tool block (free JSON written by the model or a client). Sourced from the
# Anthropic SDK's types (anthropic 2.15): every field documented as "round-trip verbatim".
BYTE_IDENTICAL_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("thinking", "thinking",
     "signed: the API checks the thinking text against its signature when the client sends it back"),
    ("thinking", "signature", "the signature of a thinking block"),
    ("thinking_delta", "thinking", "a streamed piece of signed thinking text (SSE)"),
    ("signature_delta", "signature", "a streamed thinking signature (SSE)"),
    ("redacted_thinking", "data", "thinking encrypted by the API, sent back as it came"),
    ("compaction", "signature", "the signature of a context-compaction block"),
    ("compaction", "encrypted_content", "opaque compaction state, to be round-tripped verbatim"),
    ("compaction_delta", "encrypted_content", "streamed opaque compaction state (SSE)"),
    ("web_search_result", "encrypted_content", "server-tool result encrypted by the API (web search)"),
    ("web_search_result_location", "encrypted_index", "encrypted pointer of a web-search citation"),
    ("encrypted_code_execution_result", "encrypted_stdout", "server-tool output encrypted by the API (code execution)"),
    ("advisor_redacted_result", "encrypted_content", "server-tool output encrypted by the API (advisor)"),
    ("base64", "data",
     "binary media: the base64 `source.data` of an image/* or application/pdf block. Any other media "
     "type (text/plain documents...) is decoded, scanned, and re-encoded masked when a secret is found"),
)
def _is_server_result(t: str | None) -> bool:
    """A server tool's result block (web search, code execution...), whose content the API
    encrypts; not a client tool's result, which holds whatever the client sent."""
    return t is not None and t.endswith("_tool_result") and t not in ("tool_result", "mcp_tool_result")


def _child_slot(parent_type: str | None, key: str, is_list: bool, parent_slot: bool) -> bool:
    """Whether the value under `key` of an object of `parent_type` is (for a list: holds) a
    place where the API puts blocks with byte-identical fields (see `Masker._walk`)."""
    if is_list:
        if key == "content":  # a message's or response's content, a server tool's results
            return parent_type is None or parent_type == "message" or _is_server_result(parent_type)
        return key == "citations" and parent_slot
    if key in ("content_block", "delta"):
        return parent_type in ("content_block_start", "content_block_delta")
    if key == "content":
        return _is_server_result(parent_type)
    if key == "source":
        return parent_type in ("image", "document")
    return key == "citation" and parent_slot  # a streamed citations_delta


_EXEMPT_BY_TYPE: dict[str, frozenset[str]] = {
    t: frozenset(f for tt, f, _ in BYTE_IDENTICAL_FIELDS if tt == t) for t, _, _ in BYTE_IDENTICAL_FIELDS}
# Media types of a base64 source that stay byte-identical (the binary media the API takes).
# Exact types: `image/svg+xml` is text, and so is anything the API does not take as binary.
BINARY_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf"})


def _binary_media(source: dict[str, Any]) -> bool:
    """Whether a base64 source holds binary media (left byte-identical), not text."""
    mt = source.get("media_type")
    return isinstance(mt, str) and mt.strip().lower() in BINARY_MEDIA_TYPES


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

_NO_KEY = object()


class FingerprintKeyError(Exception):
    """The fingerprint secret the policy names is missing or unusable."""


def fingerprint_key_for(policy: MaskingPolicy, state_dir: Path) -> bytes:
    """The key of the masking fingerprints.

    From the environment variable the policy names (`fingerprint_secret_env`), so that all
    replicas agree; otherwise generated on first run into ``<state_dir>/fingerprint.key``
    (mode 0600), the single-node default.
    """
    env = policy.fingerprint_secret_env
    if env:
        value = os.environ.get(env)
        if not value:
            raise FingerprintKeyError(
                f"masking.fingerprint_secret_env names {env}, which is not set: "
                f"set it to the same random value (at least {MIN_FINGERPRINT_SECRET_CHARS} characters) on every replica"
            )
        if len(value) < MIN_FINGERPRINT_SECRET_CHARS:
            raise FingerprintKeyError(f"{env} is too short: use at least {MIN_FINGERPRINT_SECRET_CHARS} random characters")
        return value.encode("utf-8")
    path = Path(state_dir) / FINGERPRINT_KEY_FILE
    key = load_or_create(path, lambda: _secrets.token_bytes(32))
    check_private(path)
    if len(key) < 16:
        raise FingerprintKeyError(f"{path}: fingerprint key too short ({len(key)} bytes); delete it to generate a new one")
    return key


def build_masker(policy: MaskingPolicy | None, state_dir: Path) -> "Masker | None":
    """The gateway's masker for a policy's `[masking]` section (None when masking is off).
    Build it once per policy load and hand the same one to the Masking addon and the
    recorder. Raises FingerprintKeyError (and OSError) when the key is unusable."""
    if policy is None or not policy.enabled:
        return None
    return Masker(policy, fingerprint_key_for(policy, state_dir))


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
    """A deep copy of dicts and lists (other values shared), without recursion."""
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
_JSON_ESCAPE = re2.compile(r'\\(u[0-9a-fA-F]{4}|[\s\S])')
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
        return hmac.digest(self._key, secret.encode("utf-8", "surrogatepass"), "sha256").hex()[:FINGERPRINT_CHARS]

    def replacement(self, rule_id: str, secret: str) -> str:
        return f"[MASKED:{rule_id}:{self.fingerprint(secret)}]"

    def _hits(self, s: str) -> list[Hit]:
        """`scanner.scan(s)`, skipping short strings already seen clean."""
        short = len(s) <= _CLEAN_CACHE_MAX_LEN
        if short and s in self._clean:
            return []
        hits = self.scanner.scan(s)
        if short and not hits:
            clean = self._clean
            if len(clean) >= _CLEAN_CACHE_SIZE:
                clean.clear()
            clean.add(s)
        return hits

    def _apply(self, text: str, hits: list[Hit]) -> tuple[str, list[tuple[Hit, str]]]:
        parts: list[str] = []
        done: list[tuple[Hit, str]] = []
        last = 0
        for h in hits:
            fp = self.fingerprint(h.secret)
            parts.append(text[last:h.start])
            parts.append(f"[MASKED:{h.rule.id}:{fp}]")
            last = h.end
            done.append((h, fp))
        parts.append(text[last:])
        return "".join(parts), done

    def mask_text(self, text: str, where: str = "") -> tuple[str, list[Finding]]:
        """`text` with every secret replaced, and one Finding per replacement."""
        if not text:
            return text, []
        hits = self.scanner.scan(text)
        if not hits:
            return text, []
        masked, done = self._apply(text, hits)
        return masked, [Finding(h.rule.id, where, fp) for h, fp in done]

    def mask_spans(self, text: str) -> tuple[str, list[Span]]:
        """Like `mask_text`, with the character offsets (in `text`) of what was replaced."""
        hits = self.scanner.scan(text) if text else []
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
                parts.append(text[last:m.start()])
                parts.append(json.dumps(masked, ensure_ascii=False)[:None if closed else -1])
                last = m.end()
            if parts:
                parts.append(text[last:])
                text = "".join(parts)
        text, f = self.mask_text(text, where)
        found.extend(f)
        return text, found

    def text_stream(self, where: str = "", hold_back_chars: int | None = None,
                    max_hold_chars: int = MAX_HOLD_CHARS) -> "TextStream":
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
                node[key], done = self._apply(value, hits)
                w = _where(pnode)
                out.extend(Finding(h.rule.id, w, fp) for h, fp in done)
            return
        text = raw.decode("utf-8", "surrogateescape")
        hits = self.scanner.scan(text)
        if hits:
            masked, done = self._apply(text, hits)
            node[key] = base64.b64encode(masked.encode("utf-8", "surrogateescape")).decode("ascii")
            w = _where(pnode)
            out.extend(Finding(h.rule.id, w, fp) for h, fp in done)

    def _walk(self, root: Any, out: list[Finding], base: Any, *, exempt: bool, join: bool, free: bool = False,
              block: bool = False) -> None:
        """Mask, in place, every string value and every object key inside the dict or list
        `root`. `exempt`: leave `BYTE_IDENTICAL_FIELDS` as they are (False for the record);
        `join`: scan the adjacent texts of content lists across their boundaries; `free`: the
        root is free JSON (a tool input): no exemption applies; `block`: the root is a content
        block. Iterative; each string is scanned once (plus boundary windows of joined texts).

        An exemption applies only where the API puts such an object (a "slot"): a block of a
        message's or a response's content list, the block or delta of a streamed event, the
        results of a server tool, a citation of a block, the source of an image or document.
        The same type anywhere else (inside an error, a tool result, another endpoint's body)
        is scanned like everything else."""
        hits_of = self._hits
        apply = self._apply
        exempt_by_type = _EXEMPT_BY_TYPE if exempt else {}
        join_keys = _JOIN_KEYS
        tool_types = TOOL_BLOCK_TYPES
        # (node, path node, free, group, slot); node None: the end of `group`, whose texts are
        # joined. `slot`: a dict sits where the API puts blocks; a list's items do.
        stack: list[tuple[Any, Any, bool, Any, bool]] = [(root, base, free, None, block)]
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
                            if t == "base64" and not _binary_media(node):
                                self._mask_base64(node, k, v, (pnode, mk), out)
                            continue
                        if not exempt and t == "base64" and k == "data" and not _binary_media(node):
                            self._mask_base64(node, k, v, (pnode, mk), out)
                            continue
                        hits = hits_of(v)
                        if hits:
                            node[k], done = apply(v, hits)
                            w = _where(pnode, mk)
                            out.extend(Finding(h.rule.id, w, fp) for h, fp in done)
                        if group is not None and (k in join_keys or (k == "data" and t == "text")):
                            group.append((node, k, (pnode, mk), v, hits))
                    elif tv is dict or tv is list:
                        # An error carries the upstream's words: nothing in it is exempt.
                        cfree = free or (k == "input" and t in tool_types) or k == "error"
                        if cfree:
                            children.append((v, (pnode, mk), True, None, False))
                            continue
                        cslot = _child_slot(t, k, tv is list, slot)
                        if join and group is None and tv is list and k in _GROUP_KEYS:
                            g: list[Any] = []
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
                            node[i], done = apply(v, hits)
                            w = _where(pnode, i)
                            out.extend(Finding(h.rule.id, w, fp) for h, fp in done)
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

    def mask_for_record(self, obj: Any) -> tuple[Any, list[Finding]]:
        """A deep copy of `obj` with every string masked (dict keys too), thinking and
        signatures included: the recorder's copy, which nobody sends back to the API."""
        out: list[Finding] = []
        if isinstance(obj, str):
            return (self.mask_text(obj) if self.enabled else (obj, out))
        copied = _copy_json(obj)
        if not isinstance(copied, (dict, list)):
            return copy.deepcopy(obj), out
        if self.enabled:
            self._walk(copied, out, None, exempt=False, join=True)
        return copied, out


# ----------------------------------------------------------------------------------------
# Streaming text
# ----------------------------------------------------------------------------------------

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
        out = self._buf[self._released - self._base:]
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
            return piece[m.start():]
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
        region = self._buf[start - self._base:]
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
        window = self._buf[ctx0 - self._base:]
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
            parts.append(self._buf[pos - self._base:s - self._base])
            fp = self.masker.fingerprint(h.secret)
            parts.append(f"[MASKED:{h.rule.id}:{fp}]")
            self.findings.append(Finding(h.rule.id, self.where, fp))
            pos = ge
            if forced and ge >= total:
                swallow = "token"  # the match may go on: its continuation is not released
        parts.append(self._buf[pos - self._base:cut - self._base])
        if pem_hit is not None:
            fp = self.masker.fingerprint(pem_hit.secret)
            parts.append(f"[MASKED:{pem_hit.rule.id}:{fp}]")
            self.findings.append(Finding(pem_hit.rule.id, self.where, fp))
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

    def _trim(self) -> None:
        keep_from = max(self._base, self._released - self.context - 1)
        if self._pem_start is not None:
            keep_from = min(keep_from, max(self._pem_start, self._base))
        if keep_from - self._base > 4096 or keep_from - self._base > len(self._buf) // 2:
            self._buf = self._buf[keep_from - self._base:]
            self._base = keep_from
