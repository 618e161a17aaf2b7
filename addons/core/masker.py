"""Masking secrets in texts and in Claude Messages API bodies.

`Masker` replaces every secret a policy's rules find with ``[MASKED:<rule-id>:<fingerprint>]``,
where the fingerprint is a keyed HMAC of the secret: the same secret always gives the same
replacement (prompt caching depends on it, and auditors can tell secrets apart), and without
the gateway's key nobody can test a guess against it.

Walkers know the Messages API: in requests they mask every text the model will read
(system, text blocks, tool_result content, document text, earlier tool_use inputs) and never
touch thinking blocks, signatures or base64 data, which the API checks or which are not
text. `mask_for_record` masks everything, thinking included, for the recorder's copy.

`TextStream` masks a text that arrives in pieces (streamed text deltas) with a hold-back
window, and gives the same result as masking the whole text at once for every secret that
fits in the window, and for private-key blocks.
"""

from __future__ import annotations

import copy
import hmac
import os
import secrets as _secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2

from addons.core.exchange import Finding
from addons.core.rules import MAX_HOLD_CHARS, Hit, MaskingPolicy
from addons.core.statefiles import check_private, load_or_create

FINGERPRINT_CHARS = 6
FINGERPRINT_KEY_FILE = "fingerprint.key"
MIN_FINGERPRINT_SECRET_CHARS = 16

# Content blocks whose `input` is model-written JSON (tool calls).
TOOL_BLOCK_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


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


@dataclass(frozen=True, slots=True)
class Span:
    """A masked span of a text, for tools (the CLI): character offsets in the input."""

    rule: str
    start: int
    end: int
    fingerprint: str


