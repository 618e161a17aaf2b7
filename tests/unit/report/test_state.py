"""Re-runs into the same folder: only new or changed sessions are rendered again."""

from __future__ import annotations

from pathlib import Path

from gatehouse.recording.canonical import parse_iso_time
from gatehouse.recording.stores import LocalStore
from gatehouse.report.build import ReportOptions, build_report
from gatehouse.report.links import session_slug
from support.report_fixtures import (
    ALICE,
    Conversation,
    Scenario,
    Writer,
    claude_code_headers,
    copy_store,
    index_data,
    message,
    rewrite_record,
    user_text,
)


def test_rerun_renders_only_new_or_changed_sessions(scenario: Scenario, tmp_path: Path) -> None:
    store_dir = copy_store(scenario, tmp_path)
    out = tmp_path / "out"
    first = build_report(LocalStore(store_dir), ReportOptions(out=out))
    assert (first.rendered, first.reused) == (3, 0)
    alice_page = out / "sessions" / f"{session_slug(scenario.sessions['alice'])}.html"
    before = alice_page.stat().st_mtime_ns
    again = build_report(LocalStore(store_dir), ReportOptions(out=out))
    assert (again.rendered, again.reused) == (0, 3)
    assert alice_page.stat().st_mtime_ns == before
    # The store grows: a new gateway run records a new session and one more turn of Bob's.
    w = Writer(store_dir, key=scenario.key, spool_dir=tmp_path / "spool2")
    c = Conversation(
        w,
        "new-session-after-rerun",
        ALICE,
        lambda: claude_code_headers("new-session-after-rerun"),
        t=parse_iso_time("2026-01-02T09:00:00.000000Z"),
    )
    c.turn([user_text("A new day.")], message([{"type": "text", "text": "Good morning."}]))
    w.close()
    grown = build_report(LocalStore(store_dir), ReportOptions(out=out))
    assert (grown.rendered, grown.reused) == (1, 3), grown
    assert "new-session-after-rerun" in {r["id"] for r in index_data(out)}
    # A tampered record changes its session and the session of the next record in its chain
    # (whose link no longer matches): only those two are rendered again.
    rewrite_record(store_dir / scenario.keys[scenario.exchanges["bob-2"]], lambda d: d["timing"].update(ttfb_ms=1.0))
    tampered = build_report(LocalStore(store_dir), ReportOptions(out=out))
    assert (tampered.rendered, tampered.reused) == (2, 2)
    rows = {r["id"]: r for r in index_data(out)}
    assert "signature" in rows[scenario.sessions["bob"]]["integrity"]["text"]
    assert "link" in rows[scenario.sessions["injection"]]["integrity"]["text"]
