"""Which sessions a report holds: the scratch index's selection by user, session id and time range."""

from __future__ import annotations

from pathlib import Path

from gatehouse.cli.main import main as cli
from gatehouse.recording.canonical import parse_iso_time
from gatehouse.recording.stores import LocalStore
from gatehouse.report.build import ReportOptions, build_report
from support.report_fixtures import Scenario, index_data


def test_filters(scenario: Scenario, tmp_path: Path) -> None:
    store = LocalStore(scenario.store_dir)
    out = tmp_path / "out"
    build_report(store, ReportOptions(out=out, user="BOB@example.com"))
    assert [r["id"] for r in index_data(out)] == [scenario.sessions["bob"]]
    build_report(store, ReportOptions(out=out, user="u-carol"))
    assert [r["id"] for r in index_data(out)] == [scenario.sessions["injection"]]
    # Pages of sessions no longer in the report are removed.
    assert len(list((out / "sessions").glob("*.html"))) == 1
    build_report(store, ReportOptions(out=out, session=scenario.sessions["alice"]))
    assert [r["id"] for r in index_data(out)] == [scenario.sessions["alice"]]
    t = parse_iso_time
    build_report(
        store, ReportOptions(out=out, since=t("2026-01-01T10:30:00.000000Z"), until=t("2026-01-01T11:30:00.000000Z"))
    )
    assert [r["id"] for r in index_data(out)] == [scenario.sessions["bob"]]
    assert cli(["report", str(scenario.store_dir), "--out", str(out), "--since", "2026-01-01T12:00:00Z", "-q"]) == 0
    assert {r["id"] for r in index_data(out)} == {scenario.sessions["injection"]}
    assert cli(["report", str(scenario.store_dir), "--out", str(out), "--since", "yesterday", "-q"]) == 2
