"""Where a session's page is and which lookup shard an id is in: the names the pages link each
other by (sessions/<slug>.html, ids/<hh>.js)."""

from __future__ import annotations

import hashlib
import re

ID_SHARDS = 256
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
