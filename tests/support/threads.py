"""Which thread a function of the gateway ran in: the event loop's (the test's) or a worker's."""

from __future__ import annotations

import threading
from typing import Any

import pytest


def calls_in_threads(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[bool]:
    """Wrap `owner.name` for the test; the list it returns gets, per call, whether the call ran
    on a worker thread (True) or in the calling test's thread, where the loop runs (False)."""
    test_thread = threading.get_ident()
    on_worker: list[bool] = []
    real = getattr(owner, name)

    def noting_the_thread(*args: Any, **kwargs: Any) -> Any:
        on_worker.append(threading.get_ident() != test_thread)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, noting_the_thread)
    return on_worker
