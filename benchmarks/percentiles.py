"""The one percentile the benchmarks print: nearest rank, on a sample of timings."""

from __future__ import annotations

from collections.abc import Iterable


def percentile(xs: Iterable[float], q: float) -> float:
    """The value `q` (0..1) of the way up the sorted sample: ``percentile(xs, 0.99)`` is its p99,
    the largest value for a sample of fewer than 100."""
    s = sorted(xs)
    if not s:
        raise ValueError("no timings to take a percentile of")
    return s[min(len(s) - 1, int(len(s) * q))]
