"""Exchange records: schema, canonical JSON, content-addressed blobs, hash chain, signatures.

One record per exchange (see docs/recording-format.md and addons/schemas/record.schema.json).
A record is canonical JSON: keys sorted, no insignificant whitespace, ASCII only (every
non-ASCII character escaped, so even a lone surrogate from a client round-trips), no NaN.
Those bytes are what is signed, hashed and stored; a verifier re-encodes what it parsed and
refuses a record whose bytes differ, so there is exactly one encoding of any record.

The large parts of a Messages API request (system prompt, tool list, each message) and the
assistant's content are stored once as blobs named by the SHA-256 of their canonical JSON;
records hold the references, in order. Each record names the hash of the previous record of
its chain (one chain per gateway process run) and carries an Ed25519 signature.

Store layout (keys relative to the store root)::

    records/<chain-id>/<seq:012d>.json          one record
    blobs/sha256/<hh>/<hex>.json                one blob (hh = first two hex digits)
    checkpoints/<chain-id>/<seq:012d>.json      signed statement of a chain's head
    checkpoints/<chain-id>/<seq:012d>.prune.json signed statement that seq 0..N were pruned
    keys/<key-id>.pub                           public keys (PEM) that signed records

This module is pure: no mitmproxy, no I/O except through a store object given to the
reader functions (anything with ``get(key) -> bytes`` and ``list(prefix) -> Iterable[str]``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatehouse.masking.urlmask import UnmaskableUrl, mask_target

SCHEMA = "gatehouse.record/1"
CHECKPOINT_SCHEMA = "gatehouse.checkpoint/1"
SIGNATURE_ALG = "ed25519"
STATE_KEY_FILE = "recording-signing-key.pem"

RECORD_KINDS = ("start", "request", "exchange", "refusal")
# A JSON body (or the rest of one, once its blobs are taken out) up to this size stays in the
# record; a larger one becomes a blob so records stay small enough to list and read quickly.
INLINE_BODY_LIMIT = 8 * 1024
# Longest client-supplied id (session, agent) kept in a record.
MAX_ID_LEN = 200
# Without a session id from the client, a caller's exchanges are one session until this gap.
DEFAULT_IDLE_GAP_SECONDS = 30 * 60

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHAIN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


class RecordError(ValueError):
    """A record, blob or key is malformed."""


# -- canonical JSON and hashes -----------------------------------------------------------------

def canonical_json(obj: Any) -> bytes:
    """The one encoding of a JSON value that Gatehouse signs, hashes and stores."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity are refused (they have no canonical form)."""
    return json.loads(data, parse_constant=_reject_constant)


def is_canonical(data: bytes) -> bool:
    try:
        return canonical_json(parse_json(data)) == data
    except (ValueError, UnicodeDecodeError):
        return False


