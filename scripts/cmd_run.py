"""`gatehouse run`: start mitmdump with the Gatehouse addon stack."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from gatehouse.cli.common import (
    CA_CERT_NAME,
    DEFAULT_LISTEN,
    confdir_for,
    gateway_script,
    parse_listen,
    quickstart_policy,
)
from gatehouse.cli.devsetup import prepare_quickstart
from gatehouse.policy.loader import load_policy
from gatehouse.policy.reader import PolicyError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="start the gateway",
        description="Start the gateway (mitmdump with the Gatehouse addons) on a policy. The policy is "
        "validated first; the CA lives in <state_dir>/mitmproxy. Arguments after `--` go to mitmdump.",
        epilog="example: gatehouse run --policy policies/quickstart.toml --listen 127.0.0.1:8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--policy", type=Path, default=None, help="policy file (default: the quick-start policy)")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to listen on (default {DEFAULT_LISTEN})")
    p.add_argument("--upstream", default="", help="override the upstream base URL (gateway_upstream)")
    p.add_argument("mitmdump_args", nargs=argparse.REMAINDER, help="extra mitmdump arguments, after --")
    p.set_defaults(func=run)


def mitmdump_command() -> list[str]:
    sibling = Path(sys.executable).parent / "mitmdump"
    if sibling.exists():
        return [str(sibling)]
    found = shutil.which("mitmdump")
    if found:
        return [found]
    return [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()"]


def run(args: argparse.Namespace) -> int:
    from gatehouse.mitm.ca import ensure_ca  # imports mitmproxy: only when a gateway starts

    policy_path = args.policy or quickstart_policy()
    try:
        host, port = parse_listen(args.listen)
        policy = load_policy(policy_path)
    except (ValueError, PolicyError) as e:
        print(f"gatehouse run: {e}", file=sys.stderr)
        return 1
    # The state dir holds keys and the spool: owner only, created before anything inside it.
    policy.gateway.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    confdir = confdir_for(policy.gateway.state_dir)
    # Created now, so that its path can be printed before mitmdump starts.
    ensure_ca(confdir)
    ca = confdir / CA_CERT_NAME
    extra = list(args.mitmdump_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    cmd = mitmdump_command() + [
        "--listen-host",
        host,
        "--listen-port",
        str(port),
        "--set",
        f"confdir={confdir}",
        "-s",
        str(gateway_script()),
        "--set",
        f"gateway_policy={Path(policy_path).resolve()}",
    ]
    if args.upstream:
        cmd += ["--set", f"gateway_upstream={args.upstream}"]
    cmd += extra
    notes = prepare_quickstart(policy, Path(policy_path), f"{host}:{port}")
    print(f"Gatehouse on {host}:{port}, policy {policy_path}", file=sys.stderr)
    print("Point a client at it (in another shell):", file=sys.stderr)
    for line in notes or [f'eval "$(gatehouse env --gateway {host}:{port} --ca {ca})"']:
        print(f"  {line}", file=sys.stderr)
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached
