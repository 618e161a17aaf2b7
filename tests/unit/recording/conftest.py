"""Fixtures of the recording tests: a signing key, and spool dirs opened through the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def recordings() -> Iterator[list[Path]]:
    """Spool dirs opened through the registry, forgotten at the end."""
    opened: list[Path] = []
    yield opened
    for p in opened:
        Recording.forget(p)
