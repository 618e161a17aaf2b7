"""The replay report: a static HTML site rendered from a recording store.

`build_report(store, options)` verifies the store (`verify.verify_store`, as `gatehouse
verify` does), groups its records into client sessions and writes, into ``options.out``:

    index.html                 one row per session; filter and sort in the browser
    audit.html                 refusals without a session, gateway runs, integrity problems
    sessions/<slug>.html       one page per session, reading like the conversation
    sessions/<slug>.json       the session's transcript (addons/schemas/transcript.schema.json)
    ids/<hh>.js                request id / exchange id -> session lookup, sharded
    static/                    CSS and JS (no CDN, nothing fetched: works from file://)
    .gatehouse/state.sqlite    what was rendered from which records (incremental re-runs)

Memory is bounded by one session, not the store: a first pass copies each record (they are
small; the large parts are blobs) into an SQLite file inside the output folder, indexed by
session; each session is then read back, its blobs loaded, rendered and dropped. A session
whose records, integrity and renderer are unchanged since the last run into the same folder
is not rendered again. (`verify.verify_store` keeps a few dozen bytes per record, not the
records themselves.)

"Only what is new in each turn": Claude Code resends the whole conversation every turn. Each
request's message list is matched against every conversation prefix already seen in the
session (prefix hashes over a normalised form of each message: `cache_control` markers move
from turn to turn and are ignored); only the messages after the longest known prefix are
new. The same matching reconstructs the session's conversations for the transcript.

Pure: no mitmproxy import. All recorded content reaches HTML through Jinja with autoescape
on; data for scripts is embedded as JSON with ``<``, ``>`` and ``&`` escaped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import jinja2
from markupsafe import Markup, escape

from gatehouse.recording import records
from gatehouse.recording import verify
from gatehouse.recording.records import ReadableStore

REPORT_SCHEMA = "gatehouse.transcript/1"
# Part of every session's fingerprint: bump it when the view model changes in a way the
# template digest does not show, so that a re-run re-renders every session.
RENDERER_VERSION = "1"
TEMPLATES_PACKAGE_DIR = Path(__file__).resolve().parent / "templates"
STATIC_FILES = ("report.css", "index.js", "session.js", "audit.js")
STATE_DIR = ".gatehouse"
ID_SHARDS = 256
INDEX_PAGE_ROWS = 100  # rows rendered in the HTML for readers without JavaScript

# `[MASKED:<rule-id>:<fingerprint>]`, as gatehouse.masking.masker writes it.
MASK_RE = re.compile(r"\[MASKED:([a-z0-9._-]{1,64}):([0-9a-f]{4,64})\]")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MESSAGES_PATH = "/v1/messages"


class ReportError(Exception):
    """The report cannot be written (output folder unusable, store unreadable)."""


# -- small helpers -------------------------------------------------------------------------------

def _obj(value: Any) -> dict[str, Any]:
    """A JSON object from a record, or an empty one: records are read defensively (a damaged
    store is still rendered)."""
    return value if isinstance(value, dict) else {}


def _ts(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return records.parse_iso_time(iso)
    except ValueError:
        try:
            return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


def fmt_time(t: float | None, *, date: bool = True) -> str:
    if t is None:
        return ""
    fmt = "%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S"
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


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


def parse_time_option(value: str) -> float:
    """An ISO 8601 date or date-time for --since/--until; without a zone it is UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or time: {value!r} (e.g. 2025-01-31 or 2025-01-31T14:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def session_slug(session_id: str) -> str:
    """A file name for a session id (client-supplied: any characters, up to 200)."""
    safe = _SLUG_UNSAFE.sub("_", session_id).strip("._")[:48] or "session"
    return f"{safe}-{hashlib.sha256(session_id.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def id_shard(value: str) -> str:
    """The lookup shard of a request or exchange id: FNV-1a over UTF-16 code units, as index.js."""
    h = 0x811C9DC5
    data = value.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h ^= data[i] | (data[i + 1] << 8)
        h = (h * 0x01000193) & 0xFFFFFFFF
    return f"{h % ID_SHARDS:02x}"


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
        out.append(str(escape(text[pos:m.start()])))
        rule, fp = m.group(1), m.group(2)
        out.append(f'<mark class="mask" data-rule="{escape(rule)}" title="secret masked by rule '
                   f'{escape(rule)}, fingerprint {escape(fp)}">'
                   f'<span class="mask-rule">{escape(rule)}</span><span class="mask-fp">{escape(fp)}</span>'
                   f'<span class="mask-raw">{escape(m.group(0))}</span></mark>')
        pos = m.end()
    out.append(str(escape(text[pos:])))
    return Markup("".join(out))


def count_masks(text: Any, seen: set[tuple[str, str]] | None = None) -> int:
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


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# -- clients and identities ----------------------------------------------------------------------

_CLAUDE_CODE_UA = re.compile(r"claude-cli/(?P<version>[0-9][^\s(]*)\s*(?:\((?P<detail>[^)]*)\))?", re.I)
_SDK_UA = re.compile(r"Anthropic/(?P<lang>[A-Za-z]+)\s+(?P<version>[0-9][^\s]*)")
_ENTRYPOINTS = {"cli": "", "sdk-ts": "TypeScript SDK", "sdk-py": "Python SDK", "sdk-cli": "print mode",
                "claude-code-github-action": "GitHub Action", "claude-desktop": "Desktop"}
_CI_MARKERS = ("github-action", "gitlab", "ci", "jenkins", "buildkite", "circleci")
_CI_ISSUERS = ("token.actions.githubusercontent.com", "gitlab", "circleci", "buildkite")


def describe_client(client: Mapping[str, Any] | None, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"label", "kind": claude-code|sdk|other, "ci": bool, "user_agent"} from a record's client part."""
    client = client or {}
    headers = headers or {}
    ua = str(client.get("user_agent") or "")
    label, kind, ci = ua[:80] or "unknown client", "other", False
    if m := _CLAUDE_CODE_UA.search(ua):
        parts = [p.strip() for p in (m.group("detail") or "").split(",") if p.strip()]
        extra = [_ENTRYPOINTS.get(p, p) for p in parts if p not in ("external",)]
        extra = [e for e in extra if e]
        label = f"Claude Code {m.group('version')}" + (f" ({', '.join(extra)})" if extra else "")
        kind = "claude-code"
        ci = any(any(c in p for c in _CI_MARKERS) for p in parts if p not in ("cli",))
    elif m := _SDK_UA.search(ua):
        lang = {"python": "Python", "js": "TypeScript", "typescript": "TypeScript", "go": "Go",
                "java": "Java"}.get(m.group("lang").lower(), m.group("lang"))
        label, kind = f"{lang} SDK {m.group('version')}", "sdk"
    elif headers.get("x-stainless-lang"):
        lang = str(headers.get("x-stainless-lang"))
        label, kind = f"{lang} SDK {headers.get('x-stainless-package-version') or ''}".strip(), "sdk"
    app = client.get("app")
    if isinstance(app, str) and app and app != "cli" and kind == "claude-code":
        label += f" [{app}]"
    if not ci:
        ci = str(headers.get("x-stainless-runtime", "")).lower() == "ci" or "ci" in str(app or "").lower().split("-")
    return {"label": label, "kind": kind, "ci": ci, "user_agent": ua}


def describe_identity(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    if not identity:
        return {"subject": None, "email": None, "name": None, "issuer": None, "groups": [], "label": "anonymous",
                "ci": False}
    subject = identity.get("subject")
    email = identity.get("email")
    groups = [str(g) for g in identity.get("groups") or []]
    issuer = str(identity.get("issuer") or "")
    return {
        "subject": subject, "email": email, "name": identity.get("name"),
        "issuer": identity.get("issuer_name") or identity.get("issuer"),
        "groups": groups,
        "label": email or subject or "anonymous",
        # A CI job's own OIDC token (docs/identity.md), or a group named for CI.
        "ci": any(h in issuer for h in _CI_ISSUERS) or any(g.lower() == "ci" for g in groups),
    }


def _person(value: Any) -> str | None:
    """An approver or requester as recorded in a decision's detail: a dict or a string."""
    if isinstance(value, Mapping):
        return value.get("email") or value.get("subject") or value.get("name") or None
    if isinstance(value, str) and value:
        return value
    return None


# -- decisions -----------------------------------------------------------------------------------

# What an action means for the auditor. Stage "commands" + "approve" is the rule's verdict
# (needs a human); stage "approvals" + "approve" is the human's answer.
_OUTCOMES = {
    "allow": "allowed", "allowed": "allowed", "pass": "allowed", "permit": "allowed",
    "block": "blocked", "blocked": "blocked", "deny": "denied", "denied": "denied", "refuse": "blocked",
    "reject": "denied", "rejected": "denied", "timeout": "denied", "expired": "denied", "timed_out": "denied",
    "hold": "held", "held": "held", "pending": "held", "wait": "held", "retry": "held",
    "approve": "approved", "approved": "approved", "grant": "approved", "granted": "approved",
    "mask": "masked", "masked": "masked",
}
_TOOL_ID_KEYS = ("tool_use_id", "tool_id", "block_id")
_BY_KEYS = ("approver", "decided_by", "by", "approved_by", "denied_by")
_HIDDEN_DETAIL_KEYS = frozenset(_TOOL_ID_KEYS + _BY_KEYS + ("tool", "tool_name", "name", "input", "tool_use"))


def decision_outcome(d: Mapping[str, Any]) -> str:
    stage = str(d.get("stage") or "")
    action = str(d.get("action") or "").lower()
    if stage == "commands" and action == "approve":
        return "held"
    if stage == "approvals" and action == "allow":
        return "approved"
    return _OUTCOMES.get(action, "info")


def _decision_tool_id(d: Mapping[str, Any]) -> str | None:
    detail = _obj(d.get("detail"))
    for k in _TOOL_ID_KEYS:
        if isinstance(detail.get(k), str):
            return detail[k]
    tu = detail.get("tool_use")
    if isinstance(tu, Mapping) and isinstance(tu.get("id"), str):
        return tu["id"]
    return None


@dataclass
class DecisionView:
    stage: str
    action: str
    outcome: str
    reason: str
    rule: str | None
    at: float | None
    by: str | None
    detail: list[tuple[str, str]]
    tool_use_id: str | None

    def to_json(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return {"stage": self.stage, "action": self.action, "outcome": self.outcome, "reason": self.reason,
                "rule": self.rule, "at": raw.get("at"), "by": self.by, "tool_use_id": self.tool_use_id,
                "detail": _obj(raw.get("detail"))}


def decision_view(d: Mapping[str, Any]) -> DecisionView:
    detail = _obj(d.get("detail"))
    by = None
    for k in _BY_KEYS:
        if (by := _person(detail.get(k))):
            break
    items = []
    for k, v in detail.items():
        if k in _HIDDEN_DETAIL_KEYS:
            continue
        if k in ("decided_at", "requested_at", "expires_at") and isinstance(v, (int, float)):
            v = records.iso_time(float(v))
        items.append((str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)))
    return DecisionView(
        stage=str(d.get("stage") or ""), action=str(d.get("action") or ""), outcome=decision_outcome(d),
        reason=str(d.get("reason") or ""), rule=d.get("rule") if isinstance(d.get("rule"), str) else None,
        at=_ts(d.get("at")), by=by, detail=items, tool_use_id=_decision_tool_id(d))


# -- integrity -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IntegrityProblem:
    key: str
    check: str
    message: str
    chain: str | None = None
    seq: int | None = None
    exchange_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "check": self.check, "message": self.message, "chain": self.chain,
                "seq": self.seq, "exchange_id": self.exchange_id}


@dataclass
class Integrity:
    """What verification found, indexed the way the report attributes it to sessions."""

    checked: bool
    trust: str  # policy | file | store | none
    summary: str = ""
    trusted_key_ids: list[str] = field(default_factory=list)
    problems: list[IntegrityProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_key: dict[str, list[IntegrityProblem]] = {}
        self.by_exchange: dict[str, list[IntegrityProblem]] = {}
        self.by_chain: dict[str, list[IntegrityProblem]] = {}
        for p in self.problems:
            self.by_key.setdefault(p.key, []).append(p)
            if p.exchange_id:
                self.by_exchange.setdefault(p.exchange_id, []).append(p)
            if p.chain:
                self.by_chain.setdefault(p.chain, []).append(p)

    @property
    def ok(self) -> bool:
        return self.checked and not self.problems


def check_integrity(store: ReadableStore, *, trusted_keys: Mapping[str, Any] | None = None,
                    trust: str | None = None) -> Integrity:
    """Adapter over `verify.verify_store`: the one verification, with the report's indexes."""
    res = verify.verify_store(store, trusted_keys=trusted_keys, trust=trust)
    problems = [IntegrityProblem(p.key, p.check, p.message, p.chain, p.seq, p.exchange_id) for p in res.problems]
    return Integrity(True, res.trust, res.summary(), list(res.trusted_key_ids), problems, list(res.notes))


# -- progress ------------------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on a terminal (stderr); silent when not a terminal unless forced."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.enabled = bool(self.stream.isatty()) if enabled is None else enabled
        self.width = width
        self.label = ""
        self.total = 0
        self.done = 0
        self._last = 0.0
        self._t0 = time.monotonic()

    def phase(self, label: str, total: int = 0) -> None:
        self.finish()
        self.label, self.total, self.done = label, total, 0
        self._t0 = time.monotonic()
        self._draw(force=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled or not self.label:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        elapsed = now - self._t0
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
            text = f"\r{self.label:<10} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s"
        else:
            text = f"\r{self.label:<10} {self.done} {elapsed:5.1f}s"
        self.stream.write(text)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.label:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
        self.label = ""


# -- the first pass: an on-disk index of every record ---------------------------------------------

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY, chain TEXT, seq INTEGER, kind TEXT, exchange_id TEXT, request_id TEXT,
    session TEXT, at REAL, subject TEXT, email TEXT, hash TEXT, data BLOB);
CREATE INDEX IF NOT EXISTS records_session ON records(session, at, chain, seq);
"""
_STATE_SQL = """
CREATE TABLE IF NOT EXISTS sessions (
    slug TEXT PRIMARY KEY, session_id TEXT, fingerprint TEXT, start REAL, row TEXT);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""


def _session_of(rec: Mapping[str, Any]) -> str | None:
    """The session a record belongs to; None for gateway runs and session-less audit events.

    A refusal belongs to a session when the client named it (header or metadata) or when the
    caller was identified (the gateway's idle-gap session of that caller); a refused token
    without a client session id is an audit event of its own.
    """
    kind = rec.get("kind")
    if kind == "start":
        return None
    session = _obj(rec.get("session"))
    sid = session.get("id") if isinstance(session.get("id"), str) else None
    if kind == "refusal":
        req = _obj(rec.get("request"))
        if req.get("method") == "CONNECT":
            return None
        if session.get("source") not in ("header", "metadata") and not rec.get("identity"):
            return None
    return sid


def _request_time(rec: Mapping[str, Any]) -> float | None:
    timing = _obj(rec.get("timing"))
    t = _ts(timing.get("request"))
    if t is None:
        chain = _obj(rec.get("chain"))
        t = _ts(chain.get("at"))
    return t


def scan_records(store: ReadableStore, db: sqlite3.Connection, progress: Progress | None = None) -> int:
    """Copy every record of the store into `db` with the fields sessions are cut and filtered by."""
    n = 0
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", batch)
        batch.clear()

    for key in store.list("records/"):
        p = records.parse_key(key)
        if p is None or p.kind != "record":
            continue
        try:
            data = store.get(key)
        except Exception:  # noqa: BLE001 - verify reports it; the report still renders the rest
            continue
        digest = records.sha256_ref(data)
        try:
            rec = records.parse_json(data)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            batch.append((key, p.chain, p.seq, "unreadable", None, None, None, None, None, None, digest, data))
            continue
        identity = _obj(rec.get("identity"))
        resp = _obj(rec.get("response"))
        xid = rec.get("exchange_id") if isinstance(rec.get("exchange_id"), str) else None
        rid = resp.get("request_id") if isinstance(resp.get("request_id"), str) else None
        batch.append((key, p.chain, p.seq, str(rec.get("kind")), xid, rid, _session_of(rec), _request_time(rec),
                      (identity.get("subject") or "").lower() or None, (identity.get("email") or "").lower() or None,
                      digest, data))
        n += 1
        if progress:
            progress.advance()
        if len(batch) >= 500:
            flush()
    flush()
    db.commit()
    return n


# -- the session view model -----------------------------------------------------------------------

def _normalise_message(msg: Any) -> Any:
    """A message as compared across turns: `cache_control` dropped, string content as a block."""
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "cache_control"}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    if isinstance(msg, dict) and isinstance(msg.get("content"), str):
        msg = dict(msg, content=[{"type": "text", "text": msg["content"]}])
    return strip(msg)


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b if isinstance(b, dict) else {"type": "text", "text": str(b)} for b in content]
    return []


