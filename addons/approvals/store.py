"""Where approvals live: write-once objects under ``approvals/`` in the recording store.

The same `gatehouse.recording.stores.Store` as the records (a folder, or S3), so replicas that
share a store share approvals. Every object is created once and never replaced (`Store.put`:
exclusive create locally, ``If-None-Match: *`` on S3), which is what makes "first writer wins"
hold across processes and machines:

    approvals/requests/<id>.json               the request
    approvals/votes/<id>/<person-key>.json     one per approver: nobody votes twice
    approvals/outcomes/<id>.json               the decision that completed it: the first one wins
    approvals/claims/<id>.json                 a tool-call grant's use: two replicas cannot both spend it
    approvals/calls/<call-key>/<id>            an index: a call's requests, without listing them all

A person key is the SHA-256 of ``[issuer, subject]``; a call key the SHA-256 of ``[issuer, subject,
kind, tool, input_sha256]``, where an access request uses ``""`` for the input hash (its target,
the ``tool``, names its input) so that a grant is found from the rule's target alone. Objects are
canonical JSON. With S3 Object Lock each object carries the records' retention.

All methods block (disk or network): callers run them off the event loop.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from gatehouse.approvals.model import APPROVAL_ID, ApprovalRequest, Claim, Outcome, Vote, person_key
from gatehouse.recording.canonical import canonical_json, json_safe, parse_json
from gatehouse.recording.layout import APPROVALS_PREFIX as PREFIX
from gatehouse.recording.stores import NotFound, Store, StoreError


def _digest(parts: list[str]) -> str:
    return hashlib.sha256(canonical_json(parts)).hexdigest()


def person_store_key(person: dict[str, Any]) -> str:
    issuer, subject = person_key(person)
    return _digest([issuer, subject])


def call_key(requester: dict[str, Any], kind: str, tool: str, input_sha256: str) -> str:
    issuer, subject = person_key(requester)
    return _digest([issuer, subject, kind, tool, "" if kind == "access" else input_sha256])


def _check_id(approval_id: str) -> str:
    if not isinstance(approval_id, str) or not APPROVAL_ID.match(approval_id):
        raise NotFound(f"{approval_id!r} is not an approval id (ga_ and 28 hex digits)")
    return approval_id


class ApprovalStore:
    """The approvals' objects in `store`. `retain_days`: the Object Lock retention of each object,
    required when the store locks objects (the recording's ``retention_days``)."""

    def __init__(self, store: Store, *, retain_days: int | None = None) -> None:
        if store.locks_objects and not retain_days:
            raise StoreError(
                f"{store.url}: the store locks its objects (S3 Object Lock), so approvals need a retention: "
                "[recording] retention_days"
            )
        self.store = store
        self.retain_days = retain_days

    def __repr__(self) -> str:
        return f"ApprovalStore({self.store!r})"

    @property
    def url(self) -> str:
        return self.store.url

    # -- raw objects --------------------------------------------------------------------------
    def _put(self, key: str, doc: Any) -> bool:
        until = None
        if self.store.locks_objects:
            until = datetime.now(UTC) + timedelta(days=self.retain_days or 0)
        return self.store.put(PREFIX + key, canonical_json(json_safe(doc)), retain_until=until)

    def _get(self, key: str) -> Any:
        data = self.store.get(PREFIX + key)
        try:
            doc = parse_json(data)
        except ValueError as e:
            raise StoreError(f"{self.store.url}: {PREFIX}{key} is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise StoreError(f"{self.store.url}: {PREFIX}{key} is not a JSON object")
        return doc

    def _load(self, key: str, cls: Any) -> Any:
        doc = self._get(key)
        try:
            return cls.from_dict(doc)
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{self.store.url}: {PREFIX}{key} is not a valid {cls.__name__}: {e!r}") from None

    def _list(self, prefix: str) -> list[str]:
        return [k[len(PREFIX) :] for k in self.store.list(PREFIX + prefix)]

    # -- requests -----------------------------------------------------------------------------
    def put_request(self, req: ApprovalRequest) -> bool:
        """The request and its index entry; False when the id exists already."""
        if not self._put(f"requests/{_check_id(req.id)}.json", req.to_dict()):
            return False
        self._put(f"calls/{call_key(req.requester, req.kind, req.tool, req.input_sha256)}/{req.id}", {"id": req.id})
        return True

    def get_request(self, approval_id: str) -> ApprovalRequest:
        """The request; `NotFound` when there is none."""
        return self._load(f"requests/{_check_id(approval_id)}.json", ApprovalRequest)

    def request_ids(self) -> list[str]:
        """Every request's id, oldest first (ids sort by creation time)."""
        out = []
        for k in self._list("requests/"):
            name = k[len("requests/") :]
            if name.endswith(".json") and APPROVAL_ID.match(name[:-5]):
                out.append(name[:-5])
        return sorted(out)

    def call_ids(self, requester: dict[str, Any], kind: str, tool: str, input_sha256: str) -> list[str]:
        """The ids of this requester's requests for this call, newest first."""
        base = f"calls/{call_key(requester, kind, tool, input_sha256)}/"
        ids = [k[len(base) :] for k in self._list(base)]
        return sorted((i for i in ids if APPROVAL_ID.match(i)), reverse=True)

    # -- votes --------------------------------------------------------------------------------
    def put_vote(self, vote: Vote) -> bool:
        """False when this approver has voted on this request already."""
        key = f"votes/{_check_id(vote.approval_id)}/{person_store_key(vote.approver)}.json"
        return self._put(key, vote.to_dict())

    def get_vote(self, approval_id: str, approver: dict[str, Any]) -> Vote | None:
        try:
            return self._load(f"votes/{_check_id(approval_id)}/{person_store_key(approver)}.json", Vote)
        except NotFound:
            return None

    def votes(self, approval_id: str) -> list[Vote]:
        """The request's votes, in the order they were cast."""
        keys = self._list(f"votes/{_check_id(approval_id)}/")
        out = []
        for k in keys:
            try:
                out.append(self._load(k, Vote))
            except NotFound:  # listed, then gone: only prune removes objects
                continue
        return sorted(out, key=lambda v: v.at)

    # -- outcomes and claims ------------------------------------------------------------------
    def put_outcome(self, outcome: Outcome) -> bool:
        """False when another decision completed the request first."""
        return self._put(f"outcomes/{_check_id(outcome.approval_id)}.json", outcome.to_dict())

    def get_outcome(self, approval_id: str) -> Outcome | None:
        try:
            return self._load(f"outcomes/{_check_id(approval_id)}.json", Outcome)
        except NotFound:
            return None

    def put_claim(self, claim: Claim) -> bool:
        """False when the grant has been used already."""
        return self._put(f"claims/{_check_id(claim.approval_id)}.json", claim.to_dict())

    def get_claim(self, approval_id: str) -> Claim | None:
        try:
            return self._load(f"claims/{_check_id(approval_id)}.json", Claim)
        except NotFound:
            return None
