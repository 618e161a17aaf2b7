"""`gatehouse approvals list | show ID | approve ID | deny ID`: the approvals API from a terminal.

The API is served by the gateway itself on ``https://gatehouse.internal``; this command reaches it
the way every client reaches the gateway: a CONNECT tunnel through the proxy (``--gateway``,
default ``HTTPS_PROXY``), TLS trusting the gateway's CA (``--ca``, default ``SSL_CERT_FILE``), and
the caller's token (``--token``, default ``GATEHOUSE_TOKEN``, sent as ``Authorization: Bearer``;
a proxy URL's ``user:token@`` is sent as the proxy credentials). ``approve`` and ``deny`` first
read the request to learn the hash of the call, then send it with the decision, so a decision
always names the exact call it was made on.

Exit codes: 0 done; 1 refused by the gateway (its message is printed); 2 a usage or connection
problem.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import gatehouse
from gatehouse.approvals import INTERNAL_HOST
from gatehouse.approvals.notify import call_summary

API = "/v1/approvals"


class UsageProblem(Exception):
    """Exit 2: the command cannot be run as given (no gateway, no token, a bad URL)."""


class ConnectionProblem(Exception):
    """Exit 2: the gateway could not be reached or did not answer as a Gatehouse gateway."""


class Refused(Exception):
    """Exit 1: the gateway answered with a refusal."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Gateway:
    host: str
    port: int
    proxy_authorization: str | None
    token: str | None
    context: ssl.SSLContext
    timeout: float = 30.0

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "approvals",
        help="list, show, approve and deny approval requests (through the gateway)",
        description="Work with the gateway's approval requests: tool calls held by an `approve` command rule and "
        "just-in-time access requests. Talks to the approvals API on https://gatehouse.internal through the "
        "gateway (--gateway, default HTTPS_PROXY), as you (--token, default GATEHOUSE_TOKEN), trusting the "
        "gateway's CA (--ca, default SSL_CERT_FILE). You see the requests you asked for and those you may "
        "decide; you may decide a request when you are in one of its approver groups and did not ask for it. "
        "Exits 0 when done, 1 when the gateway refused (its reason is printed), 2 when the gateway cannot be "
        "reached or the command is incomplete.",
        epilog="examples:\n"
        "  export HTTPS_PROXY=http://127.0.0.1:8080 SSL_CERT_FILE=~/.gatehouse/mitmproxy/mitmproxy-ca-cert.pem\n"
        "  export GATEHOUSE_TOKEN=$(gatehouse token --sub bob --groups sre --print)\n"
        "  gatehouse approvals list\n"
        "  gatehouse approvals show ga_018f2c...\n"
        "  gatehouse approvals approve ga_018f2c... --reason 'cleanup of the build folder'\n"
        "  gatehouse approvals deny ga_018f2c... --reason 'not on production'\n"
        "  gatehouse approvals list --json | jq '.[].id'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--gateway",
        metavar="URL",
        help="the gateway's proxy URL, http://[user:token@]host:port (default: HTTPS_PROXY, https_proxy)",
    )
    common.add_argument("--token", help="your token, sent as Authorization: Bearer (default: GATEHOUSE_TOKEN)")
    common.add_argument("--ca", metavar="FILE", help="the gateway's CA certificate, PEM (default: SSL_CERT_FILE)")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the gateway (default 30)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    ls = actions.add_parser("list", parents=[common], help="the open requests you may see")
    ls.add_argument("--json", action="store_true", help="print a JSON array of the requests")
    ls.add_argument("--all", action="store_true", help="include recent decided and expired requests")
    show = actions.add_parser("show", parents=[common], help="one request, its votes and its outcome")
    show.add_argument("id", help="the approval id (ga_...)")
    show.add_argument("--json", action="store_true", help="print the request as JSON")
    for name, what in (("approve", "approve"), ("deny", "deny")):
        a = actions.add_parser(name, parents=[common], help=f"{what} a request (it must be for the call you saw)")
        a.add_argument("id", help="the approval id (ga_...)")
        a.add_argument("--reason", default="", help="why (recorded, and shown to the requester on a deny)")
        a.add_argument("--json", action="store_true", help="print the request's new status as JSON")
        a.add_argument(
            "--sha",
            metavar="PREFIX",
            help="decide only if the call's input hash starts with this (as `show` printed it): "
            "the call you read is the call you decide",
        )
        a.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
    p.set_defaults(func=run)


