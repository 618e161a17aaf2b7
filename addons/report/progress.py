"""The progress bar of `gatehouse report`: one line on a terminal (stderr), redrawn at most ten
times a second; silent when stderr is not a terminal unless forced."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.enabled = bool(self.stream.isatty()) if enabled is None else enabled
        self.width = width
        self.label = ""
        self.total = 0
        self.done = 0
        self._last = 0.0
        self._t0 = time.monotonic()

    def phase(self, label: str, total: int = 0) -> None:
        self.finish()
        self.label, self.total, self.done = label, total, 0
        self._t0 = time.monotonic()
        self._draw(force=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled or not self.label:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        elapsed = now - self._t0
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
            text = f"\r{self.label:<10} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s"
        else:
            text = f"\r{self.label:<10} {self.done} {elapsed:5.1f}s"
        self.stream.write(text)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.label:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
        self.label = ""
