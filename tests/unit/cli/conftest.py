"""The report scenario store (tests/support/report_fixtures.py) for the `gatehouse report` command's
tests, written once for the folder: a test that changes a store works on a copy."""

from __future__ import annotations

import pytest

from support.report_fixtures import Scenario, scenario_store


@pytest.fixture(scope="package")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return scenario_store(tmp_path_factory.mktemp("report"))