# -- connection -----------------------------------------------------------------------------------
def gateway_from(args: argparse.Namespace, env: Mapping[str, str]) -> Gateway:
    """Where and as whom to connect, from the options and the environment."""
    url = args.gateway or env.get("HTTPS_PROXY") or env.get("https_proxy")
    if not url:
        raise UsageProblem("no gateway: pass --gateway http://HOST:PORT or set HTTPS_PROXY")
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise UsageProblem(f"the gateway URL is not valid: {e}") from None
    if parts.scheme != "http":
        raise UsageProblem(
            f"the gateway URL must be http://HOST:PORT (the proxy is spoken to in plain HTTP, then tunnelled); "
            f"got a {parts.scheme}:// URL"
        )
    if not host or port is None:
        raise UsageProblem("the gateway URL needs a host and a port, e.g. http://127.0.0.1:8080")
    proxy_auth = None
    if parts.username is not None or parts.password is not None:
        creds = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        proxy_auth = "Basic " + base64.b64encode(creds.encode()).decode()
    token = args.token or env.get("GATEHOUSE_TOKEN") or None
    if token is None and not (parts.password or parts.username):
        raise UsageProblem("no token: pass --token, set GATEHOUSE_TOKEN, or put it in the gateway URL (user:token@)")
    ca = args.ca or env.get("SSL_CERT_FILE") or None
    try:
        context = ssl.create_default_context(cafile=os.path.expanduser(ca) if ca else None)
    except (OSError, ssl.SSLError) as e:
        raise UsageProblem(f"cannot load the CA certificate {ca}: {getattr(e, 'strerror', None) or e}") from None
    return Gateway(host, port, proxy_auth, token, context, args.timeout)


def call(gw: Gateway, method: str, path: str, body: Any = None) -> Any:
    """One request to the approvals API through the gateway; the parsed JSON of a success.
    `Refused` for an error answer, `ConnectionProblem` when there is no usable answer."""
    conn = http.client.HTTPSConnection(gw.host, gw.port, timeout=gw.timeout, context=gw.context)
    tunnel_headers = {"Proxy-Authorization": gw.proxy_authorization} if gw.proxy_authorization else None
    conn.set_tunnel(INTERNAL_HOST, 443, headers=tunnel_headers)
    headers = {"accept": "application/json", "user-agent": f"gatehouse-cli/{gatehouse.__version__}"}
    if gw.token:
        headers["authorization"] = f"Bearer {gw.token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    except ssl.SSLCertVerificationError as e:
        raise ConnectionProblem(
            f"the gateway's certificate is not trusted ({e.verify_message}): pass its CA with --ca or SSL_CERT_FILE"
        ) from None
    except OSError as e:
        text = str(e)
        if text.startswith("Tunnel connection failed:"):
            # The proxy answered the CONNECT itself with a refusal (http.client drops its body).
            code = text.split(":", 1)[1].strip()
            hint = " (check your token)" if code.startswith("407") else ""
            raise Refused(
                int(code.split()[0]) if code[:3].isdigit() else 0, f"the gateway refused the tunnel: {code}{hint}"
            ) from None
        raise ConnectionProblem(
            f"cannot reach the gateway at {gw.where}: {e.strerror or text or type(e).__name__}"
        ) from None
    except http.client.HTTPException as e:
        raise ConnectionProblem(f"the gateway at {gw.where} broke off the answer: {type(e).__name__} {e}") from None
    finally:
        conn.close()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if status >= 400:
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            raise Refused(status, err["message"])
        raise Refused(status, f"the gateway answered {status} without a reason")
    if doc is None:
        raise ConnectionProblem(
            f"the gateway at {gw.where} answered {status} with something that is not JSON: is it Gatehouse?"
        )
    return doc


# -- output ---------------------------------------------------------------------------------------
def _person(p: Any) -> str:
    if not isinstance(p, dict):
        return "?"
    name = p.get("email") or p.get("subject") or "?"
    groups = p.get("groups") or []
    return f"{name} ({', '.join(groups)})" if groups else str(name)


def _summary(st: dict[str, Any]) -> str:
    if st.get("kind") == "access":
        return f"access to {st.get('tool')}"
    return call_summary(str(st.get("tool", "")), st.get("input"), 80)


def _time(t: Any) -> str:
    return str(t).replace("T", " ")[:19] + "Z" if t else "-"


