"""The store layout: the key of every object a recording store holds, and what a key names.

Keys are relative to the store root::

    records/<chain-id>/<seq:012d>.json          one record
    blobs/sha256/<hh>/<hex>.json                one blob (hh = first two hex digits)
    checkpoints/<chain-id>/<seq:012d>.json      signed statement of a chain's head
    checkpoints/<chain-id>/<seq:012d>.prune.json signed statement that seq 0..N were pruned
    keys/<key-id>.pub                           public keys (PEM) that signed records
    approvals/...                               the approvals store (gatehouse.approvals.store):
                                                not records; verify and prune leave it alone

A chain id sorts by the time its gateway run started. Pure: no I/O.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from gatehouse.recording.canonical import SHA256_HEX, RecordError, ref_hex

# The approvals store's objects live beside the records, under this prefix.
APPROVALS_PREFIX = "approvals/"


def new_chain_id(now: float | None = None) -> str:
    """Sortable by start time: ``20250102T030405Z-1a2b3c4d``."""
    t = time.time() if now is None else now
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


def record_key(chain_id: str, seq: int) -> str:
    return f"records/{chain_id}/{seq:012d}.json"


def checkpoint_key(chain_id: str, seq: int, *, prune: bool = False) -> str:
    return f"checkpoints/{chain_id}/{seq:012d}{'.prune' if prune else ''}.json"


def blob_key(ref_or_hex: str) -> str:
    hx = ref_hex(ref_or_hex) if ref_or_hex.startswith("sha256:") else ref_or_hex
    if not SHA256_HEX.match(hx):
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
        return ParsedKey(
            kind, g.get("chain") or "", int(g["seq"]) if g.get("seq") else -1, g.get("hex") or "", g.get("key_id") or ""
        )
    return None
