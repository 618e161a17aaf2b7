"""The gateway's CA, created with mitmproxy's own certificate store: the one mitmdump then loads
from the same ``confdir``.

`gatehouse run` creates it before it starts mitmdump, so that it can print the CA's path first.
"""

from __future__ import annotations

from pathlib import Path

from mitmproxy.certs import CertStore


def ensure_ca(confdir: Path) -> None:
    """Create the CA in `confdir` (a folder of mode 0700) unless it is there already."""
    confdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    CertStore.from_store(str(confdir), "mitmproxy", 2048)
