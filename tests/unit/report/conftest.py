"""The report tests' scenario store (tests/support/report_fixtures.py) and its report, written once
for the package: tests that change a store or a report work on copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.recording.stores import LocalStore
from gatehouse.report.build import ReportOptions, build_report
from support.report_fixtures import Scenario, scenario_store


@pytest.fixture(scope="package")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return scenario_store(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="package")
def rendered(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "report"
    result = build_report(LocalStore(scenario.store_dir), ReportOptions(out=out))
    assert result.ok, result.integrity
    return out
