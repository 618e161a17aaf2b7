"""Loaded by every gateway process the e2e tests start (tests/support/harness.py puts this folder on
PYTHONPATH): the process can never leave loopback, even by accident.

- ``api.anthropic.com`` resolves to the loopback stand-in named by
  ``GATEHOUSE_TEST_API_STANDIN=127.0.0.1:PORT`` (whatever port was asked for: a relay to
  ``api.anthropic.com:443`` lands on the stand-in's port), or fails when the variable is unset;
- every other name that is not loopback (``localhost``, ``127.0.0.0/8``, ``::1``) fails with
  ``socket.gaierror``;
- a connect (or sendto) to a non-loopback address literal fails with ``OSError`` (asyncio
  skips getaddrinfo for literals);
- mitmproxy's Rust-side UDP connections and DNS resolver (``mitmproxy_rs``), which do not go
  through Python's socket module, get the same rules.

Nothing here is imported by the gateway itself; it only exists in the tests' environment.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

API_HOST = "api.anthropic.com"
ENV = "GATEHOUSE_TEST_API_STANDIN"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}

_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto


def _standin() -> tuple[str, int] | None:
    value = os.environ.get(ENV, "")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _name(host: object) -> str:
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("idna", "replace")
    return str(host).lower().rstrip(".")


def is_loopback(host: object) -> bool:
    name = _name(host)
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _refuse_name(host: object) -> socket.gaierror:
    return socket.gaierror(
        socket.EAI_NONAME,
        f"test stand-in: {_name(host)!r} does not resolve in the gateway's test environment (loopback only)",
    )


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    if host is None:  # a passive (listening) address
        return _real_getaddrinfo(host, port, family, type, proto, flags)
    name = _name(host)
    if name == API_HOST:
        standin = _standin()
        if standin is None:
            raise _refuse_name(host)
        return _real_getaddrinfo(standin[0], standin[1], family, type, proto, flags)
    if is_loopback(name):
        return _real_getaddrinfo(host, port, family, type, proto, flags)
    raise _refuse_name(host)


def gethostbyname(host):
    return getaddrinfo(host, 0, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


def gethostbyname_ex(host):
    return _name(host), [], [gethostbyname(host)]


def _check_address(address) -> None:
    if isinstance(address, tuple) and address and not is_loopback(address[0]):
        raise OSError(errno.ENETUNREACH, f"test stand-in: connecting to {address[0]!r} is not allowed (loopback only)")


def connect(self, address):
    _check_address(address)
    return _real_connect(self, address)


def connect_ex(self, address):
    _check_address(address)
    return _real_connect_ex(self, address)


def sendto(self, data, *args):
    _check_address(args[-1] if args else None)
    return _real_sendto(self, data, *args)


socket.getaddrinfo = getaddrinfo
socket.gethostbyname = gethostbyname
socket.gethostbyname_ex = gethostbyname_ex
socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.socket.sendto = sendto


def _patch_mitmproxy_rs() -> None:
    try:
        import mitmproxy_rs.dns
        import mitmproxy_rs.udp
    except Exception:  # not installed here: nothing to patch
        return
    real_open_udp = mitmproxy_rs.udp.open_udp_connection

    async def open_udp_connection(host, port, *args, **kwargs):
        if _name(host) == API_HOST and (standin := _standin()):
            host, port = standin
        elif not is_loopback(host):
            raise OSError(errno.ENETUNREACH, f"test stand-in: UDP to {_name(host)!r} is not allowed (loopback only)")
        return await real_open_udp(host, port, *args, **kwargs)

    class DnsResolver:
        """Replaces the hickory resolver: the same rules as getaddrinfo, no DNS traffic."""

        def __init__(self, *args, **kwargs) -> None:
            pass

        async def _lookup(self, host: str, family: int) -> list[str]:
            return [ai[4][0] for ai in getaddrinfo(host, 0, family, socket.SOCK_STREAM)]

        async def lookup_ip(self, host: str) -> list[str]:
            return await self._lookup(host, 0)

        async def lookup_ipv4(self, host: str) -> list[str]:
            return await self._lookup(host, socket.AF_INET)

        async def lookup_ipv6(self, host: str) -> list[str]:
            return await self._lookup(host, socket.AF_INET6)

    mitmproxy_rs.udp.open_udp_connection = open_udp_connection
    mitmproxy_rs.dns.DnsResolver = DnsResolver
    mitmproxy_rs.dns.get_system_dns_servers = lambda: []


_patch_mitmproxy_rs()
