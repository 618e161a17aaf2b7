"""`build_report`: a recording store verified and rendered as a static HTML site.

`build_report(store, options)` verifies the store (`verify.verify_store`, as `gatehouse
verify` does), groups its records into client sessions and writes, into ``options.out``:

    index.html                 one row per session; filter and sort in the browser
    audit.html                 refusals without a session, gateway runs, integrity problems
    sessions/<slug>.html       one page per session, reading like the conversation
    sessions/<slug>.json       the session's transcript (addons/schemas/transcript.schema.json)
    ids/<hh>.js                request id / exchange id -> session lookup, sharded
    static/                    CSS and JS (no CDN, nothing fetched: works from file://)
    .gatehouse/state.sqlite    what was rendered from which records (incremental re-runs)

Memory is bounded by one session, not the store: a first pass copies each record into an
SQLite scratch index inside the output folder (index.py); each session is then read back, its
blobs loaded, rendered and dropped (sessions.py, render.py). A session whose records, integrity
and renderer are unchanged since the last run into the same folder is not rendered again
(state.py). (`verify.verify_store` keeps a few dozen bytes per record, not the records themselves.)

Pure: no mitmproxy import.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatehouse.recording.canonical import iso_time
from gatehouse.recording.stores import Store
from gatehouse.recording.verify import Problem
from gatehouse.report import index, render
from gatehouse.report.audit import audit_event
from gatehouse.report.integrity import Integrity, check_integrity
from gatehouse.report.links import session_slug
from gatehouse.report.progress import Progress
from gatehouse.report.recorded import parse_time
from gatehouse.report.state import (
    index_rows,
    is_rendered,
    open_state,
    remember_run,
    remember_session,
    remove_stale,
    session_fingerprint,
)

STATE_DIR = ".gatehouse"


class ReportError(Exception):
    """The report cannot be written (output folder unusable, store unreadable)."""


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


@dataclass
class ReportResult:
    records: int = 0
    sessions: int = 0
    rendered: int = 0
    reused: int = 0
    audit_events: int = 0
    integrity: Integrity | None = None
    sessions_with_problems: int = 0

    @property
    def ok(self) -> bool:
        return self.integrity is None or not self.integrity.problems


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


def build_report(store: Store, options: ReportOptions) -> ReportResult:
    """Verify `store` and render the report into `options.out`; see the module docstring."""
    out = Path(options.out)
    progress = options.progress or Progress(enabled=False)
    _prepare_out(out)
    result = ReportResult()
    generated_at = iso_time(time.time()) or ""
    env = render.environment()
    tdigest = render.templates_digest()
    page = {"title": options.title, "store_url": store.url, "generated_at": generated_at}
    selection = {"session": options.session, "since": options.since, "until": options.until, "user": options.user}

    if options.verify:
        progress.phase("verifying")
        integrity = check_integrity(store, trusted_keys=options.trusted_keys, trust=options.trust)
    else:
        integrity = Integrity(False, "none", "not checked")
    result.integrity = integrity

    state = open_state(out / STATE_DIR / "state.sqlite")
    work_path = out / STATE_DIR / "records.sqlite"
    try:
        work = index.open_index(work_path)
        try:
            progress.phase("reading")
            result.records = index.scan_records(store, work, progress)
            sessions = index.select_sessions(work, **selection)
            result.sessions = len(sessions)
            located = index.attribute_problems(work, integrity)
            by_session: dict[str, list[Problem]] = {}
            for p, sid in located.items():
                if sid is not None:
                    by_session.setdefault(sid, []).append(p)

            progress.phase("sessions", len(sessions))
            kept: set[str] = set()
            for session_id, _start in sessions:
                slug = session_slug(session_id)
                kept.add(slug)
                problems = by_session.get(session_id, [])
                fp = session_fingerprint(
                    session_id, index.session_record_hashes(work, session_id), problems, integrity, tdigest
                )
                if is_rendered(state, out, slug, fp):
                    result.reused += 1
                else:
                    rows = index.session_records(work, session_id)
                    row = render.write_session(env, store, integrity, session_id, rows, out, problems, **page)
                    remember_session(state, slug, session_id, fp, parse_time(row["start"]), row)
                    result.rendered += 1
                progress.advance()
            state.commit()

            remove_stale(state, out, kept)
            progress.phase("index")
            shown = {
                "since": iso_time(options.since),
                "until": iso_time(options.until),
                "user": options.user,
                "session": options.session,
            }
            result.sessions_with_problems = render.write_index(
                env,
                out,
                rows=lambda: index_rows(state, kept),
                total=len(kept),
                integrity=integrity,
                located=located,
                filters=shown,
                **page,
            )
            result.audit_events = index.count_sessionless_refusals(work)

            def events() -> Iterator[dict[str, Any]]:
                return (audit_event(*r) for r in index.audit_records(work, **selection))

            render.write_audit(env, out, events=events, integrity=integrity, located=located, **page)
            render.write_id_shards(out, index.id_rows(work), kept)
            render.copy_static(out)
            remember_run(state, generated_at)
            progress.finish()
        finally:
            work.close()
    finally:
        state.close()
        work_path.unlink(missing_ok=True)
    return result
