"""`gatehouse env`: the shell lines that point a client at the gateway."""

from __future__ import annotations

import argparse
import os
import shlex
import ssl
import sys
from pathlib import Path

from gatehouse.cli.common import CA_CERT_NAME, DEFAULT_LISTEN, confdir_for, default_state_dir, parse_listen
from gatehouse.policy.loader import load_policy
from gatehouse.policy.reader import PolicyError

# Sent as the client's API key: the gateway holds the real one and drops whatever the client sends.
PLACEHOLDER_API_KEY = "gatehouse-holds-the-real-key"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "env",
        help="print the environment a client needs to use the gateway",
        description="Print `export` lines that point Claude Code, the SDKs and curl at the gateway. "
        "Also writes a CA bundle (system CAs plus the gateway's CA) for Python clients, "
        "because SSL_CERT_FILE replaces the default bundle instead of adding to it.",
        epilog='example: eval "$(gatehouse env --gateway 127.0.0.1:8080 --token "$(gatehouse token --print)")"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gateway", default=DEFAULT_LISTEN, help=f"gateway HOST:PORT (default {DEFAULT_LISTEN})")
    p.add_argument("--ca", type=Path, help="the gateway's CA certificate (default: from the policy's state_dir)")
    p.add_argument("--policy", type=Path, help="policy whose state_dir holds the CA (default ~/.gatehouse)")
    p.add_argument("--token", help="a Gatehouse identity token (JWT) to put in HTTPS_PROXY")
    p.set_defaults(func=run_env)


def system_ca_file() -> Path | None:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi

        return Path(certifi.where())
    except ImportError:
        return None


def write_bundle(ca: Path, out: Path) -> Path:
    parts = []
    system = system_ca_file()
    if system is not None and system.resolve() != out.resolve():
        parts.append(system.read_text())
    parts.append(ca.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    return out


def run_env(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.gateway)
    except ValueError as e:
        print(f"gatehouse env: {e}", file=sys.stderr)
        return 2
    state_dir = default_state_dir()
    if args.policy:
        try:
            state_dir = load_policy(args.policy).gateway.state_dir
        except PolicyError as e:
            print(f"gatehouse env: {e}", file=sys.stderr)
            return 1
    ca = args.ca or confdir_for(state_dir) / CA_CERT_NAME
    if not ca.is_file():
        print(
            f"gatehouse env: no CA certificate at {ca}; start the gateway once (`make run`) or pass --ca",
            file=sys.stderr,
        )
        return 1
    bundle = write_bundle(ca, state_dir / "ca-bundle.pem")
    creds = f"gatehouse:{args.token}@" if args.token else ""
    proxy = f"http://{creds}{host}:{port}"
    q = shlex.quote
    lines = [
        "# Route HTTPS through Gatehouse (Claude Code, the SDKs, curl).",
        f"export HTTPS_PROXY={q(proxy)}",
        "# Node (Claude Code, the TypeScript SDK) adds this CA to its trust store; read at start only.",
        f"export NODE_EXTRA_CA_CERTS={q(str(ca.resolve()))}",
        "# Python (anthropic SDK, httpx, requests): SSL_CERT_FILE replaces the bundle, so this one holds",
        "# the system CAs plus the gateway's.",
        f"export SSL_CERT_FILE={q(str(bundle.resolve()))}",
        f"export REQUESTS_CA_BUNDLE={q(str(bundle.resolve()))}",
        "# The gateway holds the real Claude API key; clients only need a placeholder.",
        f"export ANTHROPIC_API_KEY={PLACEHOLDER_API_KEY}",
        "# Hosts that should not go through the gateway (it only forwards the Claude API):",
        "# export NO_PROXY=localhost,127.0.0.1,.internal.example.com",
    ]
    if args.token:
        lines += [
            "# Identity: the token above rides in HTTPS_PROXY, which Claude Code reads once, at start.",
            "# To refresh tokens without restarting it, use an apiKeyHelper in ~/.claude/settings.json:",
            '#   {"apiKeyHelper": "gatehouse token --sub $USER --groups developers --print"}',
            "# and unset ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN: Claude Code prefers them to the helper.",
        ]
    else:
        lines.insert(
            1, "# No --token: fine for a gateway without [[issuers]]; otherwise pass --token or use apiKeyHelper."
        )
    print("\n".join(lines))
    return 0