def tool_result_text(content: Any) -> tuple[str, list[str]]:
    """The text of a tool_result's content and notes for what is not text (images...)."""
    if isinstance(content, str):
        return content, []
    texts, other = [], []
    for b in _content_blocks(content):
        if b.get("type") == "text":
            texts.append(str(b.get("text", "")))
        else:
            other.append(_media_note(b))
    return "\n".join(texts), other


def _media_note(block: Mapping[str, Any]) -> str:
    src = _obj(block.get("source"))
    size = len(src.get("data", "")) * 3 // 4 if isinstance(src.get("data"), str) else None
    parts = [str(block.get("type", "block")), str(src.get("media_type") or src.get("type") or "")]
    if size:
        parts.append(f"{size / 1024:.0f} KB")
    if isinstance(src.get("url"), str):
        parts.append(src["url"])
    return " · ".join(p for p in parts if p)


@dataclass
class ToolCall:
    id: str
    name: str
    input: Any
    exchange_index: int
    decisions: list[DecisionView] = field(default_factory=list)
    removed: bool = False  # the gateway replaced it on the wire (blocked, denied...)
    result: dict[str, Any] | None = None  # {"text", "notes", "is_error", "exchange_index"}

    @property
    def outcome(self) -> str:
        """The last verdict that settles the call: blocked, denied, approved, held or allowed."""
        final = "recorded"
        for d in self.decisions:
            if d.outcome in ("blocked", "denied", "approved", "held", "allowed"):
                if final == "approved" and d.outcome == "allowed":
                    continue
                final = d.outcome
        return final

    @property
    def approved(self) -> bool:
        return any(d.outcome == "approved" for d in self.decisions)

    @property
    def shell_command(self) -> str | None:
        if isinstance(self.input, dict) and isinstance(self.input.get("command"), str):
            return self.input["command"]
        return None