def print_table(items: list[dict[str, Any]], out: Any) -> None:
    if not items:
        print("No open approval requests.", file=out)
        return
    rows = [("ID", "STATE", "REQUESTER", "CALL", "RULE", "EXPIRES")]
    for st in items:
        rows.append(
            (
                str(st.get("id")),
                str(st.get("state")),
                str((st.get("requester") or {}).get("email") or (st.get("requester") or {}).get("subject")),
                _summary(st),
                str(st.get("rule")),
                _time(st.get("expires")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1], file=out)


def print_status(st: dict[str, Any], out: Any) -> None:
    need = st.get("approvals_required", 1)
    lines = [
        f"{st.get('id')}  {st.get('state')}",
        f"  requester   {_person(st.get('requester'))}",
        f"  call        {_summary(st)}",
        f"  input       {json.dumps(st.get('input'), ensure_ascii=False)}",
        f"  input hash  {st.get('input_sha256')}",
        f"  rule        {st.get('rule')}" + (f": {st['message']}" if st.get("message") else ""),
        f"  approvers   {', '.join(st.get('approvers') or [])} ({need} approval{'s' if need != 1 else ''} needed)",
        f"  created     {_time(st.get('created'))}",
        f"  expires     {_time(st.get('expires'))}",
    ]
    for v in st.get("votes") or []:
        reason = f": {v['reason']}" if v.get("reason") else ""
        lines.append(
            f"  vote        {v.get('decision')} by {_person(v.get('approver'))} at {_time(v.get('at'))}{reason}"
        )
    if st.get("decided_at"):
        by = ", ".join(_person(p) for p in st.get("decided_by") or [])
        lines.append(f"  decided     {st.get('state')} by {by} at {_time(st.get('decided_at'))}")
    if st.get("grant_expires"):
        lines.append(f"  grant       until {_time(st.get('grant_expires'))}, used {st.get('uses', 0)} time(s)")
    print("\n".join(lines), file=out)


def _after_decision(st: dict[str, Any]) -> str:
    state = st.get("state")
    what = f"{st.get('id')} ({_summary(st)}, asked by {_person(st.get('requester'))})"
    if state == "approved":
        return f"Approved {what}."
    if state == "denied":
        return f"Denied {what}."
    votes = sum(1 for v in st.get("votes") or [] if v.get("decision") == "approve")
    return f"Your approval of {what} is recorded: {votes} of {st.get('approvals_required')} approvals."


# -- the command ----------------------------------------------------------------------------------
def _path(approval_id: str, action: str = "") -> str:
    return f"{API}/{quote(approval_id, safe='')}" + (f"/{action}" if action else "")


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None, out: Any = None) -> int:
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    try:
        gw = gateway_from(args, env)
        if args.action == "list":
            doc = call(gw, "GET", API + ("?all=1" if args.all else ""))
            items = doc.get("approvals") if isinstance(doc, dict) else None
            if not isinstance(items, list):
                raise ConnectionProblem("the gateway's answer has no list of approvals")
            if args.json:
                print(json.dumps(items, indent=2, ensure_ascii=False), file=out)
            else:
                print_table(items, out)
            return 0
        if args.action == "show":
            st = call(gw, "GET", _path(args.id))
            if args.json:
                print(json.dumps(st, indent=2, ensure_ascii=False), file=out)
            else:
                print_status(st, out)
            return 0
        # approve / deny: the decision names the call it was made on.
        st = call(gw, "GET", _path(args.id))
        digest = st.get("input_sha256") if isinstance(st, dict) else None
        if not isinstance(digest, str):
            raise ConnectionProblem("the gateway's answer has no input_sha256")
        if args.sha and not digest.startswith(args.sha.strip().lower()):
            print(
                f"gatehouse approvals: {args.id}'s input hash is {digest[:16]}..., not {args.sha}: "
                "this is not the call you read; nothing was decided",
                file=sys.stderr,
            )
            return 1
        # The approver decides on the whole call, not on a summary: it is shown in full first.
        print_status(st, sys.stderr)
        if not args.yes and sys.stdin.isatty():
            answer = input(f"{args.action} this call? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("gatehouse approvals: nothing was decided", file=sys.stderr)
                return 1
        st = call(gw, "POST", _path(args.id, args.action), {"input_sha256": digest, "reason": args.reason})
        if args.json:
            print(json.dumps(st, indent=2, ensure_ascii=False), file=out)
        else:
            print(_after_decision(st), file=out)
        return 0
    except Refused as e:
        print(f"gatehouse approvals: refused by the gateway: {e.message}", file=sys.stderr)
        return 1
    except (UsageProblem, ConnectionProblem) as e:
        print(f"gatehouse approvals: {e}", file=sys.stderr)
        return 2
