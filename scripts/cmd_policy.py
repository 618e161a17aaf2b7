"""`gatehouse policy check FILE`: validate a policy exactly as the gateway does at start-up.
`gatehouse policy test FILE --tool T --input JSON`: judge one tool call against its
``[commands]`` rules, as the gateway would (`gatehouse.commands.judge`)."""

from __future__ import annotations

import argparse
import sys

from gatehouse.commands.judge import Verdict, call_sha256, judge_call
from gatehouse.commands.notices import one_line, summary
from gatehouse.policy.loader import Policy, load_policy
from gatehouse.policy.reader import PolicyError
from gatehouse.recording.canonical import parse_json


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

    test = psub.add_parser(
        "test",
        help="judge one tool call against the policy's [commands] rules",
        description="Judge one tool call the way the gateway judges a tool_use block: print the verdict "
        "(allow, block or approve), the rule that decided and its message, and what matched. The policy is "
        "validated in full first. Exits 0 when the call was judged (whatever the verdict), 1 when the policy "
        "is invalid, 2 when --input is not a JSON object.",
        epilog='example: gatehouse policy test policy.toml --tool Bash --input \'{"command": "ls; rm -rf /"}\' '
        "--groups developers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    test.add_argument("file", help="the policy file (TOML)")
    test.add_argument(
        "--tool", required=True, help="the tool's name as the model calls it, e.g. Bash, Write, mcp__x__y"
    )
    test.add_argument("--input", required=True, metavar="JSON", help="the tool input, a JSON object")
    test.add_argument("--user", metavar="SUB", help="the caller's subject, for the output")
    test.add_argument(
        "--groups", metavar="A,B", default="", help="the caller's groups, comma-separated (rules with `groups`)"
    )
    test.set_defaults(func=run_test)


def run_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file)
    except PolicyError as e:
        print(f"gatehouse: {e}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK (sha256 {policy.sha256[:16]}, {len(policy.groups)} groups, {len(policy.issuers)} issuers)")
    return 0


def _approval_line(policy: Policy, verdict: Verdict) -> str:
    """Who decides an approve verdict, as the gateway would ask them."""
    defaults = policy.approvals
    rule = verdict.rule
    approvers = (rule.approvers if rule and rule.approvers else None) or defaults.approvers
    needed = (rule.approvals_required if rule else None) or defaults.approvals_required
    mode = (rule.mode if rule else None) or defaults.mode
    plural = "approval" if needed == 1 else "approvals"
    return f"  approvers: {', '.join(approvers) or '(none)'} ({needed} {plural} needed, mode {mode})"


def run_test(args: argparse.Namespace) -> int:
    try:
        tool_input = parse_json(args.input)
    except ValueError as e:
        print(f"gatehouse: --input is not JSON: {e}", file=sys.stderr)
        return 2
    if not isinstance(tool_input, dict):
        print(
            'gatehouse: --input must be a JSON object, the tool\'s input, e.g. \'{"command": "ls"}\'', file=sys.stderr
        )
        return 2
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    try:
        policy = load_policy(args.file)
    except PolicyError as e:
        print(f"gatehouse: {e}", file=sys.stderr)
        return 1

    commands = policy.commands
    if commands is None:
        print("allow  the policy has no [commands] section: every tool call is allowed")
        return 0
    verdict = judge_call(commands, args.tool, tool_input, groups)
    if verdict.rule is not None:
        head = f"{verdict.action}  rule {verdict.rule.id} ({verdict.rule.source})"
        print(f"{head}: {verdict.message}" if verdict.message else head)
    else:
        print(f"{verdict.action}  no rule matched: the [commands] default is {commands.default}")
    print(f"  call: {summary(args.tool, tool_input)}")
    if verdict.matched is not None:
        print(f"  matched: {one_line(verdict.matched)}")
    if verdict.action == "approve":
        print(_approval_line(policy, verdict))
    caller = args.user or "(any caller)"
    print(f"  caller: {caller}, groups: {', '.join(groups) or '(none)'}")
    print(f"  call sha256: {call_sha256(args.tool, tool_input)}")
    return 0
