"""What earlier runs rendered into the same report folder (.gatehouse/state.sqlite): each session's
fingerprint and index row, so that a re-run renders only the sessions whose records, integrity
problems or renderer changed, and removes the pages of sessions no longer selected."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gatehouse.recording.verify import Problem
from gatehouse.report.integrity import Integrity, problem_json
from gatehouse.report.render import RENDERER_VERSION

_STATE_SQL = """
CREATE TABLE IF NOT EXISTS sessions (
    slug TEXT PRIMARY KEY, session_id TEXT, fingerprint TEXT, start REAL, row TEXT);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""


def open_state(path: Path) -> sqlite3.Connection:
    """The state at `path`, created owner-only before SQLite opens it."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    state = sqlite3.connect(path)
    state.executescript(_STATE_SQL)
    return state


def session_fingerprint(
    session_id: str, rows: Sequence[tuple[str, str]], problems: Iterable[Problem], integrity: Integrity, tdigest: str
) -> str:
    """`rows`: (store key, record hash) of the session's records; `tdigest`: the templates' digest."""
    h = hashlib.sha256()
    for part in (RENDERER_VERSION, tdigest, session_id, integrity.trust, str(integrity.checked)):
        h.update(part.encode("utf-8", "surrogatepass") + b"\0")
    for key, digest in rows:
        h.update(f"{key}\0{digest}\0".encode())
    for p in sorted(json.dumps(problem_json(x), sort_keys=True) for x in problems):
        h.update(p.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def is_rendered(state: sqlite3.Connection, out: Path, slug: str, fingerprint: str) -> bool:
    """The session's page and transcript are in `out`, rendered from what has this fingerprint."""
    prev = state.execute("SELECT fingerprint FROM sessions WHERE slug=?", (slug,)).fetchone()
    return bool(
        prev
        and prev[0] == fingerprint
        and (out / "sessions" / f"{slug}.html").exists()
        and (out / "sessions" / f"{slug}.json").exists()
    )


def remember_session(
    state: sqlite3.Connection, slug: str, session_id: str, fingerprint: str, start: float | None, row: dict[str, Any]
) -> None:
    state.execute(
        "INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?)", (slug, session_id, fingerprint, start, json.dumps(row))
    )


def remove_stale(state: sqlite3.Connection, out: Path, kept: set[str]) -> None:
    """Pages of sessions not in this run (another filter, or records pruned) are removed."""
    for (slug,) in state.execute("SELECT slug FROM sessions").fetchall():
        if slug in kept:
            continue
        for ext in ("html", "json"):
            (out / "sessions" / f"{slug}.{ext}").unlink(missing_ok=True)
        state.execute("DELETE FROM sessions WHERE slug=?", (slug,))
    state.commit()


def index_rows(state: sqlite3.Connection, kept: set[str]) -> Iterator[dict[str, Any]]:
    """The index rows of the sessions in this run, newest first."""
    for slug, row in state.execute("SELECT slug, row FROM sessions ORDER BY start DESC, slug"):
        if slug in kept:
            yield json.loads(row)


def remember_run(state: sqlite3.Connection, generated_at: str) -> None:
    state.execute("INSERT OR REPLACE INTO meta VALUES ('generated_at', ?)", (generated_at,))
    state.commit()
