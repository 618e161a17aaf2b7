"""`gatehouse report STORE --out DIR`: verify a recording store and render it as a static HTML site."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from gatehouse.cli.store_access import add_store_arguments, open_recording_store, recording_policy_of, trusted_keys_for
from gatehouse.policy.reader import PolicyError
from gatehouse.recording.canonical import RecordError
from gatehouse.recording.stores import LocalStore, StoreError
from gatehouse.report.build import ReportError, ReportOptions, build_report
from gatehouse.report.progress import Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="render a recording store as a static HTML report (sessions, decisions, integrity)",
        description=(
            "Verify a recording store as `gatehouse verify` does and render it into DIR as a static site: "
            "index.html lists one session per row (filter and sort in the browser), each session has a page "
            "that reads like the conversation and a JSON transcript, audit.html lists refusals and gateway "
            "runs. Nothing is fetched from the network: open index.html from disk. DIR is created owner-only "
            "(it holds conversation content); re-running into the same DIR re-renders only the sessions "
            "whose records changed. A store with integrity problems is still rendered, with each problem "
            "shown on the sessions it concerns. Exits 0 when the store verified, 1 when the report was "
            "written but verification found problems, 2 when the store cannot be read or an option is wrong."
        ),
        epilog="examples:\n"
        "  gatehouse report recordings/ --out report/\n"
        "  gatehouse report recordings/ --out report/ --user alice@example.com --since 2025-06-01\n"
        "  gatehouse report s3://audit-bucket/gatehouse --policy policies/prod.toml --out /tmp/audit\n"
        "  gatehouse report --policy policies/prod.toml --out report/ --session 0b7e4c1a-...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", nargs="?", help="a directory or s3://bucket/prefix (default: the policy's store)")
    p.add_argument("--out", "-o", type=Path, required=True, metavar="DIR", help="output folder (created, mode 0700)")
    p.add_argument(
        "--since",
        metavar="ISO8601",
        help="only sessions with an exchange at or after this time (UTC "
        "unless the time says otherwise), e.g. 2025-06-01 or 2025-06-01T14:00:00Z",
    )
    p.add_argument("--until", metavar="ISO8601", help="only sessions with an exchange at or before this time")
    p.add_argument("--user", metavar="SUBJECT_OR_EMAIL", help="only sessions of this user (token subject or email)")
    p.add_argument("--session", metavar="ID", help="only this session")
    p.add_argument(
        "--policy",
        type=Path,
        help="policy file whose [recording] section names the store, the S3 endpoint and the trusted public keys",
    )
    add_store_arguments(p, public_key_help="a trusted public key (PEM); may be repeated")
    p.add_argument("--title", default="Gatehouse report", help="title shown on every page")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", action="store_true", default=None, help="show the progress bar even when stderr is not a terminal"
    )
    bar.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=run)


def parse_time_option(value: str) -> float:
    """An ISO 8601 date or date-time for --since/--until; without a zone it is UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or time: {value!r} (e.g. 2025-01-31 or 2025-01-31T14:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"gatehouse report: {message}", file=sys.stderr)
        return 2

    try:
        since = parse_time_option(args.since) if args.since else None
        until = parse_time_option(args.until) if args.until else None
    except ValueError as e:
        return fail(str(e))
    if since is not None and until is not None and until < since:
        return fail("--until is before --since")
    try:
        policy, state_dir = recording_policy_of(args.policy)
        if args.store is None and policy is None:
            return fail("name a STORE or a --policy whose [recording] store to report on")
        url = args.store if args.store is not None else policy.store  # type: ignore[union-attr]
        trusted, _desc = trusted_keys_for(args.public_key, policy, state_dir)
        store = open_recording_store(url, policy, endpoint_url=args.s3_endpoint_url)
        out = args.out.resolve()
        if isinstance(store, LocalStore) and (
            out == Path(store.url).resolve() or Path(store.url).resolve() in out.parents
        ):
            return fail("--out must not be inside the recording store")
        progress = Progress(enabled=False if args.quiet else (True if args.progress else None))
        result = build_report(
            store,
            ReportOptions(
                out=out,
                since=since,
                until=until,
                user=args.user,
                session=args.session,
                trusted_keys=trusted,
                trust="store" if trusted is None else "file",
                progress=progress,
                title=args.title,
            ),
        )
    except (PolicyError, RecordError, StoreError, ReportError) as e:
        return fail(str(e))

    integrity = result.integrity
    if not args.quiet:
        print(
            f"Wrote {out}/index.html: {result.sessions} session(s) ({result.rendered} rendered, "
            f"{result.reused} unchanged), {result.audit_events} audit event(s) without a session, "
            f"from {result.records} record(s)",
            file=sys.stderr,
        )
    if integrity is not None and integrity.problems:
        print(
            f"gatehouse report: INTEGRITY FAILURE: verification found {len(integrity.problems)} problem(s) in "
            f"{store.url} ({result.sessions_with_problems} session(s) affected); they are shown in the report. "
            f"Run `gatehouse verify {store.url}` for the full list.",
            file=sys.stderr,
        )
        return 1
    if not args.quiet and integrity is not None and integrity.trust == "store":
        print(
            "note: signatures were checked against the keys published in the store (consistency only); "
            "pass --policy or --public-key to check who signed.",
            file=sys.stderr,
        )
    return 0
