"""Gatehouse: an audited, policy-enforcing gateway for the Claude API.

The import name is `gatehouse`; this folder (`addons/`) is its root (see pyproject.toml).
The core packages here are plain Python; only `gatehouse.mitm` imports mitmproxy.
"""

__version__ = "0.1.0"
