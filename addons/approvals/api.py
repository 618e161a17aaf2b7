"""The approvals API, as the gateway serves it on ``https://gatehouse.internal`` (`INTERNAL_HOST`).

    GET  /v1/approvals                 {"approvals": [status, ...]}: open requests (?all=1: recent ones too)
    GET  /v1/approvals/<id>            status
    POST /v1/approvals/<id>/approve    {"input_sha256": "...", "reason": "..."} -> status
    POST /v1/approvals/<id>/deny       the same

Callers authenticate like every caller of the gateway (their token; the identity addon has
verified it). A caller sees the requests they asked for and those they may decide (a member of
an approver group). Errors are in the Anthropic shape, ``{"type": "error", "error": {...}}``.
A status never carries a token: people appear as issuer, subject, email, name and groups.

`handle` is pure but blocks on the store: the adapter (`gatehouse.mitm.approvals`) runs it in a
worker thread.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gatehouse.approvals.model import Status, Vote
from gatehouse.approvals.service import ApprovalRefused, ApprovalService
from gatehouse.exchange import Identity
from gatehouse.recording.canonical import iso_time
from gatehouse.recording.stores import StoreError
from gatehouse.wire.apierrors import STATUS_BY_TYPE

log = logging.getLogger(__name__)

BASE = "/v1/approvals"
MAX_BODY = 64 * 1024
MAX_REASON = 2000
_PERSON_FIELDS = ("issuer", "issuer_name", "subject", "email", "name", "groups")


def error(status: int, error_type: str, message: str) -> tuple[int, dict[str, Any]]:
    if error_type not in STATUS_BY_TYPE:
        raise ValueError(f"unknown Anthropic error type {error_type!r}")
    return status, {"type": "error", "error": {"type": error_type, "message": message}}


def public_person(person: dict[str, Any] | None) -> dict[str, Any] | None:
    """A person as the API shows them: who they are, nothing about their token."""
    if person is None:
        return None
    return {k: person.get(k) for k in _PERSON_FIELDS if k in person}


def _vote_json(v: Vote) -> dict[str, Any]:
    return {
        "decision": v.decision,
        "approver": public_person(v.approver),
        "reason": v.reason,
        "input_sha256": v.input_sha256,
        "at": iso_time(v.at),
    }


def status_json(st: Status) -> dict[str, Any]:
    """A status as the API (and `gatehouse approvals list --json`) shows it; times are ISO-8601 UTC."""
    req = st.request
    return {
        "id": req.id,
        "kind": req.kind,
        "state": st.state,
        "requester": public_person(req.requester),
        "session": req.session,
        "exchange_id": req.exchange_id,
        "tool": req.tool,
        "input": req.input,
        "input_sha256": req.input_sha256,
        "rule": req.rule,
        "message": req.message,
        "approvers": list(req.approvers),
        "approvals_required": req.approvals_required,
        "mode": req.mode,
        "created": iso_time(req.created),
        "expires": iso_time(req.expires),
        "grant_seconds": req.grant_seconds,
        "grant_expires": iso_time(st.grant_expires),
        "votes": [_vote_json(v) for v in st.votes],
        "decided_at": iso_time(st.decided_at),
        "decided_by": [public_person(p) for p in st.decided_by],
        "reason": st.reason,
        "uses": st.uses,
    }


def _bad(message: str) -> ApprovalRefused:
    return ApprovalRefused(400, "invalid_request_error", message)


def _decision_body(body: bytes) -> tuple[str, str]:
    """(input_sha256, reason) from a decision's JSON body; `ApprovalRefused` when it is not one."""
    if len(body) > MAX_BODY:
        raise ApprovalRefused(413, "request_too_large", f"A decision's body is at most {MAX_BODY} bytes.")
    try:
        doc = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        raise _bad('A decision needs a JSON body: {"input_sha256": "...", "reason": "..."}.')
    unknown = sorted(set(doc) - {"input_sha256", "reason"})
    if unknown:
        raise _bad(f"Unknown field {unknown[0]!r}: a decision has input_sha256 and reason.")
    digest = doc.get("input_sha256")
    if not isinstance(digest, str) or not digest:
        raise _bad("input_sha256 is required: the hash of the call you looked at (GET the approval to learn it).")
    reason = doc.get("reason") or ""
    if not isinstance(reason, str):
        raise _bad("reason must be a string.")
    if len(reason) > MAX_REASON:
        raise _bad(f"reason is at most {MAX_REASON} characters.")
    return digest, reason


def _method_error(method: str, allowed: str, path: str) -> tuple[int, dict[str, Any]]:
    return error(400, "invalid_request_error", f"{method} is not supported on {path}; use {allowed}.")


def handle(
    service: ApprovalService, method: str, path: str, body: bytes, identity: Identity | None
) -> tuple[int, dict[str, Any]]:
    """One approvals API request: (HTTP status, JSON body)."""
    if identity is None:
        return error(
            401,
            "authentication_error",
            "The approvals API needs your token: send it as the proxy credentials or as "
            "Authorization: Bearer (gatehouse approvals uses GATEHOUSE_TOKEN or --token).",
        )
    try:
        parts = urlsplit(path)
    except ValueError:
        return error(400, "invalid_request_error", "The request path is not a valid URL path.")
    route = parts.path.rstrip("/") or "/"
    query = parse_qs(parts.query)
    method = method.upper()
    try:
        if route == BASE:
            if method != "GET":
                return _method_error(method, "GET", route)
            include_decided = (query.get("all") or ["0"])[-1] in ("1", "true", "yes")
            statuses = service.listing(identity, include_decided=include_decided)
            return 200, {"approvals": [status_json(s) for s in statuses]}
        if not route.startswith(BASE + "/"):
            return error(404, "not_found_error", f"No such path: {route}. The approvals API is under {BASE}.")
        rest = route[len(BASE) + 1 :].split("/")
        if len(rest) == 1:
            if method != "GET":
                return _method_error(method, "GET", route)
            st = service.status(rest[0])
            if not service.may_view(st.request, identity):
                return error(
                    403,
                    "permission_error",
                    f"Approval {rest[0]} can be seen by its requester and by members of "
                    f"{', '.join(st.request.approvers)}.",
                )
            return 200, status_json(st)
        if len(rest) == 2 and rest[1] in ("approve", "deny"):
            if method != "POST":
                return _method_error(method, "POST", route)
            digest, reason = _decision_body(body)
            decision = "approve" if rest[1] == "approve" else "deny"
            st = service.decide(rest[0], identity, decision, reason=reason, input_sha256=digest)
            return 200, status_json(st)
        return error(404, "not_found_error", f"No such path: {route}.")
    except ApprovalRefused as e:
        return error(e.status, e.error_type, e.message)
    except StoreError as e:
        log.error(f"gatehouse: approvals API: the store failed: {e}")
        return error(503, "api_error", "The approvals store could not be reached; try again shortly.")
