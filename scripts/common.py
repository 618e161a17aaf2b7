"""Helpers shared by the `gatehouse` subcommands: default paths of policy, CA and state."""

from __future__ import annotations

from pathlib import Path

from gatehouse.policy.gateway import DEFAULT_STATE_DIR

DEFAULT_LISTEN = "127.0.0.1:8080"
CA_CERT_NAME = "mitmproxy-ca-cert.pem"


def quickstart_policy() -> Path:
    """The quick-start policy: the repo's file in a checkout, the packaged copy otherwise."""
    from gatehouse import policies

    return Path(policies.__file__).parent / "quickstart.toml"


def gateway_script() -> Path:
    import gatehouse

    return Path(gatehouse.__file__).parent / "gateway.py"


def confdir_for(state_dir: Path) -> Path:
    """mitmproxy's configuration folder, which holds the gateway's CA."""
    return Path(state_dir) / "mitmproxy"


def default_state_dir() -> Path:
    return Path(DEFAULT_STATE_DIR).expanduser()


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen must be HOST:PORT, e.g. {DEFAULT_LISTEN}; got {value!r}")
    return host.strip("[]"), int(port)
