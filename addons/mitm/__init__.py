"""The mitmproxy addons: thin adapters that read a flow, call the core, and write the result back.

These are the only modules that import mitmproxy (tests/unit/test_layering.py checks it).
"""