@dataclass
class Block:
    """One content block as the page shows it."""

    type: str  # text | thinking | redacted_thinking | tool_use | tool_result | media | other
    text: str = ""
    tool: ToolCall | None = None
    tool_use_id: str | None = None
    is_error: bool = False
    notes: list[str] = field(default_factory=list)
    attached: bool = False  # a tool_result shown with its call
    raw: Any = None


@dataclass
class MessageView:
    role: str
    blocks: list[Block]


@dataclass
class ContextPart:
    kind: str  # system | tools
    ref: str
    number: int
    text: str = ""  # system prompt as text
    tools: list[dict[str, Any]] = field(default_factory=list)  # {"name", "description", "schema"}
    first_exchange: int = 0


@dataclass
class ExchangeView:
    index: int
    exchange_id: str
    kind: str  # exchange | request (no response recorded) | refusal
    record_keys: list[str]
    at: float | None
    method: str
    path: str
    is_messages: bool
    model: str | None
    response_model: str | None
    status: int | None
    streamed: bool
    ttfb_ms: float | None
    duration_ms: float | None
    request_id: str | None
    usage: dict[str, int]
    stop_reason: str | None
    identity: dict[str, Any]
    client: dict[str, Any]
    agent_id: str | None
    conversation: int | None
    new_messages: list[MessageView]
    prefix_len: int
    total_messages: int
    response: MessageView | None
    response_message: dict[str, Any] | None  # as recorded (for the transcript)
    response_index: int | None  # its place in the conversation, when it joined one
    response_body: Any
    decisions: list[DecisionView]  # those not about a tool call
    tool_calls: list[ToolCall]
    removed_calls: list[ToolCall]
    system: ContextPart | None
    tools: ContextPart | None
    system_changed: bool
    tools_changed: bool
    params: dict[str, Any]
    errors: list[str]
    problems: list[IntegrityProblem]
    findings: int
    raw_decisions: list[dict[str, Any]]

    @property
    def anchor(self) -> str:
        return self.exchange_id

    @property
    def refused(self) -> bool:
        return self.kind == "refusal"

    @property
    def refusal(self) -> DecisionView | None:
        for d in self.decisions:
            if d.outcome in ("denied", "blocked"):
                return d
        return None

    @property
    def tokens(self) -> str:
        if not self.usage:
            return ""
        return f"{self.usage.get('input_tokens', 0):,} in / {self.usage.get('output_tokens', 0):,} out"


@dataclass
class SessionView:
    id: str
    slug: str
    source: str | None
    exchanges: list[ExchangeView]
    context: list[ContextPart]
    conversations: list[dict[str, Any]]
    users: list[dict[str, Any]]
    clients: list[dict[str, Any]]
    agents: list[str]
    start: float | None
    end: float | None
    models: list[str]
    usage: dict[str, int]
    masks: int
    distinct_secrets: int
    blocked: int
    approved: int
    held: int
    refused: int
    problems: list[IntegrityProblem]
    integrity_checked: bool
    trust: str

    @property
    def duration_ms(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start) * 1000

    @property
    def integrity_text(self) -> str:
        if not self.integrity_checked:
            return "not checked"
        if not self.problems:
            return "verified" if self.trust in ("policy", "file") else "verified (store keys)"
        checks = sorted({p.check for p in self.problems})
        return f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}: {', '.join(checks)}"

    def index_row(self) -> dict[str, Any]:
        return {
            "id": self.id, "href": f"sessions/{self.slug}.html",
            "users": [{"subject": u["subject"], "email": u["email"], "name": u["name"]} for u in self.users],
            "clients": [c["label"] for c in self.clients],
            "ci": any(c["ci"] for c in self.clients) or any(u.get("ci") for u in self.users),
            "start": records.iso_time(self.start), "end": records.iso_time(self.end),
            "duration_ms": self.duration_ms, "exchanges": sum(1 for x in self.exchanges if x.kind != "refusal"),
            "models": self.models, "tokens_in": self.usage.get("input_tokens", 0),
            "tokens_out": self.usage.get("output_tokens", 0),
            "tokens_cache_read": self.usage.get("cache_read_input_tokens", 0),
            "tokens_cache_write": self.usage.get("cache_creation_input_tokens", 0),
            "masks": self.masks, "secrets": self.distinct_secrets, "blocked": self.blocked,
            "approved": self.approved, "held": self.held, "refused": self.refused,
            "agents": len(self.agents),
            "integrity": {"ok": not self.problems, "checked": self.integrity_checked, "text": self.integrity_text},
        }


