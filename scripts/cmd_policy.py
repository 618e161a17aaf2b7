"""`gatehouse policy check FILE`: validate a policy exactly as the gateway does at start-up."""

from __future__ import annotations

import argparse
import sys

from gatehouse.policy.loader import load_policy
from gatehouse.policy.reader import PolicyError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="work with policy files", description="Work with Gatehouse policy files.")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = psub.add_parser(
        "check",
        help="validate a policy file",
        description="Validate a policy file with the same checks the gateway runs at start-up. "
        "Exits 0 when it is valid, 1 with a message naming the file and key when not.",
        epilog="example: gatehouse policy check policies/quickstart.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", help="the policy file (TOML)")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file)
    except PolicyError as e:
        print(f"gatehouse: {e}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK (sha256 {policy.sha256[:16]}, {len(policy.groups)} groups, {len(policy.issuers)} issuers)")
    return 0
