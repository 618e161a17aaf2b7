"""The report's first pass: every record of the store copied into an SQLite scratch file
(.gatehouse/records.sqlite, deleted at the end of the run), indexed by session, and every query
the report makes of it.

Records are small (the large parts are blobs), so the copy keeps memory bounded by one session
rather than the store: each session is read back from here when it is rendered.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gatehouse.recording.canonical import parse_json, sha256_ref
from gatehouse.recording.layout import parse_key
from gatehouse.recording.stores import Store
from gatehouse.recording.verify import Problem
from gatehouse.report.integrity import Integrity
from gatehouse.report.links import id_shard
from gatehouse.report.progress import Progress
from gatehouse.report.recorded import as_object, request_time

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY, chain TEXT, seq INTEGER, kind TEXT, exchange_id TEXT, request_id TEXT,
    session TEXT, at REAL, subject TEXT, email TEXT, hash TEXT, data BLOB);
CREATE INDEX IF NOT EXISTS records_session ON records(session, at, chain, seq);
"""


def open_index(path: Path) -> sqlite3.Connection:
    """A new, empty index at `path`, owner-only before SQLite opens it (it holds every record)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path)
    try:
        # A scratch database: nothing in it needs to survive a crash.
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA_SQL)
    except BaseException:
        db.close()
        raise
    return db


def _session_of(rec: Mapping[str, Any]) -> str | None:
    """The session a record belongs to; None for gateway runs and session-less audit events.

    A refusal belongs to a session when the client named it (header or metadata) or when the
    caller was identified (the gateway's idle-gap session of that caller); a refused token
    without a client session id is an audit event of its own.
    """
    kind = rec.get("kind")
    if kind == "start":
        return None
    session = as_object(rec.get("session"))
    sid = session.get("id") if isinstance(session.get("id"), str) else None
    if kind == "refusal":
        req = as_object(rec.get("request"))
        if req.get("method") == "CONNECT":
            return None
        if session.get("source") not in ("header", "metadata") and not rec.get("identity"):
            return None
    return sid


def scan_records(store: Store, db: sqlite3.Connection, progress: Progress | None = None) -> int:
    """Copy every record of the store into `db` with the fields sessions are cut and filtered by."""
    n = 0
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", batch)
        batch.clear()

    for key in store.list("records/"):
        p = parse_key(key)
        if p is None or p.kind != "record":
            continue
        try:
            data = store.get(key)
        except Exception:  # verify reports it; the report still renders the rest
            continue
        digest = sha256_ref(data)
        try:
            rec = parse_json(data)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            batch.append((key, p.chain, p.seq, "unreadable", None, None, None, None, None, None, digest, data))
            continue
        identity = as_object(rec.get("identity"))
        resp = as_object(rec.get("response"))
        xid = rec.get("exchange_id") if isinstance(rec.get("exchange_id"), str) else None
        rid = resp.get("request_id") if isinstance(resp.get("request_id"), str) else None
        batch.append(
            (
                key,
                p.chain,
                p.seq,
                str(rec.get("kind")),
                xid,
                rid,
                _session_of(rec),
                request_time(rec),
                (identity.get("subject") or "").lower() or None,
                (identity.get("email") or "").lower() or None,
                digest,
                data,
            )
        )
        n += 1
        if progress:
            progress.advance()
        if len(batch) >= 500:
            flush()
    flush()
    db.commit()
    return n


def select_sessions(
    db: sqlite3.Connection, *, session: str | None, since: float | None, until: float | None, user: str | None
) -> list[tuple[str, float | None]]:
    """Sessions that pass the filters: any of their exchanges in the time range, by the user."""
    where: list[str] = ["session IS NOT NULL"]
    having: list[str] = []
    args: list[Any] = []
    hargs: list[Any] = []
    if session is not None:
        where.append("session = ?")
        args.append(session)
    if since is not None:
        having.append("MAX(at) >= ?")
        hargs.append(since)
    if until is not None:
        having.append("MIN(at) <= ?")
        hargs.append(until)
    if user:
        u = user.lower()
        where.append("session IN (SELECT session FROM records WHERE subject = ? OR email = ?)")
        args.extend([u, u])
    sql = f"SELECT session, MIN(at) FROM records WHERE {' AND '.join(where)} GROUP BY session"
    if having:
        sql += " HAVING " + " AND ".join(having)
    return [(s, t) for s, t in db.execute(sql + " ORDER BY MIN(at), session", args + hargs)]


def session_record_hashes(db: sqlite3.Connection, session_id: str) -> list[tuple[str, str]]:
    """(store key, SHA-256 of the record) of a session's records, in the order they are rendered."""
    return db.execute("SELECT key, hash FROM records WHERE session=? ORDER BY at, chain, seq", (session_id,)).fetchall()


def session_records(db: sqlite3.Connection, session_id: str) -> list[tuple[str, bytes]]:
    """(store key, record bytes) of a session's records, ordered by request time."""
    return [
        (k, bytes(data))
        for k, data in db.execute(
            "SELECT key, data FROM records WHERE session=? ORDER BY at, chain, seq", (session_id,)
        )
    ]


def attribute_problems(db: sqlite3.Connection, integrity: Integrity) -> dict[Problem, str | None]:
    """The session each problem concerns (None: the store as a whole, or only the audit page).

    A problem names an exchange, a record, or (for records that are gone) a place in a chain:
    missing records concern the sessions of the records on either side of the gap, a truncated
    tail the session of the chain's last record present.
    """
    out: dict[Problem, str | None] = {}
    for p in integrity.problems:
        hit = None
        if p.exchange_id:
            hit = db.execute(
                "SELECT session FROM records WHERE exchange_id=? AND session IS NOT NULL LIMIT 1", (p.exchange_id,)
            ).fetchone()
        if hit is None and p.key.startswith("records/"):
            hit = db.execute("SELECT session FROM records WHERE key=? AND session IS NOT NULL", (p.key,)).fetchone()
        if hit is None and p.chain is not None and p.seq is not None:
            if p.check == "missing":
                hit = db.execute(
                    "SELECT session FROM records WHERE chain=? AND seq<? AND session IS NOT NULL "
                    "ORDER BY seq DESC LIMIT 1",
                    (p.chain, p.seq),
                ).fetchone()
                after = db.execute(
                    "SELECT session FROM records WHERE chain=? AND seq>? AND session IS NOT NULL ORDER BY seq LIMIT 1",
                    (p.chain, p.seq),
                ).fetchone()
                if after is not None and (hit is None or after[0] != hit[0]):
                    out.setdefault(p, hit[0] if hit else None)
                    if hit is not None:
                        # A second copy so both neighbouring sessions show the gap.
                        out[dataclasses.replace(p, exchange_id="")] = after[0]
                    else:
                        out[p] = after[0]
                    continue
            elif p.check in ("checkpoint", "previous-run"):
                hit = db.execute(
                    "SELECT session FROM records WHERE chain=? AND session IS NOT NULL ORDER BY seq DESC LIMIT 1",
                    (p.chain,),
                ).fetchone()
        out[p] = hit[0] if hit else None
    return out


def audit_records(
    db: sqlite3.Connection, *, session: str | None, since: float | None, until: float | None, user: str | None
) -> Iterator[tuple[str, str, str | None, bytes]]:
    """(key, kind, session, record bytes) of refusals, gateway starts and unreadable records that
    pass the filters (a record without a time passes the time range)."""
    sql = "SELECT key, kind, session, data FROM records WHERE kind IN ('refusal', 'start', 'unreadable')"
    args: list[Any] = []
    if since is not None:
        sql += " AND (at IS NULL OR at >= ?)"
        args.append(since)
    if until is not None:
        sql += " AND (at IS NULL OR at <= ?)"
        args.append(until)
    if user:
        sql += " AND (subject = ? OR email = ?)"
        args.extend([user.lower()] * 2)
    if session is not None:
        sql += " AND session = ?"
        args.append(session)
    for key, kind, sid, data in db.execute(sql + " ORDER BY at, chain, seq", args):
        yield key, kind, sid, bytes(data)


def count_sessionless_refusals(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM records WHERE kind='refusal' AND session IS NULL").fetchone()[0])


def id_rows(db: sqlite3.Connection) -> Iterator[tuple[str, str, str | None, str]]:
    """(shard, id, session, exchange id) for every request id and exchange id, ordered by shard."""
    db.create_function("shard", 1, id_shard, deterministic=True)
    query = """
        SELECT shard(ident) AS s, ident, session, xid FROM (
            SELECT exchange_id AS ident, session, exchange_id AS xid FROM records
                WHERE exchange_id IS NOT NULL AND kind != 'start'
            UNION ALL
            SELECT request_id, session, exchange_id FROM records
                WHERE request_id IS NOT NULL AND exchange_id IS NOT NULL AND kind != 'start')
        ORDER BY s"""
    yield from db.execute(query)