class _BlobCache:
    """Blobs of one session (dropped with it). Content-addressed, so caching is always valid."""

    def __init__(self, store: ReadableStore) -> None:
        self.store = store
        self._d: dict[str, Any] = {}
        self.missing: set[str] = set()

    def get(self, ref: str | None) -> Any:
        if not isinstance(ref, str):
            return None
        if ref in self._d:
            return self._d[ref]
        try:
            value = records.load_blob(self.store, ref)
        except Exception:  # noqa: BLE001 - a missing or damaged blob: verify names it; show a gap
            self.missing.add(ref)
            value = None
        self._d[ref] = value
        return value


class SessionBuilder:
    """Builds one session's view model from its records (ordered by request time)."""

    def __init__(self, session_id: str, store: ReadableStore, integrity: Integrity,
                 extra_problems: Sequence[IntegrityProblem] = ()) -> None:
        self.session_id = session_id
        self.store = store
        self.integrity = integrity
        # Problems about records that are gone (deleted next to ours, a truncated tail).
        self.extra_problems = list(extra_problems)
        self.blobs = _BlobCache(store)
        self._norm_keys: dict[str, str] = {}
        # prefix hash -> (conversation index, length of that conversation's prefix)
        self._prefixes: dict[str, tuple[int, int]] = {}
        self.conversations: list[dict[str, Any]] = []
        self.context: list[ContextPart] = []
        self._context_by_ref: dict[str, ContextPart] = {}
        self.tool_calls: dict[str, ToolCall] = {}
        self.mask_count = 0
        self.secrets: set[tuple[str, str]] = set()

    # messages are compared by a hash of their normalised form
    def _norm_key(self, ref: str) -> str:
        k = self._norm_keys.get(ref)
        if k is None:
            msg = self.blobs.get(ref)
            k = hashlib.sha256(records.canonical_json(records.json_safe(_normalise_message(msg)))).hexdigest() \
                if msg is not None else ref
            self._norm_keys[ref] = k
        return k

    @staticmethod
    def _extend(h: str, key: str) -> str:
        return hashlib.sha256(f"{h}\n{key}".encode()).hexdigest()

    def _context(self, kind: str, ref: Any, at_index: int) -> tuple[ContextPart | None, bool]:
        """The system prompt or tool list of an exchange; (part, shown for the first time)."""
        if not isinstance(ref, str):
            return None, False
        part = self._context_by_ref.get(ref)
        if part is not None:
            return part, False
        value = self.blobs.get(ref)
        number = sum(1 for p in self.context if p.kind == kind) + 1
        part = ContextPart(kind, ref, number, first_exchange=at_index)
        if kind == "system":
            if isinstance(value, str):
                part.text = value
            else:
                part.text = "\n\n".join(str(b.get("text", "")) if isinstance(b, dict) else str(b)
                                        for b in (value if isinstance(value, list) else []))
            self._count(part.text)
        else:
            for t in value if isinstance(value, list) else []:
                if isinstance(t, dict):
                    part.tools.append({"name": str(t.get("name") or t.get("type") or "?"),
                                       "description": str(t.get("description") or ""),
                                       "schema": pretty_json(t.get("input_schema", {k: v for k, v in t.items()
                                                                                   if k not in ("name", "description")}))})
        self.context.append(part)
        self._context_by_ref[ref] = part
        return part, True

    def _count(self, text: Any) -> None:
        self.mask_count += count_masks(text, self.secrets)

    def _blocks(self, content: Any, exchange_index: int, *, response: bool) -> list[Block]:
        out: list[Block] = []
        for b in _content_blocks(content):
            t = str(b.get("type") or "")
            if t == "text":
                text = str(b.get("text", ""))
                if not text.strip() and response:
                    continue
                self._count(text)
                out.append(Block("text", text, raw=b))
            elif t == "thinking":
                text = str(b.get("thinking", ""))
                self._count(text)
                out.append(Block("thinking", text))
            elif t == "redacted_thinking":
                out.append(Block("redacted_thinking"))
            elif t in ("tool_use", "server_tool_use", "mcp_tool_use"):
                tid = str(b.get("id") or f"anon-{exchange_index}-{len(out)}")
                for s in _strings(b.get("input")):
                    self._count(s)
                call = self.tool_calls.get(tid)
                if call is None or not response:
                    call = ToolCall(tid, str(b.get("name") or t), b.get("input"), exchange_index)
                    if response:
                        self.tool_calls[tid] = call
                out.append(Block("tool_use", tool=call, tool_use_id=tid))
            elif t in ("tool_result", "web_search_tool_result", "mcp_tool_result") or t.endswith("_tool_result"):
                text, notes = tool_result_text(b.get("content"))
                self._count(text)
                out.append(Block("tool_result", text, tool_use_id=b.get("tool_use_id"),
                                 is_error=bool(b.get("is_error")), notes=notes))
            elif t in ("image", "document"):
                if t == "document" and isinstance(b.get("source"), dict) and b["source"].get("type") == "text":
                    text = str(b["source"].get("data", ""))
                    self._count(text)
                    out.append(Block("text", text, notes=[f"document {b.get('title') or ''}".strip()]))
                else:
                    out.append(Block("media", notes=[_media_note(b)]))
            else:
                for s in _strings(b):
                    self._count(s)
                out.append(Block("other", pretty_json(b), notes=[str(t)]))
        return out

    def _record_problems(self, rec_keys: Iterable[str], exchange_id: str | None) -> list[IntegrityProblem]:
        seen: set[IntegrityProblem] = set()
        out: list[IntegrityProblem] = []
        for p in [x for k in rec_keys for x in self.integrity.by_key.get(k, [])] + \
                (self.integrity.by_exchange.get(exchange_id, []) if exchange_id else []):
            if p not in seen:
                seen.add(p)
                out.append(p)
        return out

    def build(self, rows: Sequence[tuple[str, bytes]]) -> SessionView:
        """`rows`: (store key, record bytes) ordered by request time."""
        # One exchange may have two records: "request" (spooled before a stream) and "exchange".
        order: list[str] = []
        by_xid: dict[str, dict[str, Any]] = {}
        for key, data in rows:
            rec = records.parse_json(data)
            xid = rec.get("exchange_id") if isinstance(rec.get("exchange_id"), str) else key
            slot = by_xid.get(xid)
            if slot is None:
                slot = by_xid[xid] = {"rec": rec, "keys": [key]}
                order.append(xid)
            else:
                slot["keys"].append(key)
                if rec.get("kind") != "request":
                    slot["rec"] = rec
        exchanges = [self._exchange(i, by_xid[x]["rec"], by_xid[x]["keys"]) for i, x in enumerate(order)]
        self._attach_results(exchanges)
        return self._session(exchanges)

    def _exchange(self, index: int, rec: dict[str, Any], keys: list[str]) -> ExchangeView:
        req = _obj(rec.get("request"))
        resp = _obj(rec.get("response"))
        timing = _obj(rec.get("timing"))
        session = _obj(rec.get("session"))
        path = str(req.get("path") or "")
        is_messages = path.split("?", 1)[0] == MESSAGES_PATH and req.get("messages") is not None
        xid = str(rec.get("exchange_id") or keys[0])

        system = tools = None
        system_new = tools_new = False
        new_messages: list[MessageView] = []
        prefix_len = total = 0
        conv_index: int | None = None
        params: dict[str, Any] = {}
        refs: list[str] = [r for r in (req.get("messages") or []) if isinstance(r, str)]
        hashes: list[str] = []
        if is_messages:
            system, system_new = self._context("system", req.get("system"), index)
            tools, tools_new = self._context("tools", req.get("tools"), index)
            body = req.get("body") if isinstance(req.get("body"), dict) else self.blobs.get(req.get("body_blob"))
            if isinstance(body, dict):
                params = {k: v for k, v in body.items() if k not in ("model", "stream", "messages", "system", "tools")}
            h = ""
            for r in refs:
                h = self._extend(h, self._norm_key(r))
                hashes.append(h)
            prefix_len = 0
            for k in range(len(hashes), 0, -1):
                if hashes[k - 1] in self._prefixes:
                    prefix_len = k
                    break
            total = len(refs)
            # A refused request never reached the model: a branch of its own in the transcript.
            conv_index = self._place(refs, hashes, prefix_len, system, tools, xid,
                                     fork=rec.get("kind") == "refusal",
                                     agent=session.get("agent_id") if isinstance(session.get("agent_id"), str) else None)
            for r in refs[prefix_len:]:
                msg = self.blobs.get(r)
                if msg is None:
                    new_messages.append(MessageView("missing", [Block("other", notes=[f"message blob {r} is missing"])]))
                    continue
                role = str(msg.get("role", "user")) if isinstance(msg, dict) else "user"
                content = msg.get("content") if isinstance(msg, dict) else msg
                new_messages.append(MessageView(role, self._blocks(content, index, response=False)))

        message = records.response_message(rec, self.store) if resp.get("message") is not None else None
        response_index: int | None = None
        response_view = None
        response_body = None
        stop_reason = None
        usage: dict[str, int] = {}
        response_model = None
        if message is not None:
            response_view = MessageView(str(message.get("role", "assistant")),
                                        self._blocks(message.get("content"), index, response=True))
            stop_reason = message.get("stop_reason")
            response_model = message.get("model")
            usage = {k: v for k, v in (message.get("usage") or {}).items()
                     if isinstance(v, int) and not isinstance(v, bool)}
            if is_messages and conv_index is not None and isinstance(resp.get("content"), str):
                response_index = self._register_response(conv_index, hashes, resp["content"])
        elif resp:
            try:
                response_body = records.response_body(rec, self.store)
            except Exception:  # noqa: BLE001
                response_body = None
            for s in _strings(response_body):
                self._count(s)

        raw_decisions = [d for d in rec.get("decisions") or [] if isinstance(d, dict)]
        decisions: list[DecisionView] = []
        calls = [b.tool for b in (response_view.blocks if response_view else []) if b.tool is not None]
        call_ids = {c.id for c in calls}
        removed: dict[str, ToolCall] = {}
        for d in raw_decisions:
            dv = decision_view(d)
            for s in _strings(d):
                self._count(s)
            if dv.tool_use_id and dv.tool_use_id in call_ids:
                self.tool_calls[dv.tool_use_id].decisions.append(dv)
            elif dv.tool_use_id:
                # The call was replaced on the wire (blocked/denied): show it from the decision.
                call = removed.get(dv.tool_use_id) or self.tool_calls.get(dv.tool_use_id)
                if call is None:
                    detail = _obj(d.get("detail"))
                    tu = _obj(detail.get("tool_use"))
                    call = ToolCall(dv.tool_use_id, str(detail.get("tool") or detail.get("tool_name")
                                                        or tu.get("name") or "tool"),
                                    detail.get("input", tu.get("input")), index, removed=True)
                    self.tool_calls[dv.tool_use_id] = call
                    removed[dv.tool_use_id] = call
                call.decisions.append(dv)
            else:
                decisions.append(dv)
        findings = _obj(rec.get("findings"))
        n_findings = sum(len(v) for v in findings.values() if isinstance(v, list))
        return ExchangeView(
            index=index, exchange_id=xid, kind=str(rec.get("kind")), record_keys=keys,
            at=_ts(timing.get("request")), method=str(req.get("method") or ""), path=path,
            is_messages=is_messages, model=req.get("model"), response_model=response_model,
            status=resp.get("status") if isinstance(resp.get("status"), int) else None,
            streamed=bool(resp.get("streamed")), ttfb_ms=timing.get("ttfb_ms"), duration_ms=timing.get("duration_ms"),
            request_id=resp.get("request_id") if isinstance(resp.get("request_id"), str) else None,
            usage=usage, stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            identity=describe_identity(rec.get("identity")),
            client=describe_client(rec.get("client"), _obj(req.get("headers"))),
            agent_id=session.get("agent_id") if isinstance(session.get("agent_id"), str) else None,
            conversation=conv_index, new_messages=new_messages, prefix_len=prefix_len, total_messages=total,
            response=response_view, response_message=message, response_index=response_index,
            response_body=response_body, decisions=decisions, tool_calls=calls,
            removed_calls=list(removed.values()), system=system, tools=tools, system_changed=system_new,
            tools_changed=tools_new, params=params, errors=[str(e) for e in rec.get("errors") or []],
            problems=self._record_problems(keys, xid), findings=n_findings, raw_decisions=raw_decisions)

    def _place(self, refs: list[str], hashes: list[str], prefix_len: int, system: ContextPart | None,
               tools: ContextPart | None, xid: str, *, fork: bool = False, agent: str | None = None) -> int:
        """Which conversation this request continues (or starts); registers its prefixes."""
        if prefix_len:
            conv_index, length = self._prefixes[hashes[prefix_len - 1]]
            conv = self.conversations[conv_index]
            if fork or len(conv["refs"]) != length:
                # A branch (history rewritten, or a side request sharing the start): a new
                # conversation that repeats the shared prefix in the transcript.
                conv = self._new_conversation(conv["refs"][:length], system, tools, conv.get("agent"))
                conv_index = len(self.conversations) - 1
        else:
            conv = self._new_conversation([], system, tools, agent)
            conv_index = len(self.conversations) - 1
        conv["refs"].extend(refs[prefix_len:])
        conv["exchanges"].append(xid)
        for i, h in enumerate(hashes):
            self._prefixes.setdefault(h, (conv_index, i + 1))
        return conv_index

    def _new_conversation(self, refs: list[str], system: ContextPart | None, tools: ContextPart | None,
                          agent: str | None) -> dict[str, Any]:
        conv = {"refs": list(refs), "system": system.ref if system else None, "tools": tools.ref if tools else None,
                "exchanges": [], "agent": agent}
        self.conversations.append(conv)
        return conv

    def _register_response(self, conv_index: int, hashes: list[str], content_ref: str) -> int | None:
        """Append the assistant's answer to its conversation (the client sends it back next
        turn, where it must count as already shown); its index there, or None."""
        conv = self.conversations[conv_index]
        h = self._extend(hashes[-1] if hashes else "", self._norm_key(content_ref))
        if h in self._prefixes or len(conv["refs"]) != len(hashes):
            return None
        conv["refs"].append(content_ref)
        self._prefixes[h] = (conv_index, len(hashes) + 1)
        return len(hashes)

    def _attach_results(self, exchanges: list[ExchangeView]) -> None:
        """Show each tool result with its call; in the later request, only a pointer to it."""
        for x in exchanges:
            for m in x.new_messages:
                for b in m.blocks:
                    if b.type != "tool_result" or not b.tool_use_id:
                        continue
                    call = self.tool_calls.get(b.tool_use_id)
                    if call is not None and call.result is None and call.exchange_index < x.index:
                        call.result = {"text": b.text, "notes": b.notes, "is_error": b.is_error,
                                       "exchange_index": x.index, "exchange_id": x.exchange_id}
                        b.attached = True
                        b.tool = call

    def _session(self, exchanges: list[ExchangeView]) -> SessionView:
        users: dict[tuple[Any, Any], dict[str, Any]] = {}
        clients: dict[str, dict[str, Any]] = {}
        models: list[str] = []
        usage: dict[str, int] = {}
        agents: list[str] = []
        times: list[float] = []
        source = None
        for x in exchanges:
            if x.identity.get("subject") or x.identity.get("email"):
                users.setdefault((x.identity.get("issuer"), x.identity.get("subject")), x.identity)
            clients.setdefault(x.client["label"], x.client)
            for m in (x.model, x.response_model):
                if isinstance(m, str) and m and m not in models:
                    models.append(m)
            for k, v in x.usage.items():
                usage[k] = usage.get(k, 0) + v
            if x.agent_id and x.agent_id not in agents:
                agents.append(x.agent_id)
            if x.at is not None:
                times.append(x.at)
                if x.duration_ms is not None:
                    times.append(x.at + x.duration_ms / 1000)
        calls = list(self.tool_calls.values())
        problems = [p for x in exchanges for p in x.problems]
        seen = set(problems)
        for p in self.extra_problems:
            if p not in seen:
                seen.add(p)
                problems.append(p)
        for ref in sorted(self.blobs.missing):
            if not any(q.check == "blob" and ref in q.message for q in problems):
                problems.append(IntegrityProblem(records.blob_key(ref), "blob", f"blob {ref} could not be read"))
        return SessionView(
            id=self.session_id, slug=session_slug(self.session_id), source=source, exchanges=exchanges,
            context=self.context, conversations=self.conversations, users=list(users.values()),
            clients=list(clients.values()), agents=agents, start=min(times) if times else None,
            end=max(times) if times else None, models=models, usage=usage, masks=self.mask_count,
            distinct_secrets=len(self.secrets), blocked=sum(1 for c in calls if c.outcome in ("blocked", "denied")),
            approved=sum(1 for c in calls if c.approved), held=sum(1 for c in calls if c.outcome == "held"),
            refused=sum(1 for x in exchanges if x.kind == "refusal"), problems=problems,
            integrity_checked=self.integrity.checked, trust=self.integrity.trust)


