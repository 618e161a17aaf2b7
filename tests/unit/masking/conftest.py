"""Fixtures of the masking tests: the built-in rule pack as a policy."""

from __future__ import annotations

import pytest

from gatehouse.masking.config import MaskingPolicy, parse_masking


@pytest.fixture(scope="module")
def builtin() -> MaskingPolicy:
    """The policy of an absent [masking] section: the built-in pack, defaults."""
    return parse_masking(None)
