"""Session reconstruction: one exchange per exchange id, history matched across turns."""

from __future__ import annotations

from pathlib import Path

from gatehouse.recording.stores import LocalStore
from gatehouse.report.build import ReportOptions, build_report
from support.report_fixtures import (
    ALICE,
    Conversation,
    Scenario,
    Writer,
    claude_code_headers,
    message,
    page_of,
    text_of,
    transcript_of,
    user_text,
)


def test_streamed_exchange_with_two_records_is_one_exchange(scenario: Scenario, rendered: Path) -> None:
    doc = transcript_of(rendered, scenario.sessions["alice"])
    second = next(x for x in doc["exchanges"] if x["exchange_id"] == scenario.exchanges["alice-2"])
    assert len(second["records"]) == 2 and second["streamed"]
    assert sum(1 for x in doc["exchanges"] if x["exchange_id"] == scenario.exchanges["alice-2"]) == 1


def test_moving_cache_control_does_not_repeat_history(tmp_path: Path) -> None:
    """Claude Code moves its cache_control marker to the newest message every turn."""
    w = Writer(tmp_path / "store")
    sid = "cache-control-moves"
    c = Conversation(w, sid, ALICE, lambda: claude_code_headers(sid))
    for i in range(3):
        for m in c.messages:
            for b in m["content"]:
                b.pop("cache_control", None)
        new = user_text(f"prompt number {i}")
        new["content"][0]["cache_control"] = {"type": "ephemeral"}
        c.turn([new], message([{"type": "text", "text": f"answer number {i}"}]))
    w.close()
    out = tmp_path / "out"
    build_report(LocalStore(tmp_path / "store"), ReportOptions(out=out))
    text = text_of(page_of(out, sid))
    for i in range(3):
        assert text.count(f"prompt number {i}") == 1 and text.count(f"answer number {i}") == 1
    doc = transcript_of(out, sid)
    assert len(doc["conversations"]) == 1 and len(doc["conversations"][0]["messages"]) == 6
