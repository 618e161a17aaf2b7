"""The approvals service: file a request, decide it, wait for it, use its grant.

One `ApprovalService` per gateway process, over the shared `ApprovalStore`: everything that
matters is in the store, so a request filed through one replica is decided through another, and
"first writer wins" (the store's exclusive create) settles every race: two approvers completing
one request, two replicas spending one grant. What a process keeps in memory is a cache of what
cannot change (requests, outcomes, spent grants) and the waiters of its own held flows.

The methods other than `wait` block on the store (disk or S3): callers run them in a thread.
`wait` is async: it polls the store (in a thread) at most every `poll_interval` seconds, and a
decision made through this process wakes it at once (`decide` runs in a worker thread and
sets each waiter's event in that waiter's loop, `loop.call_soon_threadsafe`).

How long a request stays open for decisions (`expires`): a held request whose timeout denies
the call (``on_timeout = "deny"``) closes at its timeout: a later approval could change nothing
the requester saw. Every other request (mode ``retry``, or a hold that falls back to retry, where
the agent is told the approval id) stays open for `decision_seconds` (default an hour), or the
hold's timeout if that is longer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from gatehouse.approvals.config import MODES, ApprovalsPolicy
from gatehouse.approvals.model import (
    DECISIONS,
    KINDS,
    ApprovalRequest,
    Claim,
    Outcome,
    Status,
    Vote,
    id_time,
    new_approval_id,
    person_key,
    person_name,
    person_of,
)
from gatehouse.approvals.notify import Notifier
from gatehouse.approvals.store import ApprovalStore
from gatehouse.common.lru import Lru
from gatehouse.exchange import Identity
from gatehouse.recording.canonical import iso_time, json_safe
from gatehouse.recording.stores import NotFound, StoreError

log = logging.getLogger(__name__)

DECISION_SECONDS = 3600.0
# A request past its `expires` by this much is treated as settled (its status is cached): replicas'
# clocks may differ a little, and a decision accepted by one just before it saw the expiry must
# still be seen.
_EXPIRY_GRACE = 120.0


class ApprovalRefused(Exception):
    """A refusal the approvals API answers with: an Anthropic error of `error_type` and `status`."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _not_found(approval_id: str) -> ApprovalRefused:
    return ApprovalRefused(404, "not_found_error", f"There is no approval {approval_id!r}.")


def _conflict(message: str) -> ApprovalRefused:
    return ApprovalRefused(409, "invalid_request_error", message)


def _names(people: Sequence[dict[str, Any]]) -> str:
    return ", ".join(person_name(p) for p in people) or "someone"


