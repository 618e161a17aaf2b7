"""Fixtures of the unit tests of more than one package (masking, wire): a masker over the
built-in rule pack."""

from __future__ import annotations

import pytest

from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from support.secrets import FINGERPRINT_KEY


@pytest.fixture(scope="module")
def masker() -> Masker:
    """The built-in rules with the tests' fixed fingerprint key."""
    return Masker(parse_masking(None), FINGERPRINT_KEY)
