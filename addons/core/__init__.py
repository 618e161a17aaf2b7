"""The pure core of Gatehouse: no mitmproxy import anywhere below this package.

Policy, token verification, masking rules, the SSE pipeline, records and stores
are plain Python here, tested directly; the addons in `addons/` only move data
between mitmproxy flows and these functions.
"""
