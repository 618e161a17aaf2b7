"""Gatehouse: mitmproxy addons (thin) over a pure core (`addons.core`)."""

__version__ = "0.1.0"
