"""`gatehouse token`: a token from the local development issuer.

Only the JWT goes to stdout, so ``$(gatehouse token --print)`` and Claude Code's
``apiKeyHelper`` can use it as is; a summary goes to stderr unless ``--print``.
The signing key lives in the policy's state directory (created on first use, mode 0600)
and the issuer's public JWKS is written where the policy's dev issuer (``jwks_file``) points.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from gatehouse.identity import devissuer
from gatehouse.identity.claims import format_time
from gatehouse.identity.config import IssuerConfig
from gatehouse.policy.reader import PolicyError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "token",
        help="print a token from the local development issuer",
        description="Print a JWT signed by the local development issuer of the policy (the [[issuers]] entry "
        f"with a jwks_file and issuer = {devissuer.DEV_ISSUER!r}, or the one named by --issuer). "
        "The key pair is created on first use in the policy's state_dir; the public JWKS is "
        "written to the issuer's jwks_file. For development only: whoever can read the key "
        "can mint tokens for anyone.",
        epilog="examples:\n"
        "  gatehouse token --sub alice --groups developers,sre --ttl 8h\n"
        "  export HTTPS_PROXY=http://gatehouse:$(gatehouse token --print)@127.0.0.1:8080\n"
        "  Claude Code (~/.claude/settings.json): "
        '{"apiKeyHelper": "gatehouse token --sub alice --groups developers --print"}',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sub", default=None, help="the subject (user name); default: your login name")
    p.add_argument(
        "--groups", default=None, help="comma-separated groups, e.g. developers,sre (default: the policy's first group)"
    )
    p.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 1h, 2d (default 1h, at most 30d)")
    p.add_argument("--email", default=None, help="an email claim")
    p.add_argument("--name", default=None, help="a display-name claim")
    p.add_argument(
        "--print",
        dest="quiet",
        action="store_true",
        help="print the token only: nothing on stderr (for scripts and apiKeyHelper)",
    )
    p.add_argument("--policy", type=Path, default=None, help="policy naming the dev issuer (default: quick start)")
    p.add_argument(
        "--issuer",
        dest="issuer_name",
        default=None,
        help="name of the [[issuers]] entry to sign for (default: the dev issuer)",
    )
    p.set_defaults(func=run)


def pick_dev_issuer(issuers: tuple[IssuerConfig, ...], name: str | None) -> IssuerConfig:
    """The issuer entry `gatehouse token` signs for; ValueError says how to fix the policy."""
    if name is not None:
        for cfg in issuers:
            if cfg.name == name:
                if cfg.jwks_file is None or devissuer.DEV_ALGORITHM not in cfg.algorithms:
                    raise ValueError(
                        f"issuer {name!r} is not a local issuer: it needs a jwks_file and "
                        f"{devissuer.DEV_ALGORITHM!r} in its algorithms"
                    )
                return cfg
        raise ValueError(f"the policy has no issuer named {name!r}")
    local = [c for c in issuers if c.jwks_file is not None and devissuer.DEV_ALGORITHM in c.algorithms]
    named = [c for c in local if c.issuer == devissuer.DEV_ISSUER]
    if len(named) == 1:
        return named[0]
    if len(local) == 1 and not named:
        return local[0]
    if not local:
        raise ValueError(
            "the policy has no local development issuer; add:\n"
            '  [[issuers]]\n  name = "dev"\n'
            f'  issuer = "{devissuer.DEV_ISSUER}"\n  audience = "{devissuer.DEV_AUDIENCE}"\n'
            f'  algorithms = ["{devissuer.DEV_ALGORITHM}"]\n'
            f'  jwks_file = "~/.gatehouse/{devissuer.JWKS_FILENAME}"'
        )
    raise ValueError("the policy has several local issuers; choose one with --issuer NAME")


def run(args: argparse.Namespace) -> int:
    from gatehouse.cli.common import quickstart_policy
    from gatehouse.policy.loader import load_policy

    def fail(msg: str, code: int = 1) -> int:
        print(f"gatehouse token: {msg}", file=sys.stderr)
        return code

    try:
        ttl = devissuer.parse_duration(args.ttl)
    except ValueError as e:
        return fail(str(e), 2)
    subject = args.sub if args.sub is not None else getpass.getuser()
    groups = [g.strip() for g in (args.groups or "").split(",") if g.strip()]
    policy_path = args.policy or quickstart_policy()
    try:
        policy = load_policy(policy_path)
        cfg = pick_dev_issuer(policy.issuers, args.issuer_name)
    except (PolicyError, ValueError) as e:
        return fail(f"{policy_path}: {e}" if not isinstance(e, PolicyError) else str(e))
    assert cfg.jwks_file is not None
    if args.groups is None:
        # Without --groups, the policy's first group: a token in no group is refused by any
        # policy that has groups, which is never what someone typing this wants.
        groups = list(policy.groups)[:1]
    state_dir = policy.gateway.state_dir
    try:
        devissuer.ensure_dev_issuer(state_dir, cfg.jwks_file)
        token = devissuer.mint_token(
            state_dir,
            subject=subject,
            groups=groups,
            ttl_seconds=ttl,
            issuer=cfg.issuer,
            audience=cfg.audience[0],
            email=args.email,
            name=args.name,
        )
    except (OSError, ValueError) as e:
        return fail(str(e))
    print(token)
    sys.stdout.flush()
    if not args.quiet:
        import time

        print(
            f"gatehouse token: sub={subject} groups={','.join(groups) or '(none)'} issuer={cfg.name} "
            f"expires {format_time(time.time() + ttl)}; key {devissuer.key_path(state_dir)}, "
            f"JWKS {cfg.jwks_file}",
            file=sys.stderr,
        )
    return 0
