"""A masker's scanner that notes what it scans: for tests and benchmarks of what is (not)
scanned again."""

from __future__ import annotations

from typing import Any


class CountingScanner:
    """Wraps a masker's scanner (`masker.scanner = CountingScanner(masker.scanner)`), noting the
    length of every text it scans in `scanned`."""

    def __init__(self, scanner: Any) -> None:
        self._scanner = scanner
        self.scanned: list[int] = []

    def scan(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.scanned.append(len(text))
        return self._scanner.scan(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scanner, name)