class Masker:
    """Masks texts and Messages API bodies with a policy's rules. Thread-safe."""

    def __init__(self, policy: MaskingPolicy, fingerprint_key: bytes) -> None:
        if not fingerprint_key:
            raise ValueError("fingerprint_key must not be empty")
        self.policy = policy
        self.scanner = policy.scanner
        self._key = fingerprint_key

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

    def text_stream(self, where: str = "", hold_back_chars: int | None = None,
                    max_hold_chars: int = MAX_HOLD_CHARS) -> "TextStream":
        return TextStream(self, where, hold_back_chars or self.policy.hold_back_chars, max_hold_chars)

    # -- JSON values ------------------------------------------------------------------------

    def _mask_field(self, obj: Any, key: Any, path: tuple[str | int, ...], out: list[Finding]) -> None:
        """Mask the string ``obj[key]`` in place (if it is a string)."""
        value = obj[key]
        if not isinstance(value, str) or not value:
            return
        hits = self.scanner.scan(value)
        if hits:
            masked, done = self._apply(value, hits)
            obj[key] = masked
            where = format_where(path)
            out.extend(Finding(h.rule.id, where, fp) for h, fp in done)

    def _mask_strings_in_place(self, root: Any, path: tuple[str | int, ...], out: list[Finding]) -> None:
        """Mask every string value inside a JSON value (dict keys are left alone: the API and
        tools read them as names). Iterative, so nesting depth is not limited by recursion."""
        stack: list[tuple[Any, tuple[str | int, ...]]] = [(root, path)]
        while stack:
            node, p = stack.pop()
            if isinstance(node, dict):
                for k, v in node.items():
                    if isinstance(v, str):
                        self._mask_field(node, k, p + (k,), out)
                    elif isinstance(v, (dict, list)):
                        stack.append((v, p + (k,)))
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    if isinstance(v, str):
                        self._mask_field(node, i, p + (i,), out)
                    elif isinstance(v, (dict, list)):
                        stack.append((v, p + (i,)))

    def mask_value(self, value: Any, where: str = "") -> tuple[Any, list[Finding]]:
        """A JSON value (a tool input) with its string values masked; masks in place when it is
        a dict or list. Findings' `where` extends `where` with the keys inside the value."""
        out: list[Finding] = []
        base: tuple[str | int, ...] = (where,) if where else ()
        if isinstance(value, str):
            masked, found = self.mask_text(value, where)
            return masked, found
        self._mask_strings_in_place(value, base, out)
        return value, out

    # -- the Messages API -------------------------------------------------------------------

    def _mask_blocks(self, blocks: list[Any], path: tuple[str | int, ...], out: list[Finding]) -> None:
        """Content blocks of a request or response, in place. Iterative over nested blocks."""
        stack: list[tuple[list[Any], tuple[str | int, ...]]] = [(blocks, path)]
        while stack:
            items, p = stack.pop()
            for i, block in enumerate(items):
                bp = p + (i,)
                if not isinstance(block, dict):
                    # Not the API's shape (the API will refuse it), but it still leaves the
                    # gateway: bare strings and nested lists are masked too.
                    if isinstance(block, str):
                        self._mask_field(items, i, bp, out)
                    elif isinstance(block, list):
                        stack.append((block, bp))
                    continue
                t = block.get("type")
                if t == "text":
                    if "text" in block:
                        self._mask_field(block, "text", bp + ("text",), out)
                elif t in TOOL_BLOCK_TYPES:
                    inp = block.get("input")
                    if isinstance(inp, str):
                        self._mask_field(block, "input", bp + ("input",), out)
                    elif isinstance(inp, (dict, list)):
                        self._mask_strings_in_place(inp, bp + ("input",), out)
                elif t in ("tool_result", "mcp_tool_result"):
                    content = block.get("content")
                    if isinstance(content, str):
                        self._mask_field(block, "content", bp + ("content",), out)
                    elif isinstance(content, list):
                        stack.append((content, bp + ("content",)))
                elif t == "document":
                    for k in ("title", "context"):
                        if k in block:
                            self._mask_field(block, k, bp + (k,), out)
                    src = block.get("source")
                    if isinstance(src, dict):
                        st = src.get("type")
                        if st == "text" and "data" in src:
                            self._mask_field(src, "data", bp + ("source", "data"), out)
                        elif st == "content":
                            c = src.get("content")
                            if isinstance(c, str):
                                self._mask_field(src, "content", bp + ("source", "content"), out)
                            elif isinstance(c, list):
                                stack.append((c, bp + ("source", "content")))
                        # base64 (PDF), url, file: not text, never touched
                elif t == "search_result":
                    for k in ("title", "source"):
                        if k in block:
                            self._mask_field(block, k, bp + (k,), out)
                    c = block.get("content")
                    if isinstance(c, list):
                        stack.append((c, bp + ("content",)))
                # thinking, redacted_thinking (signed: the API rejects any change), image
                # (base64), server tool results (encrypted content) and unknown types: untouched.

    def mask_request(self, body: dict[str, Any]) -> list[Finding]:
        """Mask a `/v1/messages` (or count_tokens) request body in place; it stays valid for the API."""
        out: list[Finding] = []
        if not self.enabled or not isinstance(body, dict):
            return out
        system = body.get("system")
        if isinstance(system, str):
            self._mask_field(body, "system", ("system",), out)
        elif isinstance(system, list):
            self._mask_blocks(system, ("system",), out)
        messages = body.get("messages")
        if isinstance(messages, list):
            for i, msg in enumerate(messages):
                if not isinstance(msg, dict):
                    continue
                content = msg.get("content")
                if isinstance(content, str):
                    self._mask_field(msg, "content", ("messages", i, "content"), out)
                elif isinstance(content, list):
                    self._mask_blocks(content, ("messages", i, "content"), out)
        return out

    def mask_response_message(self, msg: dict[str, Any]) -> list[Finding]:
        """Mask a Messages API response message in place: text blocks and tool inputs.
        Thinking blocks and signatures are untouched: the client sends them back, signed."""
        out: list[Finding] = []
        if not self.enabled or not isinstance(msg, dict):
            return out
        content = msg.get("content")
        if isinstance(content, list):
            self._mask_blocks(content, ("content",), out)
        return out

    def mask_for_record(self, obj: Any) -> tuple[Any, list[Finding]]:
        """A deep copy of `obj` with every string masked (dict keys too), thinking and
        signatures included: the recorder's copy, which nobody sends back to the API."""
        out: list[Finding] = []
        if not self.enabled:
            return copy.deepcopy(obj), out

        def mask_str(s: str, p: tuple[str | int, ...]) -> str:
            if not s:
                return s
            hits = self.scanner.scan(s)
            if not hits:
                return s
            masked, done = self._apply(s, hits)
            where = format_where(p)
            out.extend(Finding(h.rule.id, where, fp) for h, fp in done)
            return masked

        if isinstance(obj, str):
            return mask_str(obj, ()), out
        if not isinstance(obj, (dict, list)):
            return copy.deepcopy(obj), out
        root: Any = {} if isinstance(obj, dict) else []
        stack: list[tuple[Any, Any, tuple[str | int, ...]]] = [(obj, root, ())]
        while stack:
            src, dst, p = stack.pop()
            items = src.items() if isinstance(src, dict) else enumerate(src)
            for k, v in items:
                kp = p + (k,)
                if isinstance(v, str):
                    nv: Any = mask_str(v, kp)
                elif isinstance(v, dict):
                    nv = {}
                    stack.append((v, nv, kp))
                elif isinstance(v, list):
                    nv = []
                    stack.append((v, nv, kp))
                else:
                    nv = v
                if isinstance(dst, dict):
                    nk = mask_str(k, p) if isinstance(k, str) else k
                    dst[nk] = nv
                else:
                    dst.append(nv)
        return root, out


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
    their start (at most `max_hold_chars`). Released text was masked exactly as masking the
    whole text at once would mask it, for secrets up to the window and private-key blocks.

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
        self._released = 0  # global offset up to which text has been sent
        self._pem_start: int | None = None  # global offset of an unterminated BEGIN marker
        self._pem_next = 0  # where the marker search resumes
        self._blocked_at: int | None = None  # total length at the last scan that was blocked

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
        self._buf += piece
        if not self.masker.enabled:
            return self._release_plain()
        self._track_pem()
        return self._release(final=False, new=piece)

    def flush(self) -> str:
        if not self.masker.enabled:
            return self._release_plain()
        return self._release(final=True, new="")

    # -- internals --------------------------------------------------------------------------

    def _release_plain(self) -> str:
        out = self._buf[self._released - self._base:]
        self._released = self.total
        self._trim()
        return out

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
        if final:
            limit = total
        else:
            limit = total - self.hold_back
            if self._pem_start is not None:
                limit = min(limit, max(self._pem_start, released))
            if total - released > self.max_hold:
                # Held too long (a key block without END, an endless match): give up the hold.
                final = True
                limit = total
                self._pem_start = None
                self._pem_next = total
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

        cut = limit
        changed = True
        while changed:
            changed = False
            for h in hits:
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
        if cut < limit:
            self._blocked_at = total
        if cut <= released:
            return ""

        parts: list[str] = []
        pos = released
        for h in hits:
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
        parts.append(self._buf[pos - self._base:cut - self._base])
        self._released = cut
        self._trim()
        return "".join(parts)

    def _trim(self) -> None:
        keep_from = max(self._base, self._released - self.context - 1)
        if self._pem_start is not None:
            keep_from = min(keep_from, max(self._pem_start, self._base))
        if keep_from - self._base > 4096 or keep_from - self._base > len(self._buf) // 2:
            self._buf = self._buf[keep_from - self._base:]
            self._base = keep_from