# -- the transcript --------------------------------------------------------------------------------

def transcript(view: SessionView, builder: SessionBuilder, *, store_url: str, generated_at: str) -> dict[str, Any]:
    """The session as JSON: its conversations in Messages API shape plus the gateway's annotations."""
    blobs = builder.blobs

    def message(ref: str) -> Any:
        msg = blobs.get(ref)
        return msg if msg is not None else {"role": "user", "content": [], "_missing_blob": ref}

    conversations = []
    for i, conv in enumerate(view.conversations):
        conversations.append({
            "index": i, "agent_id": conv.get("agent"),
            "system": blobs.get(conv["system"]) if conv.get("system") else None,
            "tools": blobs.get(conv["tools"]) if conv.get("tools") else None,
            "messages": [message(r) for r in conv["refs"]],
            "exchanges": conv["exchanges"],
        })
    exchanges = []
    for x in view.exchanges:
        calls = []
        for c in x.tool_calls + x.removed_calls:
            calls.append({"id": c.id, "name": c.name, "input": c.input, "removed_by_gateway": c.removed,
                          "outcome": c.outcome, "decisions": [_decision_json(d) for d in c.decisions],
                          "result": c.result and {k: c.result[k] for k in ("text", "is_error", "exchange_id")}})
        exchanges.append({
            "exchange_id": x.exchange_id, "kind": x.kind, "records": x.record_keys,
            "request_id": x.request_id, "at": records.iso_time(x.at), "method": x.method, "path": x.path,
            "model": x.model, "response_model": x.response_model, "status": x.status, "streamed": x.streamed,
            "timing": {"ttfb_ms": x.ttfb_ms, "duration_ms": x.duration_ms},
            "usage": x.usage or None, "stop_reason": x.stop_reason,
            "identity": {k: x.identity.get(k) for k in ("subject", "email", "name", "issuer", "groups")},
            "client": {k: x.client.get(k) for k in ("label", "kind", "ci", "user_agent")},
            "agent_id": x.agent_id,
            "messages": {"conversation": x.conversation, "from": x.prefix_len, "to": x.total_messages,
                         "response": x.response_index} if x.is_messages and x.conversation is not None else None,
            "response_message": x.response_message if x.response_index is None else None,
            "response_body": x.response_body,
            "decisions": [_decision_json(d) for d in x.decisions],
            "tool_calls": calls,
            "errors": x.errors,
            "integrity": {"ok": not x.problems, "problems": [p.to_json() for p in x.problems]},
        })
    return {
        "schema": REPORT_SCHEMA,
        "generated_at": generated_at,
        "store": store_url,
        "session": {
            "id": view.id,
            "users": [{k: u.get(k) for k in ("subject", "email", "name", "issuer", "groups")} for u in view.users],
            "clients": [{k: c.get(k) for k in ("label", "kind", "ci", "user_agent")} for c in view.clients],
            "agents": view.agents,
            "start": records.iso_time(view.start), "end": records.iso_time(view.end),
            "duration_ms": view.duration_ms, "models": view.models, "usage": view.usage,
            "counts": {"exchanges": sum(1 for x in view.exchanges if x.kind != "refusal"), "masked_spans": view.masks,
                       "distinct_secrets": view.distinct_secrets, "blocked": view.blocked,
                       "approved": view.approved, "held": view.held, "refused": view.refused},
        },
        "integrity": {
            "checked": view.integrity_checked, "trust": view.trust,
            "status": ("unchecked" if not view.integrity_checked else "failed" if view.problems else "verified"),
            "problems": [p.to_json() for p in view.problems],
        },
        "conversations": conversations,
        "exchanges": exchanges,
    }


