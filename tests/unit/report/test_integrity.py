"""Verification problems shown where they are: on the exchange, the session, the index; trusted keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gatehouse.cli.main import main as cli
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.stores import LocalStore
from gatehouse.report.build import ReportOptions, build_report
from support.report_fixtures import Scenario, copy_store, index_data, page_of, rewrite_record, text_of, transcript_of


def test_tampered_record_shows_on_its_session(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = copy_store(scenario, tmp_path)
    key = scenario.keys[scenario.exchanges["alice-3"]]
    rewrite_record(
        store / key,
        lambda d: d["decisions"][-1]["detail"].update(
            approver={"subject": "u-mallory", "email": "mallory@example.com"}
        ),
    )
    out = tmp_path / "out"
    rc = cli(["report", str(store), "--out", str(out), "--quiet"])
    assert rc == 1
    assert "INTEGRITY FAILURE" in capsys.readouterr().err
    rows = {r["id"]: r for r in index_data(out)}
    alice = rows[scenario.sessions["alice"]]
    assert not alice["integrity"]["ok"] and "signature" in alice["integrity"]["text"]
    assert rows[scenario.sessions["bob"]]["integrity"]["ok"]
    assert rows[scenario.sessions["injection"]]["integrity"]["ok"]
    page = page_of(out, scenario.sessions["alice"])
    # The failure is shown on the exchange whose record was changed.
    m = re.search(
        rf'<article class="exchange kind-exchange has-problems" id="{scenario.exchanges["alice-3"]}">(.*?)</article>',
        page,
        re.S,
    )
    assert m and "signature does not verify" in m.group(1)
    # ...and on the next record of the chain, which names the changed record's old hash.
    m = re.search(
        rf'<article class="exchange kind-exchange has-problems" id="{scenario.exchanges["alice-4"]}">(.*?)</article>',
        page,
        re.S,
    )
    assert m and "link" in m.group(1)
    assert page.count("has-problems") == 2
    assert "Integrity: 2 problems" in text_of(page)
    assert transcript_of(out, scenario.sessions["alice"])["integrity"]["status"] == "failed"
    assert "Integrity: 2 problems" in text_of((out / "index.html").read_text())


def test_deleted_record_shows_on_the_neighbouring_sessions(scenario: Scenario, tmp_path: Path) -> None:
    store = copy_store(scenario, tmp_path)
    (store / scenario.keys[scenario.exchanges["bob-1"]]).unlink()
    out = tmp_path / "out"
    result = build_report(LocalStore(store), ReportOptions(out=out))
    assert not result.ok
    rows = {r["id"]: r for r in index_data(out)}
    # Bob's first exchange is gone; the sessions around the gap say a record is missing.
    assert "missing" in rows[scenario.sessions["bob"]]["integrity"]["text"]
    assert "missing" in rows[scenario.sessions["alice"]]["integrity"]["text"]
    assert rows[scenario.sessions["injection"]]["integrity"]["ok"]
    assert "is missing from chain" in text_of(page_of(out, scenario.sessions["bob"]))


def test_trusted_key_from_the_command_line(scenario: Scenario, tmp_path: Path) -> None:
    pub = tmp_path / "rec.pub"
    pub.write_bytes(scenario.key.public_pem())
    out = tmp_path / "out"
    assert cli(["report", str(scenario.store_dir), "--out", str(out), "--public-key", str(pub), "--quiet"]) == 0
    assert all(r["integrity"]["text"] == "verified" for r in index_data(out))
    other = tmp_path / "other.pub"
    other.write_bytes(SigningKey.generate().public_pem())
    assert cli(["report", str(scenario.store_dir), "--out", str(out), "--public-key", str(other), "--quiet"]) == 1
    assert not any(r["integrity"]["ok"] for r in index_data(out))