def sha256_ref(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ref_hex(ref: str) -> str:
    if not isinstance(ref, str) or not ref.startswith("sha256:") or not _HEX64.match(ref[7:]):
        raise RecordError(f"not a blob reference: {ref!r}")
    return ref[7:]


def json_safe(obj: Any) -> Any:
    """A copy of `obj` that `canonical_json` accepts: tuples become lists, sets sorted lists,
    non-finite floats None, other objects their `to_dict()` or `str()`."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((json_safe(v) for v in obj), key=lambda v: canonical_json(v))
    if hasattr(obj, "to_dict"):
        return json_safe(obj.to_dict())
    return str(obj)


def iso_time(t: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC with microseconds, e.g. ``2025-01-02T03:04:05.123456Z``."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso_time(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# -- store keys ---------------------------------------------------------------------------------

def new_chain_id(now: float | None = None) -> str:
    """Sortable by start time: ``20250102T030405Z-1a2b3c4d``."""
    t = time.time() if now is None else now
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


def is_chain_id(value: str) -> bool:
    return bool(_CHAIN_ID.match(value))


def record_key(chain_id: str, seq: int) -> str:
    return f"records/{chain_id}/{seq:012d}.json"


def checkpoint_key(chain_id: str, seq: int, *, prune: bool = False) -> str:
    return f"checkpoints/{chain_id}/{seq:012d}{'.prune' if prune else ''}.json"


def blob_key(ref_or_hex: str) -> str:
    hx = ref_hex(ref_or_hex) if ref_or_hex.startswith("sha256:") else ref_or_hex
    if not _HEX64.match(hx):
        raise RecordError(f"not a blob hash: {ref_or_hex!r}")
    return f"blobs/sha256/{hx[:2]}/{hx}.json"


def public_key_key(key_id: str) -> str:
    return f"keys/{key_id}.pub"


@dataclass(frozen=True)
class ParsedKey:
    """What a store key names: ``kind`` is record, checkpoint, prune, blob or key."""

    kind: str
    chain: str = ""
    seq: int = -1
    hex: str = ""
    key_id: str = ""


_KEY_PATTERNS = [
    ("record", re.compile(r"^records/(?P<chain>[^/]+)/(?P<seq>[0-9]{12})\.json$")),
    ("checkpoint", re.compile(r"^checkpoints/(?P<chain>[^/]+)/(?P<seq>[0-9]{12})\.json$")),
    ("prune", re.compile(r"^checkpoints/(?P<chain>[^/]+)/(?P<seq>[0-9]{12})\.prune\.json$")),
    ("blob", re.compile(r"^blobs/sha256/(?P<hh>[0-9a-f]{2})/(?P<hex>[0-9a-f]{64})\.json$")),
    ("key", re.compile(r"^keys/(?P<key_id>[0-9a-f]{16})\.pub$")),
]


def parse_key(key: str) -> ParsedKey | None:
    """Classify a store key; None for anything that is not part of the layout."""
    for kind, pattern in _KEY_PATTERNS:
        m = pattern.match(key)
        if not m:
            continue
        g = m.groupdict()
        if kind == "blob" and g["hh"] != g["hex"][:2]:
            return None
        return ParsedKey(kind, g.get("chain") or "", int(g["seq"]) if g.get("seq") else -1,
                         g.get("hex") or "", g.get("key_id") or "")
    return None


# -- keys and signatures ----------------------------------------------------------------------

def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(data: bytes, source: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or a base64 raw 32-byte key."""
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = Ed25519PublicKey.from_public_bytes(_decode_raw_key(text))
    except (ValueError, TypeError, binascii.Error) as e:
        raise RecordError(f"{source}: not an Ed25519 public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise RecordError(f"{source}: not an Ed25519 public key ({type(key).__name__})")
    return key


def _decode_raw_key(text: bytes) -> bytes:
    raw = base64.b64decode(text, validate=True) if len(text) != 64 else bytes.fromhex(text.decode())
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


class SigningKey:
    """The gateway's Ed25519 key. Never written into a record, a flow or a log."""

    def __init__(self, private_key: Ed25519PrivateKey, source: str = "") -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)
        self.source = source

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(Ed25519PrivateKey.generate(), "generated")

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> "SigningKey":
        """PEM (PKCS#8, as `openssl genpkey -algorithm ed25519` writes) or a base64/hex 32-byte seed."""
        text = data.strip()
        try:
            if text.startswith(b"-----BEGIN"):
                key = serialization.load_pem_private_key(text, password=None)
            else:
                key = Ed25519PrivateKey.from_private_bytes(_decode_raw_key(text))
        except (ValueError, TypeError, binascii.Error) as e:
            # The message of a PEM parse error never contains key material.
            raise RecordError(f"{source}: not an Ed25519 private key ({e})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise RecordError(f"{source}: not an Ed25519 private key ({type(key).__name__})")
        return cls(key, source)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def public_pem(self) -> bytes:
        return public_key_pem(self.public_key)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._private.sign(data)).decode("ascii")

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, source={self.source!r})"