def _decision_json(d: DecisionView) -> dict[str, Any]:
    return {"stage": d.stage, "action": d.action, "outcome": d.outcome, "reason": d.reason, "rule": d.rule,
            "at": records.iso_time(d.at), "by": d.by, "tool_use_id": d.tool_use_id, "detail": dict(d.detail)}


# -- output ------------------------------------------------------------------------------------------

def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_PACKAGE_DIR)),
        autoescape=True,  # every template, whatever its name: all recorded content is untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(masked=masked_text, time=fmt_time, duration=fmt_duration, num=fmt_int,
                       json_script=json_for_script, pretty_json=pretty_json)
    env.globals.update(iso=records.iso_time)
    return env


def templates_digest() -> str:
    h = hashlib.sha256(RENDERER_VERSION.encode())
    for p in sorted(TEMPLATES_PACKAGE_DIR.iterdir()):
        if p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _prepare_out(out: Path) -> None:
    """The output folder, owner-only: it holds conversation content."""
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(out, 0o700)
        for sub in ("sessions", "ids", "static", STATE_DIR):
            (out / sub).mkdir(mode=0o700, exist_ok=True)
            os.chmod(out / sub, 0o700)
    except OSError as e:
        raise ReportError(f"cannot use {out} as the report folder: {e.strerror or e}") from None


