"""The pages: the Jinja environment over templates/, and the files written into the report folder
(session pages and transcripts, the index, the audit page, the id lookup shards, static files).

Autoescape is on for every template: all recorded content is untrusted. Every file is replaced
atomically and owner-only: the folder holds conversation content.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from gatehouse.recording.stores import Store
from gatehouse.recording.verify import Problem
from gatehouse.report.filters import fmt_duration, fmt_int, fmt_time, json_for_script, masked_text, pretty_json
from gatehouse.report.integrity import Integrity
from gatehouse.report.links import ID_SHARDS, session_slug
from gatehouse.report.sessions import SessionBuilder
from gatehouse.report.transcript import transcript

# Part of every session's fingerprint: bump it when the view model changes in a way the
# template digest does not show, so that a re-run re-renders every session.
RENDERER_VERSION = "1"
TEMPLATES_PACKAGE_DIR = Path(__file__).resolve().parent / "templates"
STATIC_FILES = ("report.css", "index.js", "session.js", "audit.js")
INDEX_PAGE_ROWS = 100  # rows rendered in the HTML for readers without JavaScript


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_PACKAGE_DIR)),
        autoescape=True,  # every template, whatever its name: all recorded content is untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(masked=masked_text, time=fmt_time, duration=fmt_duration, num=fmt_int, pretty_json=pretty_json)
    return env


def templates_digest() -> str:
    h = hashlib.sha256(RENDERER_VERSION.encode())
    for p in sorted(TEMPLATES_PACKAGE_DIR.iterdir()):
        if p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def write_file(path: Path, data: str | bytes | Iterable[str]) -> None:
    """Replace `path` atomically with an owner-only file.

    Not `durable.replace_durable`: a report is rebuilt from the store at will, so its pages
    need no fsync (one per page would dominate a run over thousands of sessions), and a page
    is streamed from the template in chunks rather than held whole. The temporary name is
    fixed (a crashed run's leftover is overwritten by the next): two reports built into one
    folder at the same time are not supported.
    """
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


def write_session(
    env: jinja2.Environment,
    store: Store,
    integrity: Integrity,
    session_id: str,
    rows: Sequence[tuple[str, bytes]],
    out: Path,
    problems: Sequence[Problem],
    *,
    store_url: str,
    generated_at: str,
    title: str,
) -> dict[str, Any]:
    """One session's page and transcript from its records; its row for the index."""
    builder = SessionBuilder(session_id, store, integrity, problems)
    view = builder.build(rows)
    doc = transcript(view, builder.blobs, store_url=store_url, generated_at=generated_at)
    html = env.get_template("session.html").render(
        s=view, title=title, store_url=store_url, generated_at=generated_at, static="../static", root=".."
    )
    write_file(out / "sessions" / f"{view.slug}.json", json.dumps(doc, ensure_ascii=False, indent=1, default=str))
    write_file(out / "sessions" / f"{view.slug}.html", html)
    return view.index_row()


def _problem_links(located: Mapping[Problem, str | None], limit: int) -> list[tuple[Problem, str | None]]:
    out: list[tuple[Problem, str | None]] = []
    for p, sid in located.items():
        if len(out) >= limit:
            break
        if sid is None:
            out.append((p, None))
        else:
            anchor = f"#{p.exchange_id}" if p.exchange_id else "#integrity"
            out.append((p, f"sessions/{session_slug(sid)}.html{anchor}"))
    return out


def write_index(
    env: jinja2.Environment,
    out: Path,
    *,
    rows: Callable[[], Iterator[dict[str, Any]]],
    total: int,
    integrity: Integrity,
    located: Mapping[Problem, str | None],
    filters: Mapping[str, str | None],
    title: str,
    store_url: str,
    generated_at: str,
) -> int:
    """index.html from the sessions' rows (`rows()` is read twice); the sessions with problems."""
    with_problems = 0
    first_rows: list[dict[str, Any]] = []
    for row in rows():
        if not row["integrity"]["ok"]:
            with_problems += 1
        if len(first_rows) < INDEX_PAGE_ROWS:
            first_rows.append(row)

    def data() -> Iterator[Markup]:
        # Streamed into the page: the index's data is as large as the store has sessions.
        yield Markup("[")
        for i, row in enumerate(rows()):
            yield Markup("," if i else "") + json_for_script(row)
        yield Markup("]")

    problems = _problem_links(located, 200)
    page = env.get_template("index.html").generate(
        title=title,
        store_url=store_url,
        generated_at=generated_at,
        static="static",
        root=".",
        rows=first_rows,
        total=total,
        data=data,
        integrity=integrity,
        problems=problems,
        more_problems=max(0, len(located) - len(problems)),
        with_problems=with_problems,
        filters={k: v for k, v in filters.items() if v},
    )
    write_file(out / "index.html", page)
    return with_problems


def write_audit(
    env: jinja2.Environment,
    out: Path,
    *,
    events: Callable[[], Iterator[dict[str, Any]]],
    integrity: Integrity,
    located: Mapping[Problem, str | None],
    title: str,
    store_url: str,
    generated_at: str,
) -> None:
    problems = _problem_links(located, 2000)
    page = env.get_template("audit.html").generate(
        title=title,
        store_url=store_url,
        generated_at=generated_at,
        static="static",
        root=".",
        events=events,
        integrity=integrity,
        problems=problems,
        more_problems=max(0, len(located) - len(problems)),
    )
    write_file(out / "audit.html", page)


def write_id_shards(out: Path, rows: Iterable[tuple[str, str, str | None, str]], kept: set[str]) -> None:
    """ids/<hh>.js: {id: [page, anchor, session]} for request and exchange ids, loaded on demand
    by the index's search (a script element: file:// pages may not fetch). `rows`: (shard, id,
    session, exchange id), ordered by shard."""
    written: set[str] = set()

    def emit(name: str, ids: dict[str, list[str]]) -> None:
        payload = json.dumps(ids, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
        write_file(out / "ids" / f"{name}.js", f"window.gatehouseIdShard({json.dumps(name)},{payload});\n")
        written.add(name)

    current: str | None = None
    ids: dict[str, list[str]] = {}
    for s, ident, session, xid in rows:
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


def copy_static(out: Path) -> None:
    for name in STATIC_FILES:
        write_file(out / "static" / name, (TEMPLATES_PACKAGE_DIR / name).read_bytes())