def load_signing_key(*, key_file: Path | None = None, key_env: str | None = None,
                     state_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> SigningKey:
    """The recording key: the configured file or environment variable (replicas share it),
    else one generated on first run in the state directory (mode 0600, single node)."""
    from gatehouse.common.statefiles import check_private, load_or_create

    environ = os.environ if environ is None else environ
    if key_file is not None:
        try:
            check_private(key_file)
            data = Path(key_file).read_bytes()
        except OSError as e:  # includes check_private's refusal of a group/world-readable file
            raise RecordError(f"signing key file {key_file}: {e.strerror or e}") from None
        return SigningKey.from_bytes(data, f"signing key file {key_file}")
    if key_env is not None:
        value = environ.get(key_env)
        if not value:
            raise RecordError(f"environment variable {key_env} (the recording signing key) is not set")
        return SigningKey.from_bytes(value.encode(), f"environment variable {key_env}")
    if state_dir is None:
        raise RecordError("no signing key configured and no state directory to keep a generated one")
    path = Path(state_dir) / STATE_KEY_FILE
    data = load_or_create(path, lambda: SigningKey.generate().private_pem())
    return SigningKey.from_bytes(data, f"state file {path}")


def signed_payload(doc: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the canonical document without its `signature`."""
    return canonical_json({k: v for k, v in doc.items() if k != "signature"})


def seal(doc: dict[str, Any], key: SigningKey) -> bytes:
    """Sign `doc` (in place) and return its canonical bytes."""
    doc.pop("signature", None)
    doc["signature"] = {"alg": SIGNATURE_ALG, "key_id": key.key_id, "value": key.sign(signed_payload(doc))}
    return canonical_json(doc)


def check_signature(doc: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """None when the signature verifies with one of `keys`, else what is wrong."""
    sig = doc.get("signature")
    if not isinstance(sig, dict):
        return "no signature"
    if sig.get("alg") != SIGNATURE_ALG:
        return f"unsupported signature algorithm {sig.get('alg')!r}"
    key_id = sig.get("key_id")
    key = keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        return f"signed by key {key_id!r}, which is not a trusted key"
    try:
        key.verify(base64.b64decode(sig.get("value", ""), validate=True), signed_payload(doc))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return f"signature does not verify with key {key_id} (the content was changed after signing)"
    return None


# -- chain documents ---------------------------------------------------------------------------

def seal_record(body: dict[str, Any], *, chain_id: str, seq: int, prev: str | None, at: float,
                key: SigningKey) -> tuple[bytes, str]:
    """Link `body` into its chain, sign it; returns (canonical bytes, ``sha256:`` hash)."""
    doc = dict(body)
    doc["schema"] = SCHEMA
    doc["chain"] = {"id": chain_id, "seq": seq, "prev": prev, "at": iso_time(at)}
    data = seal(doc, key)
    return data, sha256_ref(data)


def start_record_body(*, previous: Mapping[str, Any] | None, gateway_version: str, policy_sha256: str | None,
                      node: str, key_id: str, retention_days: int | None) -> dict[str, Any]:
    """Seq 0 of each chain: who started it and which record ended the previous run's chain."""
    return {
        "kind": "start",
        "gateway": {"version": gateway_version, "policy_sha256": policy_sha256, "node": node,
                    "retention_days": retention_days},
        "previous": dict(previous) if previous else None,
        "key_id": key_id,
    }


def make_checkpoint(*, chain_id: str, seq: int, head: str, key: SigningKey, at: float,
                    kind: str = "head") -> bytes:
    """A signed statement that record `seq` of the chain hashes to `head`.

    kind "head": the chain had reached `seq` (later records may follow, none may be missing).
    kind "prune": records 0..seq were deleted on purpose; `head` is the hash the next record names.
    """
    doc = {"schema": CHECKPOINT_SCHEMA, "kind": kind, "chain": chain_id, "seq": seq, "head": head,
           "at": iso_time(at)}
    return seal(doc, key)


# -- sessions ------------------------------------------------------------------------------------

class SessionTracker:
    """Sessions for clients that send no session id: one caller's exchanges until an idle gap.

    In memory, per gateway process: replicas behind a load balancer each cut their own
    sessions for such clients (Claude Code always sends its id, so this is the fallback).
    """

    def __init__(self, idle_gap: float = DEFAULT_IDLE_GAP_SECONDS, max_callers: int = 100_000) -> None:
        self.idle_gap = idle_gap
        self.max_callers = max_callers
        self._last: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def session_for(self, caller: str, at: float) -> str:
        with self._lock:
            found = self._last.pop(caller, None)
            # An exchange that started before the caller's last one is in that session too.
            if found and at - found[1] <= self.idle_gap:
                sid, last = found[0], max(found[1], at)
            else:
                digest = hashlib.sha256(f"{caller}\n{at:.6f}".encode()).hexdigest()[:24]
                sid, last = f"idle-{digest}", at
            self._last[caller] = (sid, last)
            if len(self._last) > self.max_callers:
                self._last.pop(next(iter(self._last)))  # the least recently seen caller
            return sid


def _clip(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[:MAX_ID_LEN]


def derive_session(headers: Mapping[str, str], body: Any, identity: Mapping[str, Any] | None, at: float,
                   tracker: SessionTracker | None) -> dict[str, Any]:
    """The client session of an exchange: Claude Code's header, else ``metadata.user_id``'s
    ``session_id``, else the caller plus an idle gap."""
    session = {"id": None, "source": None,
               "agent_id": _clip(headers.get("x-claude-code-agent-id")),
               "parent_agent_id": _clip(headers.get("x-claude-code-parent-agent-id"))}
    sid = _clip(headers.get("x-claude-code-session-id"))
    if sid:
        session.update(id=sid, source="header")
        return session
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        user_id = body["metadata"].get("user_id")
        if isinstance(user_id, str) and user_id.startswith("{"):
            try:
                parsed = parse_json(user_id)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and _clip(parsed.get("session_id")):
                session.update(id=_clip(parsed["session_id"]), source="metadata")
                return session
    if identity:
        caller = f"{identity.get('issuer', '')}\n{identity.get('subject', '')}"
    else:
        caller = "anonymous"
    caller += "\n" + (headers.get("user-agent") or "")
    tracker = tracker or SessionTracker()
    session.update(id=tracker.session_for(caller, at), source="idle")
    return session


# -- building an exchange record ---------------------------------------------------------------

# Recorded request headers: an allowlist, so an auth header (x-api-key, authorization,
# proxy-authorization, cookie) can never reach a record whatever a client invents.
REQUEST_HEADERS = frozenset({
    "accept", "accept-encoding", "anthropic-beta", "anthropic-version", "anthropic-dangerous-direct-browser-access",
    "content-encoding", "content-length", "content-type", "user-agent", "x-app", "x-claude-code-session-id",
    "x-claude-code-agent-id", "x-claude-code-parent-agent-id", "x-gatehouse-exchange-id",
})
REQUEST_HEADER_PREFIXES = ("x-stainless-",)
RESPONSE_HEADERS = frozenset({
    "content-encoding", "content-length", "content-type", "request-id", "retry-after", "x-should-retry",
    "x-gatehouse-exchange-id", "anthropic-organization-id",
})
RESPONSE_HEADER_PREFIXES = ("anthropic-ratelimit-",)


def select_headers(headers: Iterable[tuple[str, str]], allowed: frozenset[str],
                   prefixes: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        n = name.lower()
        if n in allowed or n.startswith(prefixes):
            out[n] = f"{out[n]}, {value}" if n in out else value
    return out


@dataclass
class RequestInput:
    method: str
    scheme: str
    host: str
    port: int
    path: str
    headers: list[tuple[str, str]]
    body: bytes | None  # content-encoding already removed


@dataclass
class ResponseInput:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | None
    streamed: bool = False
    # The message the client received, reassembled by the streaming pipeline (post-masking).
    assembled: dict[str, Any] | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ExchangeInput:
    """Plain data captured from a flow: what `build_record` turns into a record."""

    kind: str  # request | exchange | refusal
    exchange_id: str
    request: RequestInput
    response: ResponseInput | None = None
    identity: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    request_findings: list[dict[str, Any]] = field(default_factory=list)
    response_findings: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    request_at: float = 0.0
    first_byte_at: float | None = None
    end_at: float | None = None


class Masker(Protocol):
    def mask_for_record(self, obj: Any) -> tuple[Any, list[Any]]: ...
    def mask_text(self, text: str, where: str = "") -> tuple[str, list[Any]]: ...


@dataclass
class BuiltRequest:
    """The request part of a record, its blobs and what was derived from the raw request."""

    part: dict[str, Any]
    blobs: dict[str, bytes]
    findings: list[dict[str, Any]]
    session: dict[str, Any]
    client: dict[str, Any]


@dataclass
class BuiltRecord:
    body: dict[str, Any]
    blobs: dict[str, bytes]  # hex -> canonical bytes


class _Blobs:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def add(self, value: Any) -> str:
        data = canonical_json(value)
        hx = hashlib.sha256(data).hexdigest()
        self.blobs.setdefault(hx, data)
        return "sha256:" + hx


def _content_type(headers: Iterable[tuple[str, str]]) -> str:
    for name, value in headers:
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


def _decode_body(body: bytes | None, content_type: str) -> tuple[str, Any]:
    """("none"|"json"|"text"|"binary", value)."""
    if not body:
        return "none", None
    looks_json = content_type.endswith("json") or body[:1] in (b"{", b"[")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "binary", None
    if looks_json:
        try:
            return "json", parse_json(text)
        except ValueError:
            pass
    return "text", text


def _mask(masker: Masker | None, obj: Any) -> tuple[Any, list[dict[str, Any]]]:
    if masker is None:
        return obj, []
    masked, findings = masker.mask_for_record(obj)
    return masked, [json_safe(f) for f in findings]


def _put_body(target: dict[str, Any], value: Any, blobs: _Blobs) -> None:
    """A JSON value inline when small, else as a blob."""
    if value is None:
        target["body"] = None
        return
    if len(canonical_json(value)) <= INLINE_BODY_LIMIT:
        target["body"] = value
    else:
        target["body_blob"] = blobs.add(value)


def build_request(req: RequestInput, *, masker: Masker | None, identity: dict[str, Any] | None,
                  at: float, tracker: SessionTracker | None) -> BuiltRequest:
    headers = {n.lower(): v for n, v in req.headers}
    kind, value = _decode_body(req.body, _content_type(req.headers))
    session = derive_session(headers, value if kind == "json" else None, identity, at, tracker)
    beta = headers.get("anthropic-beta")
    client = {
        "user_agent": headers.get("user-agent"),
        "app": headers.get("x-app"),
        "anthropic_version": headers.get("anthropic-version"),
        "anthropic_beta": [b.strip() for b in beta.split(",") if b.strip()] if beta else [],
    }
    selected = select_headers(req.headers, REQUEST_HEADERS, REQUEST_HEADER_PREFIXES)
    # Session and client values come from client headers too: masked like everything else (a
    # secret pasted into a session id or user agent must not reach the record or the report).
    # Masking is deterministic, so a masked session id still groups the same exchanges.
    # Method, host and path too: on a refused request they are whatever the caller sent.
    path = req.path
    url_findings: list[dict[str, Any]] = []
    if masker is not None:
        try:
            path, found = mask_target(masker, path)
            url_findings = [json_safe(f) for f in found]
        except UnmaskableUrl:
            path = "/[MASKED:url]"
    masked, findings = _mask(masker, {"method": req.method, "host": req.host, "path": path, "headers": selected,
                                      "body": value, "session": session, "client": client})
    findings = url_findings + findings
    body = masked["body"]
    session, client = masked["session"], masked["client"]

    blobs = _Blobs()
    part: dict[str, Any] = {
        "method": masked["method"], "scheme": req.scheme, "host": masked["host"], "port": req.port,
        "path": masked["path"], "headers": masked["headers"], "size": len(req.body or b""),
        "encoding": kind, "model": None, "stream": None,
        "system": None, "tools": None, "messages": None, "body": None,
    }
    if kind == "json" and isinstance(body, dict):
        rest = dict(body)
        if "system" in rest:
            part["system"] = blobs.add(rest.pop("system"))
        if "tools" in rest:
            part["tools"] = blobs.add(rest.pop("tools"))
        if isinstance(rest.get("messages"), list):
            # In order: the report shows each turn's new messages by comparing these lists.
            part["messages"] = [blobs.add(m) for m in rest.pop("messages")]
        if isinstance(rest.get("model"), str):
            part["model"] = rest["model"]
        if isinstance(rest.get("stream"), bool):
            part["stream"] = rest["stream"]
        _put_body(part, rest, blobs)
    elif kind in ("json", "text"):
        _put_body(part, body, blobs)
    return BuiltRequest(part, blobs.blobs, findings, session, client)


def default_sse_assembler(data: bytes) -> dict[str, Any] | None:
    """A Messages API message from a buffered SSE body, via the core SSE module."""
    try:
        from gatehouse.wire import sse
    except ImportError:
        return None
    return sse.assemble_message(sse.parse_sse(data))


def _split_message(msg: dict[str, Any], part: dict[str, Any], blobs: _Blobs) -> None:
    """A Messages API message: content as a blob shaped like a request message, so the next
    turn's copy of it (the client resends the conversation) is the same blob."""
    rest = {k: v for k, v in msg.items() if k != "content"}
    part["message"] = rest
    part["content"] = blobs.add({"role": msg.get("role", "assistant"), "content": msg.get("content", [])})


def build_response(resp: ResponseInput, *, masker: Masker | None,
                   sse_assembler: Callable[[bytes], dict[str, Any] | None] | None) -> tuple[dict[str, Any], dict[str, bytes], list[dict[str, Any]]]:
    selected = select_headers(resp.headers, RESPONSE_HEADERS, RESPONSE_HEADER_PREFIXES)
    ctype = _content_type(resp.headers)
    message: dict[str, Any] | None = None
    kind, value = "none", None
    if resp.assembled is not None:
        message, kind = resp.assembled, "sse"
    elif resp.body and ctype == "text/event-stream":
        assembler = sse_assembler if sse_assembler is not None else default_sse_assembler
        try:
            message = assembler(resp.body)
        except Exception:  # a malformed stream is recorded as text, not lost
            message = None
        if message is not None:
            kind = "sse"
        else:
            kind, value = _decode_body(resp.body, ctype)
    else:
        kind, value = _decode_body(resp.body, ctype)
        if kind == "json" and isinstance(value, dict) and value.get("type") == "message":
            message, value = value, None

    masked, findings = _mask(masker, {"headers": selected, "message": message, "body": value})
    blobs = _Blobs()
    part: dict[str, Any] = {
        "status": resp.status, "headers": masked["headers"], "request_id": masked["headers"].get("request-id"),
        "streamed": resp.streamed, "size": len(resp.body) if resp.body is not None and not resp.streamed else None,
        "encoding": kind, "message": None, "content": None, "body": None,
    }
    if masked["message"] is not None:
        _split_message(masked["message"], part, blobs)
    elif kind in ("json", "text"):
        body = masked["body"]
        if part["request_id"] is None and isinstance(body, dict) and isinstance(body.get("request_id"), str):
            part["request_id"] = body["request_id"]
        _put_body(part, body, blobs)
    return part, blobs.blobs, findings


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((b - a) * 1000, 3)


def build_record(inp: ExchangeInput, *, masker: Masker | None, gateway_version: str, policy_sha256: str | None,
                 tracker: SessionTracker | None = None, built_request: BuiltRequest | None = None,
                 sse_assembler: Callable[[bytes], dict[str, Any] | None] | None = None) -> BuiltRecord:
    """The unsigned body of a record (the journal links and signs it) and its blobs.

    `built_request` reuses the request part already built for the ``request`` record of a
    streamed exchange, so a long conversation is parsed and masked once, not twice.
    """
    if inp.kind not in ("request", "exchange", "refusal"):
        raise RecordError(f"unknown record kind {inp.kind!r}")
    req = built_request or build_request(inp.request, masker=masker, identity=inp.identity,
                                         at=inp.request_at, tracker=tracker)
    blobs = dict(req.blobs)
    response = None
    response_findings: list[dict[str, Any]] = []
    if inp.response is not None and inp.kind != "request":
        response, rblobs, response_findings = build_response(inp.response, masker=masker, sse_assembler=sse_assembler)
        blobs.update(rblobs)
    # Decisions and errors are the gateway's own words, but may quote content: masked too.
    extra, extra_findings = _mask(masker, {"decisions": json_safe(inp.decisions), "errors": list(inp.errors)})
    decisions = []
    for d in extra["decisions"]:
        d = dict(d)
        if isinstance(d.get("at"), (int, float)) and not isinstance(d.get("at"), bool):
            d["at"] = iso_time(float(d["at"]))
        decisions.append(d)
    end = inp.end_at if inp.kind != "request" else None
    body = {
        "kind": inp.kind,
        "exchange_id": inp.exchange_id,
        "gateway": {"version": gateway_version, "policy_sha256": policy_sha256},
        "timing": {
            "request": iso_time(inp.request_at),
            "first_byte": iso_time(inp.first_byte_at),
            "end": iso_time(end),
            "ttfb_ms": _ms(inp.request_at, inp.first_byte_at),
            "duration_ms": _ms(inp.request_at, end),
        },
        "identity": json_safe(inp.identity),
        "session": req.session,
        "client": req.client,
        "request": req.part,
        "response": response,
        "decisions": decisions,
        "findings": {
            "request": json_safe(inp.request_findings),
            "response": json_safe(inp.response_findings) + json_safe(inp.response.findings if inp.response else []),
            "record": req.findings + response_findings + extra_findings,
        },
        "errors": extra["errors"],
        # A masker with no rules (masking disabled by the policy) masks nothing.
        "masked": masker is not None and bool(getattr(masker, "enabled", True)),
    }
    return BuiltRecord(body, blobs)


# -- reading -------------------------------------------------------------------------------------

class ReadableStore(Protocol):
    def get(self, key: str) -> bytes: ...
    def list(self, prefix: str = "") -> Iterable[str]: ...


def blob_refs(record: Mapping[str, Any]) -> list[str]:
    """Every blob a record references, in record order (system, tools, messages..., response)."""
    refs: list[str] = []
    req = record.get("request") or {}
    for name in ("system", "tools"):
        if isinstance(req.get(name), str):
            refs.append(req[name])
    refs.extend(r for r in (req.get("messages") or []) if isinstance(r, str))
    if isinstance(req.get("body_blob"), str):
        refs.append(req["body_blob"])
    resp = record.get("response") or {}
    for name in ("content", "body_blob"):
        if isinstance(resp.get(name), str):
            refs.append(resp[name])
    return refs


def list_chains(store: ReadableStore) -> list[str]:
    chains = {p.chain for k in store.list("records/") if (p := parse_key(k)) and p.kind == "record"}
    return sorted(chains)


def iter_records(store: ReadableStore, *, chains: Sequence[str] | None = None,
                 kinds: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """Records in chain order (chains sorted by start time, then seq). Not verified: run
    `verify.verify_store` for that. Each record gets a ``_key`` entry naming its store key."""
    by_chain: dict[str, list[tuple[int, str]]] = {}
    for k in store.list("records/"):
        p = parse_key(k)
        if p and p.kind == "record" and (chains is None or p.chain in chains):
            by_chain.setdefault(p.chain, []).append((p.seq, k))
    for chain in sorted(by_chain):
        for _, k in sorted(by_chain[chain]):
            rec = parse_json(store.get(k))
            if kinds is None or rec.get("kind") in kinds:
                rec["_key"] = k
                yield rec


def load_blob(store: ReadableStore, ref: str) -> Any:
    return parse_json(store.get(blob_key(ref)))


def expand_request_body(record: Mapping[str, Any], store: ReadableStore) -> Any:
    """The recorded (masked) request body as the client sent it, blobs put back."""
    req = record.get("request") or {}
    if isinstance(req.get("body_blob"), str):
        body = load_blob(store, req["body_blob"])
    else:
        body = req.get("body")
    if isinstance(body, dict):
        body = dict(body)
        if req.get("system"):
            body["system"] = load_blob(store, req["system"])
        if req.get("tools"):
            body["tools"] = load_blob(store, req["tools"])
        if req.get("messages") is not None:
            body["messages"] = [load_blob(store, r) for r in req["messages"]]
    return body


def response_message(record: Mapping[str, Any], store: ReadableStore) -> dict[str, Any] | None:
    """The (masked) assistant message the client received, content put back; None if none."""
    resp = record.get("response") or {}
    if resp.get("message") is None:
        return None
    msg = dict(resp["message"])
    if resp.get("content"):
        msg["content"] = load_blob(store, resp["content"])["content"]
    return msg


def response_body(record: Mapping[str, Any], store: ReadableStore) -> Any:
    """The response body when it was not a message (an error, a count_tokens result...)."""
    resp = record.get("response") or {}
    if isinstance(resp.get("body_blob"), str):
        return load_blob(store, resp["body_blob"])
    return resp.get("body")