def _write(path: Path, data: str | bytes | Iterable[str]) -> None:
    """Replace `path` atomically with an owner-only file."""
    tmp = path.with_name(f".tmp-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            elif isinstance(data, str):
                f.write(data.encode("utf-8"))
            else:
                for chunk in data:
                    f.write(chunk.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class ReportOptions:
    out: Path
    since: float | None = None
    until: float | None = None
    user: str | None = None  # subject or email, case-insensitive
    session: str | None = None
    trusted_keys: Mapping[str, Any] | None = None
    trust: str | None = None
    verify: bool = True
    progress: Progress | None = None
    title: str = "Gatehouse report"
    store_label: str | None = None


@dataclass
class ReportResult:
    out: Path
    records: int = 0
    sessions: int = 0
    rendered: int = 0
    reused: int = 0
    removed: int = 0
    audit_events: int = 0
    integrity: Integrity | None = None
    sessions_with_problems: int = 0

    @property
    def ok(self) -> bool:
        return self.integrity is None or not self.integrity.problems


def _fingerprint(session_id: str, rows: Sequence[tuple[str, str]], problems: Iterable[IntegrityProblem],
                 integrity: Integrity, tdigest: str) -> str:
    h = hashlib.sha256()
    for part in (RENDERER_VERSION, tdigest, session_id, integrity.trust, str(integrity.checked)):
        h.update(part.encode("utf-8", "surrogatepass") + b"\0")
    for key, digest in rows:
        h.update(f"{key}\0{digest}\0".encode())
    for p in sorted(json.dumps(x.to_json(), sort_keys=True) for x in problems):
        h.update(p.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def attribute_problems(work: sqlite3.Connection, integrity: Integrity) -> dict[IntegrityProblem, str | None]:
    """The session each problem concerns (None: the store as a whole, or only the audit page).

    A problem names an exchange, a record, or (for records that are gone) a place in a chain:
    missing records concern the sessions of the records on either side of the gap, a truncated
    tail the session of the chain's last record present.
    """
    out: dict[IntegrityProblem, str | None] = {}
    for p in integrity.problems:
        hit = None
        if p.exchange_id:
            hit = work.execute("SELECT session FROM records WHERE exchange_id=? AND session IS NOT NULL LIMIT 1",
                               (p.exchange_id,)).fetchone()
        if hit is None and p.key.startswith("records/"):
            hit = work.execute("SELECT session FROM records WHERE key=? AND session IS NOT NULL", (p.key,)).fetchone()
        if hit is None and p.chain is not None and p.seq is not None:
            if p.check == "missing":
                hit = work.execute("SELECT session FROM records WHERE chain=? AND seq<? AND session IS NOT NULL "
                                   "ORDER BY seq DESC LIMIT 1", (p.chain, p.seq)).fetchone()
                after = work.execute("SELECT session FROM records WHERE chain=? AND seq>? AND session IS NOT NULL "
                                     "ORDER BY seq LIMIT 1", (p.chain, p.seq)).fetchone()
                if after is not None and (hit is None or after[0] != hit[0]):
                    out.setdefault(p, hit[0] if hit else None)
                    if hit is not None:
                        # A second copy so both neighbouring sessions show the gap.
                        out[IntegrityProblem(p.key, p.check, p.message, p.chain, p.seq, "")] = after[0]
                    else:
                        out[p] = after[0]
                    continue
            elif p.check in ("checkpoint", "previous-run"):
                hit = work.execute("SELECT session FROM records WHERE chain=? AND session IS NOT NULL "
                                   "ORDER BY seq DESC LIMIT 1", (p.chain,)).fetchone()
        out[p] = hit[0] if hit else None
    return out


def build_report(store: ReadableStore, options: ReportOptions) -> ReportResult:
    """Verify `store` and render the report into `options.out`; see the module docstring."""
    out = Path(options.out)
    progress = options.progress or Progress(enabled=False)
    _prepare_out(out)
    result = ReportResult(out)
    generated_at = records.iso_time(time.time()) or ""
    store_url = options.store_label or str(getattr(store, "url", "store"))
    env = _environment()
    tdigest = templates_digest()

    if options.verify:
        progress.phase("verifying")
        integrity = check_integrity(store, trusted_keys=options.trusted_keys, trust=options.trust)
    else:
        integrity = Integrity(False, "none", "not checked")
    result.integrity = integrity

    state_path = out / STATE_DIR / "state.sqlite"
    os.close(os.open(state_path, os.O_WRONLY | os.O_CREAT, 0o600))  # owner-only before SQLite opens it
    os.chmod(state_path, 0o600)
    state = sqlite3.connect(state_path)
    state.executescript(_STATE_SQL)
    work_path = out / STATE_DIR / "records.sqlite"
    work_path.unlink(missing_ok=True)
    os.close(os.open(work_path, os.O_WRONLY | os.O_CREAT, 0o600))
    work = sqlite3.connect(work_path)
    try:
        # A scratch database: nothing in it needs to survive a crash.
        work.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA_SQL)
        progress.phase("reading")
        result.records = scan_records(store, work, progress)
        sessions = _select_sessions(work, options)
        result.sessions = len(sessions)
        located = attribute_problems(work, integrity)
        by_session: dict[str, list[IntegrityProblem]] = {}
        for p, sid in located.items():
            if sid is not None:
                by_session.setdefault(sid, []).append(p)

        progress.phase("sessions", len(sessions))
        kept: set[str] = set()
        for session_id, _start in sessions:
            slug = session_slug(session_id)
            kept.add(slug)
            problems = by_session.get(session_id, [])
            meta = work.execute("SELECT key, hash FROM records WHERE session=? ORDER BY at, chain, seq",
                                (session_id,)).fetchall()
            fp = _fingerprint(session_id, meta, problems, integrity, tdigest)
            prev = state.execute("SELECT fingerprint FROM sessions WHERE slug=?", (slug,)).fetchone()
            if prev and prev[0] == fp and (out / "sessions" / f"{slug}.html").exists() \
                    and (out / "sessions" / f"{slug}.json").exists():
                result.reused += 1
            else:
                rows = [(k, bytes(data)) for k, data in work.execute(
                    "SELECT key, data FROM records WHERE session=? ORDER BY at, chain, seq", (session_id,))]
                row = _render_session(env, store, integrity, session_id, rows, out, problems,
                                      store_url=store_url, generated_at=generated_at, title=options.title)
                state.execute("INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?)",
                              (slug, session_id, fp, _ts(row["start"]), json.dumps(row)))
                result.rendered += 1
            progress.advance()
        state.commit()

        result.removed = _remove_stale(state, out, kept)
        progress.phase("index")
        result.sessions_with_problems = _write_index(env, state, out, integrity, located, options, store_url,
                                                     generated_at, kept)
        result.audit_events = _write_audit(env, work, out, integrity, located, options, store_url, generated_at)
        _write_id_shards(work, out, kept)
        _copy_static(out)
        state.execute("INSERT OR REPLACE INTO meta VALUES ('generated_at', ?)", (generated_at,))
        state.commit()
        progress.finish()
    finally:
        work.close()
        state.close()
        work_path.unlink(missing_ok=True)
    return result


def _select_sessions(work: sqlite3.Connection, options: ReportOptions) -> list[tuple[str, float | None]]:
    """Sessions that pass the filters: any of their exchanges in the time range, by the user."""
    where: list[str] = ["session IS NOT NULL"]
    having: list[str] = []
    args: list[Any] = []
    hargs: list[Any] = []
    if options.session is not None:
        where.append("session = ?")
        args.append(options.session)
    if options.since is not None:
        having.append("MAX(at) >= ?")
        hargs.append(options.since)
    if options.until is not None:
        having.append("MIN(at) <= ?")
        hargs.append(options.until)
    if options.user:
        u = options.user.lower()
        where.append("session IN (SELECT session FROM records WHERE subject = ? OR email = ?)")
        args.extend([u, u])
    sql = f"SELECT session, MIN(at) FROM records WHERE {' AND '.join(where)} GROUP BY session"
    if having:
        sql += " HAVING " + " AND ".join(having)
    return [(s, t) for s, t in work.execute(sql + " ORDER BY MIN(at), session", args + hargs)]


def render_session(store: ReadableStore, integrity: Integrity, session_id: str, rows: Sequence[tuple[str, bytes]],
                   problems: Sequence[IntegrityProblem] = (), *, store_url: str = "", generated_at: str = "",
                   title: str = "Gatehouse report", env: jinja2.Environment | None = None
                   ) -> tuple[SessionView, str, dict[str, Any]]:
    """One session's page (HTML) and transcript (JSON-ready) from its records."""
    builder = SessionBuilder(session_id, store, integrity, problems)
    view = builder.build(rows)
    doc = transcript(view, builder, store_url=store_url, generated_at=generated_at)
    html = (env or _environment()).get_template("session.html").render(
        s=view, title=title, store_url=store_url, generated_at=generated_at, static="../static",
        root="..", integrity=integrity)
    return view, html, doc


def _render_session(env: jinja2.Environment, store: ReadableStore, integrity: Integrity, session_id: str,
                    rows: list[tuple[str, bytes]], out: Path, problems: Sequence[IntegrityProblem], *,
                    store_url: str, generated_at: str, title: str) -> dict[str, Any]:
    view, html, doc = render_session(store, integrity, session_id, rows, problems, store_url=store_url,
                                     generated_at=generated_at, title=title, env=env)
    _write(out / "sessions" / f"{view.slug}.json", json.dumps(doc, ensure_ascii=False, indent=1, default=str))
    _write(out / "sessions" / f"{view.slug}.html", html)
    return view.index_row()


def _remove_stale(state: sqlite3.Connection, out: Path, kept: set[str]) -> int:
    """Pages of sessions not in this run (another filter, or records pruned) are removed."""
    removed = 0
    for (slug,) in state.execute("SELECT slug FROM sessions").fetchall():
        if slug in kept:
            continue
        for ext in ("html", "json"):
            (out / "sessions" / f"{slug}.{ext}").unlink(missing_ok=True)
        state.execute("DELETE FROM sessions WHERE slug=?", (slug,))
        removed += 1
    state.commit()
    return removed


def _index_rows(state: sqlite3.Connection, kept: set[str]) -> Iterator[dict[str, Any]]:
    for slug, row in state.execute("SELECT slug, row FROM sessions ORDER BY start DESC, slug"):
        if slug in kept:
            yield json.loads(row)


def _problem_links(located: Mapping[IntegrityProblem, str | None], limit: int
                   ) -> list[tuple[IntegrityProblem, str | None]]:
    out: list[tuple[IntegrityProblem, str | None]] = []
    for p, sid in located.items():
        if len(out) >= limit:
            break
        if sid is None:
            out.append((p, None))
        else:
            anchor = f"#{p.exchange_id}" if p.exchange_id else "#integrity"
            out.append((p, f"sessions/{session_slug(sid)}.html{anchor}"))
    return out


def _write_index(env: jinja2.Environment, state: sqlite3.Connection, out: Path, integrity: Integrity,
                 located: Mapping[IntegrityProblem, str | None], options: ReportOptions, store_url: str,
                 generated_at: str, kept: set[str]) -> int:
    with_problems = 0
    first_rows: list[dict[str, Any]] = []
    for row in _index_rows(state, kept):
        if not row["integrity"]["ok"]:
            with_problems += 1
        if len(first_rows) < INDEX_PAGE_ROWS:
            first_rows.append(row)

    def data() -> Iterator[Markup]:
        # Streamed into the page: the index's data is as large as the store has sessions.
        yield Markup("[")
        for i, row in enumerate(_index_rows(state, kept)):
            yield Markup("," if i else "") + json_for_script(row)
        yield Markup("]")

    problems = _problem_links(located, 200)
    filters = {"since": records.iso_time(options.since), "until": records.iso_time(options.until),
               "user": options.user, "session": options.session}
    page = env.get_template("index.html").generate(
        title=options.title, store_url=store_url, generated_at=generated_at, static="static", root=".",
        rows=first_rows, total=len(kept), data=data, integrity=integrity, problems=problems,
        more_problems=max(0, len(located) - len(problems)), with_problems=with_problems,
        filters={k: v for k, v in filters.items() if v}, id_shards=ID_SHARDS)
    _write(out / "index.html", page)
    return with_problems


def _audit_events(work: sqlite3.Connection, options: ReportOptions) -> Iterator[dict[str, Any]]:
    sql = "SELECT key, kind, session, data FROM records WHERE kind IN ('refusal', 'start', 'unreadable')"
    args: list[Any] = []
    if options.since is not None:
        sql += " AND (at IS NULL OR at >= ?)"
        args.append(options.since)
    if options.until is not None:
        sql += " AND (at IS NULL OR at <= ?)"
        args.append(options.until)
    if options.user:
        sql += " AND (subject = ? OR email = ?)"
        args.extend([options.user.lower()] * 2)
    if options.session is not None:
        sql += " AND session = ?"
        args.append(options.session)
    for key, kind, session, data in work.execute(sql + " ORDER BY at, chain, seq", args):
        yield audit_event(key, kind, session, bytes(data))


def audit_event(key: str, kind: str, session: str | None, data: bytes) -> dict[str, Any]:
    """A refusal, a gateway start or an unreadable record, as the audit page lists it."""
    try:
        rec = records.parse_json(data)
        if not isinstance(rec, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        return {"key": key, "kind": "unreadable", "at": None, "session": None, "href": None,
                "exchange_id": None, "decision": None}
    req = _obj(rec.get("request"))
    resp = _obj(rec.get("response"))
    gw = _obj(rec.get("gateway"))
    decisions = [decision_view(d) for d in rec.get("decisions") or [] if isinstance(d, dict)]
    deny = next((d for d in decisions if d.outcome in ("denied", "blocked")), decisions[-1] if decisions else None)
    body = _obj(req.get("body"))
    xid = rec.get("exchange_id") if isinstance(rec.get("exchange_id"), str) else None
    return {
        "key": key, "kind": rec.get("kind") if kind != "unreadable" else kind, "at": _request_time(rec),
        "exchange_id": xid, "session": session,
        "href": f"sessions/{session_slug(session)}.html#{xid}" if session else None,
        "identity": describe_identity(rec.get("identity")),
        "client": describe_client(rec.get("client"), _obj(req.get("headers"))),
        "method": req.get("method"), "host": req.get("host"), "path": req.get("path"),
        "model": req.get("model") or body.get("model"), "status": resp.get("status"),
        "decision": deny, "gateway": gw, "key_id": rec.get("key_id"), "previous": rec.get("previous"),
    }


def _write_audit(env: jinja2.Environment, work: sqlite3.Connection, out: Path, integrity: Integrity,
                 located: Mapping[IntegrityProblem, str | None], options: ReportOptions, store_url: str,
                 generated_at: str) -> int:
    count = work.execute("SELECT COUNT(*) FROM records WHERE kind='refusal' AND session IS NULL").fetchone()[0]
    problems = _problem_links(located, 2000)
    page = env.get_template("audit.html").generate(
        title=options.title, store_url=store_url, generated_at=generated_at, static="static", root=".",
        events=lambda: _audit_events(work, options), integrity=integrity, problems=problems,
        more_problems=max(0, len(located) - len(problems)))
    _write(out / "audit.html", page)
    return int(count)


def _write_id_shards(work: sqlite3.Connection, out: Path, kept: set[str]) -> None:
    """ids/<hh>.js: {id: [page, anchor, session]} for request and exchange ids, loaded on demand
    by the index's search (a script element: file:// pages may not fetch)."""
    work.create_function("shard", 1, id_shard, deterministic=True)
    query = """
        SELECT shard(ident) AS s, ident, session, xid FROM (
            SELECT exchange_id AS ident, session, exchange_id AS xid FROM records
                WHERE exchange_id IS NOT NULL AND kind != 'start'
            UNION ALL
            SELECT request_id, session, exchange_id FROM records
                WHERE request_id IS NOT NULL AND exchange_id IS NOT NULL AND kind != 'start')
        ORDER BY s"""
    written: set[str] = set()

    def emit(name: str, ids: dict[str, list[str]]) -> None:
        payload = json.dumps(ids, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
        _write(out / "ids" / f"{name}.js", f"window.gatehouseIdShard({json.dumps(name)},{payload});\n")
        written.add(name)

    current: str | None = None
    ids: dict[str, list[str]] = {}
    for s, ident, session, xid in work.execute(query):
        if s != current:
            if current is not None:
                emit(current, ids)
            current, ids = s, {}
        if session is not None and session_slug(session) in kept:
            ids[ident] = [f"sessions/{session_slug(session)}.html", xid, session]
        elif session is None:
            ids[ident] = ["audit.html", xid, ""]
    if current is not None:
        emit(current, ids)
    for i in range(ID_SHARDS):
        if f"{i:02x}" not in written:
            emit(f"{i:02x}", {})


def _copy_static(out: Path) -> None:
    for name in STATIC_FILES:
        src = TEMPLATES_PACKAGE_DIR / name
        _write(out / "static" / name, src.read_bytes())
