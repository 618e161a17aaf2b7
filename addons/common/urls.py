"""Checking the http(s) URLs a policy names: the upstream, key endpoints, an S3 endpoint."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str | None) -> bool:
    """`localhost` or a loopback IP address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_url_problem(
    value: str, *, what: str = "URL", https_unless_loopback: bool = False, bare: bool = False
) -> str | None:
    """Why `value` is not an acceptable http(s) URL, as the end of a sentence; None if it is.

    `https_unless_loopback`: plain http only to this machine (key fetches carry no secret, but
    an attacker on the path could substitute keys). `bare`: no query or fragment (a base URL
    that paths are appended to).
    """
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return "is not a URL"
    if https_unless_loopback:
        if not host or not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host))):
            return f"must be an https:// {what} (http:// is allowed only for localhost)"
    elif parts.scheme not in ("http", "https") or not host:
        return f"must be an http:// or https:// {what}; got {value!r}"
    if bare and (parts.query or parts.fragment):
        return "must not have a query or fragment"
    return None
