"""Secrets the gateway generates on first run (single-node default) and keeps in its state dir.

Replicas share such material through configuration instead (an environment variable or a
file the policy names); "generated on first run" is only the default for one node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gatehouse.common.durable import create_exclusive


def load_or_create(path: Path, generate: Callable[[], bytes]) -> bytes:
    """Return the file's bytes, creating it with `generate()` (mode 0600) if it does not exist.

    Creation is exclusive, so two processes starting together agree on one value.
    """
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = generate()
    if not create_exclusive(path, data, mode=0o600):
        return path.read_bytes()
    return data


def check_private(path: Path) -> None:
    """Refuse a secret file that others can read (as ssh does for private keys)."""
    mode = Path(path).stat().st_mode & 0o077
    if mode:
        raise PermissionError(
            f"{path}: readable by group or others (mode {oct(Path(path).stat().st_mode & 0o777)}); run chmod 600 {path}"
        )
