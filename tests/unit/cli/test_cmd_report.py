"""`gatehouse report` on the command line: an empty or absent store, the progress bar."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.cli.main import main as cli
from support.report_fixtures import Scenario, index_data


def test_empty_store(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    out = tmp_path / "out"
    assert cli(["report", str(tmp_path / "store"), "--out", str(out), "-q"]) == 0
    assert index_data(out) == []
    assert cli(["report", str(tmp_path / "nope"), "--out", str(out), "-q"]) == 2


def test_progress_bar_on_stderr(scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["report", str(scenario.store_dir), "--out", str(tmp_path / "out"), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "sessions   [############################] 3/3" in err
    assert "3 session(s) (3 rendered, 0 unchanged)" in err