class ApprovalService:
    def __init__(
        self,
        store: ApprovalStore,
        policy: ApprovalsPolicy,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 1.0,
        decision_seconds: float = DECISION_SECONDS,
    ) -> None:
        self.store = store
        self.policy = policy
        self.notifier = notifier if notifier is not None else Notifier(None)
        self.clock = clock
        self.poll_interval = poll_interval
        self.decision_seconds = decision_seconds
        self._requests: Lru[str, ApprovalRequest] = Lru(10_000)
        self._outcomes: Lru[str, Outcome] = Lru(10_000)
        # Statuses that can no longer change: denied, expired, approved and used (or past its grant).
        self._settled: Lru[str, Status] = Lru(10_000)
        self._access_grants: Lru[tuple[tuple[str, str], str, str], Status] = Lru(10_000)
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._lock = threading.Lock()

    # -- filing -------------------------------------------------------------------------------
    def request(
        self,
        *,
        kind: str,
        requester: Identity,
        session: str | None,
        exchange_id: str | None,
        tool: str,
        tool_input: Any,
        input_sha256: str,
        rule: str,
        message: str,
        approvers: Sequence[str],
        approvals_required: int,
        mode: str,
        timeout_seconds: float | None,
        grant_seconds: float,
    ) -> ApprovalRequest:
        """Write a new request (and its index entry) and announce it (a log line and the webhook,
        neither of which blocks). `timeout_seconds`: how long a hold waits (None: the policy's)."""
        if kind not in KINDS:
            raise ValueError(f"approval kind must be one of {KINDS}; got {kind!r}")
        if mode not in MODES:
            raise ValueError(f"approval mode must be one of {MODES}; got {mode!r}")
        if not approvers:
            raise ValueError("an approval request needs approver groups")
        if approvals_required < 1 or grant_seconds <= 0:
            raise ValueError("approvals_required must be at least 1 and grant_seconds more than 0")
        hold = timeout_seconds if timeout_seconds is not None else self.policy.timeout_seconds
        if mode == "hold" and self.policy.on_timeout == "deny":
            open_for = hold
        else:
            open_for = max(hold, self.decision_seconds)
        for _ in range(3):
            now = self.clock()
            req = ApprovalRequest(
                id=new_approval_id(now),
                kind=kind,
                requester=person_of(requester),
                session=session,
                exchange_id=exchange_id,
                tool=tool,
                input=json_safe(tool_input),
                input_sha256=input_sha256,
                rule=rule,
                message=message,
                approvers=list(approvers),
                approvals_required=int(approvals_required),
                mode=mode,
                created=now,
                expires=now + open_for,
                grant_seconds=float(grant_seconds),
            )
            if self.store.put_request(req):
                break
        else:  # 64 random bits collided three times: the store is not what it seems
            raise StoreError(f"{self.store.url}: could not create an approval request (its id exists)")
        self._requests.put(req.id, req)
        self.notifier.announce(req)
        return req

    def file(self, **request: Any) -> ApprovalRequest:
        """The open request of the same requester for the same call, or a new one (`request`'s
        keywords): asking twice for one call files it once."""
        pending = self.pending_call(request["requester"], request["kind"], request["tool"], request["input_sha256"])
        return pending if pending is not None else self.request(**request)

    # -- reading ------------------------------------------------------------------------------
    def _request(self, approval_id: str) -> ApprovalRequest:
        req = self._requests.get(approval_id)
        if req is None:
            try:
                req = self.store.get_request(approval_id)
            except NotFound:
                raise _not_found(approval_id) from None
            self._requests.put(approval_id, req)
        return req

    def _outcome(self, approval_id: str) -> Outcome | None:
        """The outcome, read again until there is one (then it is cached: it never changes)."""
        out = self._outcomes.get(approval_id)
        if out is None:
            out = self.store.get_outcome(approval_id)
            if out is not None:
                self._outcomes.put(approval_id, out)
        return out

    def status(self, approval_id: str) -> Status:
        """The request with its votes and outcome; `ApprovalRefused` (404) when unknown."""
        settled = self._settled.get(approval_id)
        if settled is not None:
            return settled
        req = self._request(approval_id)
        now = self.clock()
        outcome = self._outcome(approval_id)
        votes = self.store.votes(approval_id)
        if outcome is None:
            state = "expired" if now > req.expires else "pending"
            st = Status(req, state, votes)
            if now > req.expires + _EXPIRY_GRACE:
                self._settled.put(approval_id, st)
            return st
        uses = 0
        if outcome.state == "approved" and req.kind == "tool_call":
            uses = 1 if self.store.get_claim(approval_id) is not None else 0
        st = Status(req, outcome.state, votes, outcome.decided_at, outcome.decided_by, outcome.reason, uses)
        grant_over = st.grant_expires is not None and now > st.grant_expires + _EXPIRY_GRACE
        if outcome.state != "approved" or uses or req.kind == "access" or grant_over:
            self._settled.put(approval_id, st)
        return st

    @staticmethod
    def may_decide(req: ApprovalRequest, person: Identity) -> bool:
        """In one of the request's approver groups, and not its requester."""
        return bool(set(person.groups) & set(req.approvers)) and person_key(person) != person_key(req.requester)

    @staticmethod
    def may_view(req: ApprovalRequest, person: Identity) -> bool:
        """Its requester, or a member of one of its approver groups."""
        return person_key(person) == person_key(req.requester) or bool(set(person.groups) & set(req.approvers))

    def listing(
        self, viewer: Identity | None = None, *, include_decided: bool = False, limit: int = 200
    ) -> list[Status]:
        """Requests `viewer` may see (None: all), oldest first: the open ones, or with
        `include_decided` the newest `limit` of every state."""
        now = self.clock()
        ids = self.store.request_ids()
        if include_decided:
            ids = ids[-limit:]
        else:
            # Ids carry their creation time; a request is open for at most this long.
            horizon = now - max(self.decision_seconds, self.policy.timeout_seconds) - _EXPIRY_GRACE
            ids = [i for i in ids if id_time(i) >= horizon]
        out = []
        for approval_id in ids:
            try:
                st = self.status(approval_id)
            except ApprovalRefused:
                continue
            if not include_decided and st.state != "pending":
                continue
            if viewer is not None and not self.may_view(st.request, viewer):
                continue
            out.append(st)
        return out

    def pending(self, viewer: Identity | None = None) -> list[Status]:
        """Undecided, unexpired requests that `viewer` may see (None: all), oldest first."""
        return self.listing(viewer)

    def pending_call(self, requester: Identity, kind: str, tool: str, input_sha256: str) -> ApprovalRequest | None:
        """An open request of this requester for the same call, to reuse instead of filing another."""
        for approval_id in self.store.call_ids(person_of(requester), kind, tool, input_sha256):
            st = self.status(approval_id)
            req = st.request
            if (
                st.state == "pending"
                and req.kind == kind
                and req.tool == tool
                and req.input_sha256 == input_sha256
                and person_key(req.requester) == person_key(requester)
            ):
                return req
        return None

    # -- deciding -----------------------------------------------------------------------------
    def _already(self, st: Status, *, late: bool = False) -> ApprovalRefused:
        when = iso_time(st.decided_at)
        why = f" ({st.reason})" if st.state == "denied" and st.reason else ""
        tail = " Your decision came later and changed nothing." if late else ""
        return _conflict(
            f"Approval {st.request.id} was already {st.state} by {_names(st.decided_by)} at {when}{why}.{tail}"
        )

    def decide(self, approval_id: str, approver: Identity, decision: str, *, reason: str, input_sha256: str) -> Status:
        """Record `approver`'s decision and complete the request when it is the last one needed.

        Refused (`ApprovalRefused`): an unknown id (404); an approver in none of the request's
        approver groups, or its requester (403); a request already decided, or expired, or a
        decision naming another call (`input_sha256` differs: the call changed), or an approver
        voting twice (409). An approval counts distinct approvers, by (issuer, subject), and
        completes the request at ``approvals_required``; a deny by one eligible approver
        completes it as denied at once. Completion creates the outcome exclusively: the first
        completing decision wins, and a later one is refused (409) naming the winner. Waiters in
        this process wake at once.
        """
        if decision not in DECISIONS:
            raise ApprovalRefused(400, "invalid_request_error", f"A decision is approve or deny; got {decision!r}.")
        st = self.status(approval_id)
        req = st.request
        me = person_of(approver)
        if person_key(approver) == person_key(req.requester):
            raise ApprovalRefused(
                403,
                "permission_error",
                f"{person_name(me)} asked for approval {approval_id}: a request cannot be decided by its "
                f"requester. Ask a member of {', '.join(req.approvers)}.",
            )
        if not set(approver.groups) & set(req.approvers):
            raise ApprovalRefused(
                403,
                "permission_error",
                f"{person_name(me)} may not decide approval {approval_id}: it needs a member of "
                f"{', '.join(req.approvers)} (your groups: {', '.join(approver.groups) or 'none'}).",
            )
        if st.state in ("approved", "denied"):
            raise self._already(st)
        now = self.clock()
        if st.state == "expired" or now > req.expires:
            raise _conflict(
                f"Approval {approval_id} expired at {iso_time(req.expires)}: decisions are no longer accepted. "
                "If the call is proposed again, a new approval is requested."
            )
        if input_sha256 != req.input_sha256:
            raise _conflict(
                f"The call changed: approval {approval_id} is for input_sha256 {req.input_sha256[:12]}..., "
                f"your decision names {str(input_sha256)[:12] or 'none'}.... "
                f"Look at the request again (gatehouse approvals show {approval_id})."
            )
        vote = Vote(approval_id, decision, me, reason, input_sha256, now)
        if not self.store.put_vote(vote):
            prev = self.store.get_vote(approval_id, me)
            earlier = f" ({prev.decision} at {iso_time(prev.at)})" if prev is not None else ""
            raise _conflict(f"{person_name(me)} has already decided approval {approval_id}{earlier}.")
        try:
            outcome: Outcome | None = None
            if decision == "deny":
                outcome = Outcome(approval_id, "denied", now, [me], reason)
            else:
                approving: dict[tuple[str, str], Vote] = {}
                for v in self.store.votes(approval_id):
                    k = person_key(v.approver)
                    if (
                        v.decision == "approve"
                        and v.input_sha256 == req.input_sha256
                        and k != person_key(req.requester)
                    ):
                        approving.setdefault(k, v)
                if len(approving) >= req.approvals_required:
                    # In the order they approved, this (the completing) approval last.
                    earlier = [v for k, v in approving.items() if k != person_key(approver)]
                    people = [v.approver for v in sorted(earlier, key=lambda v: v.at)] + [me]
                    outcome = Outcome(approval_id, "approved", now, people, reason)
            if outcome is not None and not self.store.put_outcome(outcome):
                raise self._already(self.status(approval_id), late=True)
        finally:
            self._wake(approval_id)
        log.info(
            f"gatehouse: approval {approval_id}: {decision} by {person_name(me)}"
            + (f", now {outcome.state}" if outcome is not None else ", more approvals needed")
        )
        return self.status(approval_id)

    # -- grants -------------------------------------------------------------------------------
    def claim_call_grant(
        self, requester: Identity, tool: str, input_sha256: str, exchange_id: str | None
    ) -> Status | None:
        """An approved tool-call request of this requester for exactly this call, decided within
        its grant_seconds and not used yet: its grant is claimed (exclusively: of two replicas
        claiming it at once, one gets it) and its status returned. None when there is none."""
        now = self.clock()
        me = person_of(requester)
        for approval_id in self.store.call_ids(me, "tool_call", tool, input_sha256):
            st = self.status(approval_id)
            req = st.request
            if (
                req.kind != "tool_call"
                or req.tool != tool
                or req.input_sha256 != input_sha256
                or person_key(req.requester) != person_key(requester)
            ):
                continue
            until = st.grant_expires
            if st.state != "approved" or st.uses or until is None or until < now:
                continue
            if self.store.put_claim(Claim(approval_id, exchange_id, me, now)):
                st = dataclasses.replace(st, uses=1)
                self._settled.put(approval_id, st)
                log.info(f"gatehouse: approval {approval_id}: grant used by exchange {exchange_id}")
                return st
            self._settled.pop(approval_id)  # another flow or replica used it first
        return None

    def claim_approved(self, approval_id: str, requester: Identity, exchange_id: str | None) -> bool:
        """Spend the grant of this approved request on the flow it held (mode hold). False when
        it is not approved, or its grant was already used (by an identical call elsewhere)."""
        st = self.status(approval_id)
        if st.state != "approved" or st.uses or person_key(st.request.requester) != person_key(requester):
            return False
        if self.store.put_claim(Claim(approval_id, exchange_id, person_of(requester), self.clock())):
            self._settled.put(approval_id, dataclasses.replace(st, uses=1))
            return True
        self._settled.pop(approval_id)
        return False

    def active_access_grant(self, requester: Identity, rule: str, target: str) -> Status | None:
        """An approved access request of this requester, for this rule and target, whose grant
        has not expired (access grants are time-limited, not used up)."""
        now = self.clock()
        key = (person_key(requester), rule, target)
        cached = self._access_grants.get(key)
        if cached is not None and (cached.grant_expires or 0) > now:
            return cached
        for approval_id in self.store.call_ids(person_of(requester), "access", target, ""):
            st = self.status(approval_id)
            req = st.request
            if (
                req.kind == "access"
                and req.tool == target
                and req.rule == rule
                and person_key(req.requester) == person_key(requester)
                and st.state == "approved"
                and (st.grant_expires or 0) > now
            ):
                self._access_grants.put(key, st)
                return st
        return None

    # -- waiting ------------------------------------------------------------------------------
    def _wake(self, approval_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(approval_id, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed: its waiter is gone
                pass

    async def wait(self, approval_id: str, timeout: float) -> Status:
        """The status once decided (approved or denied), or after `timeout` seconds (then still
        pending, or expired). Polls the store at most every `poll_interval` seconds, in a thread;
        a decision made through this process wakes it at once. Other flows are not held up."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            self._waiters.setdefault(approval_id, []).append(entry)
        deadline = loop.time() + max(0.0, timeout)
        failing = False
        try:
            while True:
                # Cleared before reading: a decision after the read sets it again.
                event.clear()
                try:
                    if await asyncio.to_thread(self._outcome, approval_id) is not None:
                        break
                    failing = False
                except StoreError as e:  # a store hiccup must not end the hold: keep polling
                    if not failing:
                        log.warning(f"gatehouse: approval {approval_id}: reading the store failed, retrying: {e}")
                    failing = True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(event.wait(), min(self.poll_interval, remaining))
                except TimeoutError:
                    pass
        finally:
            with self._lock:
                entries = self._waiters.get(approval_id, [])
                if entry in entries:
                    entries.remove(entry)
                if not entries:
                    self._waiters.pop(approval_id, None)
        return await asyncio.to_thread(self.status, approval_id)
