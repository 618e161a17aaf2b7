"""Filing, deciding and using approvals (gatehouse.approvals.service) over a local store; two
services over one folder stand for two replicas."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gatehouse.approvals.config import ApprovalsPolicy
from gatehouse.approvals.model import APPROVAL_ID
from gatehouse.approvals.service import ApprovalRefused


def refused(fn, *args: Any, **kwargs: Any) -> ApprovalRefused:
    with pytest.raises(ApprovalRefused) as e:
        fn(*args, **kwargs)
    return e.value


class Announced:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def announce(self, req: Any) -> None:
        self.requests.append(req)


# -- filing -----------------------------------------------------------------------------------------


def test_a_request_is_written_and_announced(make_service, file, people, clock):
    notifier = Announced()
    service = make_service(notifier=notifier)
    req = file(service)
    assert APPROVAL_ID.match(req.id)
    assert notifier.requests == [req]
    assert req.requester == people.alice.to_dict() and req.input == people.input
    st = make_service().status(req.id)  # another replica reads it from the store
    assert st.request == req and st.state == "pending" and st.votes == [] and st.uses == 0
    assert req.created == clock.t


@pytest.mark.parametrize(
    "mode, on_timeout, open_for",
    [("hold", "retry", 3600.0), ("hold", "deny", 300.0), ("retry", "retry", 3600.0), ("retry", "deny", 3600.0)],
)
def test_how_long_a_request_is_open(make_service, file, mode, on_timeout, open_for):
    service = make_service(ApprovalsPolicy(approvers=("sre",), on_timeout=on_timeout))
    req = file(service, mode=mode, timeout_seconds=300.0)
    assert req.expires - req.created == open_for


def test_an_access_request_without_a_timeout_is_open_for_the_decision_window(make_service, file):
    req = file(make_service(decision_seconds=900.0), kind="access", mode="retry", timeout_seconds=None)
    assert req.expires - req.created == 900.0


def test_a_request_needs_approvers(make_service, file):
    with pytest.raises(ValueError):
        file(make_service(), approvers=())


def test_unknown_ids_are_404(make_service, people):
    service = make_service()
    assert refused(service.status, "ga_" + "0" * 28).status == 404
    e = refused(service.decide, "../etc", people.bob, "approve", reason="", input_sha256=people.digest)
    assert (e.status, e.error_type) == (404, "not_found_error")


# -- deciding ---------------------------------------------------------------------------------------


def test_one_approval_completes(make_service, file, people, clock):
    service = make_service()
    req = file(service)
    clock.advance(5)
    st = service.decide(req.id, people.bob, "approve", reason="looks fine", input_sha256=people.digest)
    assert st.state == "approved" and st.decided_at == clock.t and st.reason == "looks fine"
    assert [p["subject"] for p in st.decided_by] == ["bob"]
    assert [(v.decision, v.approver["subject"]) for v in st.votes] == [("approve", "bob")]
    assert make_service().status(req.id).state == "approved"


def test_the_requester_cannot_decide_their_own_request(make_service, file, people):
    service = make_service()
    req = file(service, requester=people.carol)  # carol is in sre, an approver group
    e = refused(service.decide, req.id, people.carol, "approve", reason="", input_sha256=people.digest)
    assert (e.status, e.error_type) == (403, "permission_error")
    assert "its requester" in e.message
    assert refused(service.decide, req.id, people.carol, "deny", reason="", input_sha256=people.digest).status == 403
    assert service.status(req.id).state == "pending"


def test_an_approver_outside_the_groups_is_refused(make_service, file, people):
    service = make_service()
    req = file(service)
    e = refused(service.decide, req.id, people.dave, "approve", reason="", input_sha256=people.digest)
    assert e.status == 403 and "sre" in e.message and "developers" in e.message
    assert service.status(req.id).votes == []


def test_a_decision_on_another_call_is_refused(make_service, file, people):
    service = make_service()
    req = file(service)
    other = "b" * 64
    e = refused(service.decide, req.id, people.bob, "approve", reason="", input_sha256=other)
    assert e.status == 409 and "call changed" in e.message
    assert people.digest not in e.message and other not in e.message  # prefixes only
    assert service.status(req.id).state == "pending" and service.status(req.id).votes == []


def test_an_expired_request_takes_no_decision(make_service, file, people, clock):
    service = make_service(ApprovalsPolicy(approvers=("sre",), on_timeout="deny"))
    req = file(service, timeout_seconds=60.0)
    clock.advance(61)
    assert service.status(req.id).state == "expired"
    e = refused(service.decide, req.id, people.bob, "approve", reason="", input_sha256=people.digest)
    assert e.status == 409 and "expired" in e.message


def test_a_decided_request_names_who_decided_and_when(make_service, file, people):
    service = make_service()
    req = file(service)
    service.decide(req.id, people.bob, "deny", reason="not today", input_sha256=people.digest)
    e = refused(make_service().decide, req.id, people.carol, "approve", reason="", input_sha256=people.digest)
    assert e.status == 409
    assert "already denied by bob@example.com" in e.message and "not today" in e.message and "Z" in e.message


def test_a_deny_completes_at_once_whatever_the_quorum(make_service, file, people):
    service = make_service()
    req = file(service, approvals_required=3)
    st = service.decide(req.id, people.bob, "deny", reason="no", input_sha256=people.digest)
    assert st.state == "denied" and st.reason == "no" and [p["subject"] for p in st.decided_by] == ["bob"]


def test_a_quorum_of_two_distinct_approvers(make_service, file, people):
    service = make_service()
    req = file(service, approvals_required=2)
    st = service.decide(req.id, people.bob, "approve", reason="", input_sha256=people.digest)
    assert st.state == "pending" and len(st.votes) == 1
    e = refused(service.decide, req.id, people.bob, "approve", reason="again", input_sha256=people.digest)
    assert e.status == 409 and "already decided" in e.message
    assert service.status(req.id).state == "pending"
    st = make_service().decide(req.id, people.carol, "approve", reason="", input_sha256=people.digest)
    assert st.state == "approved"
    assert [p["subject"] for p in st.decided_by] == ["bob", "carol"]


def test_people_are_told_apart_by_issuer_and_subject(make_service, file, people):
    service = make_service()
    req = file(service, approvals_required=2)
    service.decide(req.id, people.bob, "approve", reason="", input_sha256=people.digest)
    st = service.decide(req.id, people.other_bob, "approve", reason="", input_sha256=people.digest)
    assert st.state == "approved" and len(st.decided_by) == 2


def test_a_decision_is_approve_or_deny(make_service, file, people):
    service = make_service()
    req = file(service)
    assert refused(service.decide, req.id, people.bob, "maybe", reason="", input_sha256=people.digest).status == 400


def test_racing_approvers_one_decision_wins(make_service, file, people):
    """Bob approves through one replica while Carol denies through another, at the same moment,
    twenty times: each time exactly one decision completes the request and the other is refused
    naming the winner."""
    for _ in range(20):
        a, b = make_service(), make_service()
        req = file(a)
        barrier = threading.Barrier(2)

        def decide(service, who, decision, req=req, barrier=barrier):
            barrier.wait()
            try:
                return service.decide(req.id, who, decision, reason=decision, input_sha256=people.digest)
            except ApprovalRefused as e:
                return e

        with ThreadPoolExecutor(2) as pool:
            results = list(
                pool.map(lambda args: decide(*args), [(a, people.bob, "approve"), (b, people.carol, "deny")])
            )
        wins = [r for r in results if not isinstance(r, ApprovalRefused)]
        losses = [r for r in results if isinstance(r, ApprovalRefused)]
        assert len(wins) == 1 and len(losses) == 1
        assert losses[0].status == 409
        final = make_service().status(req.id)
        assert final.state == wins[0].state
        assert f"already {final.state} by {final.decided_by[0]['email']}" in losses[0].message


# -- grants -----------------------------------------------------------------------------------------


def approved(make_service, file, people, **overrides):
    service = make_service()
    req = file(service, **overrides)
    service.decide(req.id, people.bob, "approve", reason="", input_sha256=people.digest)
    return req


def test_an_approved_call_passes_once(make_service, file, people):
    req = approved(make_service, file, people, mode="retry")
    service = make_service()
    st = service.claim_call_grant(people.alice, "Bash", people.digest, "gx_2")
    assert st is not None and st.request.id == req.id and st.uses == 1
    assert service.claim_call_grant(people.alice, "Bash", people.digest, "gx_3") is None
    assert make_service().claim_call_grant(people.alice, "Bash", people.digest, "gx_4") is None
    assert make_service().status(req.id).uses == 1


def test_a_grant_is_for_that_requester_and_that_call_only(make_service, file, people):
    approved(make_service, file, people)
    service = make_service()
    assert service.claim_call_grant(people.dave, "Bash", people.digest, "gx") is None
    assert service.claim_call_grant(people.alice, "Bash", "b" * 64, "gx") is None
    assert service.claim_call_grant(people.alice, "Write", people.digest, "gx") is None
    assert service.claim_call_grant(people.alice, "Bash", people.digest, "gx") is not None


def test_a_grant_lapses_after_grant_seconds(make_service, file, people, clock):
    approved(make_service, file, people, grant_seconds=60.0)
    clock.advance(61)
    assert make_service().claim_call_grant(people.alice, "Bash", people.digest, "gx") is None


def test_pending_and_denied_requests_grant_nothing(make_service, file, people):
    service = make_service()
    req = file(service)
    assert service.claim_call_grant(people.alice, "Bash", people.digest, "gx") is None
    service.decide(req.id, people.bob, "deny", reason="", input_sha256=people.digest)
    assert service.claim_call_grant(people.alice, "Bash", people.digest, "gx") is None


def test_concurrent_claims_one_succeeds(make_service, file, people):
    """Eight claims at once, through four replicas: the grant is spent exactly once."""
    for _ in range(5):
        req = approved(make_service, file, people)
        services = [make_service() for _ in range(4)]
        barrier = threading.Barrier(8)

        def claim(i, barrier=barrier, services=services):
            barrier.wait()
            return services[i % 4].claim_call_grant(people.alice, "Bash", people.digest, f"gx_{i}")

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(claim, range(8)))
        assert [r.request.id for r in results if r is not None] == [req.id]


def test_pending_call_finds_the_open_request_for_the_same_call(make_service, file, people):
    service = make_service()
    req = file(service)
    other = make_service()
    assert other.pending_call(people.alice, "tool_call", "Bash", people.digest) == req
    assert other.pending_call(people.dave, "tool_call", "Bash", people.digest) is None
    assert other.pending_call(people.alice, "tool_call", "Bash", "b" * 64) is None
    service.decide(req.id, people.bob, "approve", reason="", input_sha256=people.digest)
    assert other.pending_call(people.alice, "tool_call", "Bash", people.digest) is None


def test_access_grants_last_grant_seconds(make_service, file, people, clock):
    service = make_service()
    target = "model claude-opus-4-1"
    req = file(
        service,
        kind="access",
        tool=target,
        tool_input={"model": "claude-opus-4-1"},
        rule="opus-jit",
        mode="retry",
        timeout_seconds=None,
        grant_seconds=600.0,
    )
    assert service.active_access_grant(people.alice, "opus-jit", target) is None
    assert service.pending_call(people.alice, "access", target, people.digest) == req
    make_service().decide(req.id, people.bob, "approve", reason="", input_sha256=people.digest)
    for _ in range(3):  # not used up
        st = service.active_access_grant(people.alice, "opus-jit", target)
        assert st is not None and st.request.id == req.id
    assert service.active_access_grant(people.alice, "other-rule", target) is None
    assert service.active_access_grant(people.dave, "opus-jit", target) is None
    assert service.active_access_grant(people.alice, "opus-jit", "model claude-haiku-4") is None
    clock.advance(601)
    assert service.active_access_grant(people.alice, "opus-jit", target) is None
    assert make_service().active_access_grant(people.alice, "opus-jit", target) is None


# -- listing ----------------------------------------------------------------------------------------


def test_pending_shows_open_requests_to_their_requester_and_approvers(make_service, file, people, clock):
    service = make_service()
    first = file(service)
    clock.advance(1)
    second = file(service, requester=people.dave, input_sha256="b" * 64)
    clock.advance(1)
    decided = file(service, input_sha256="c" * 64)
    service.decide(decided.id, people.bob, "approve", reason="", input_sha256="c" * 64)
    other = make_service()
    assert [s.request.id for s in other.pending()] == [first.id, second.id]
    assert [s.request.id for s in other.pending(people.bob)] == [first.id, second.id]
    assert [s.request.id for s in other.pending(people.alice)] == [first.id]
    assert [s.request.id for s in other.pending(people.dave)] == [second.id]
    everything = other.listing(people.bob, include_decided=True)
    assert [(s.request.id, s.state) for s in everything] == [
        (first.id, "pending"),
        (second.id, "pending"),
        (decided.id, "approved"),
    ]
    clock.advance(3601)
    assert other.pending() == []


def test_pending_requests_are_read_again_decided_ones_are_not(make_service, file, people, tmp_path):
    """A replica sees another's decision on a request it had read before; once decided, a
    request's status no longer needs the store."""
    a, b = make_service(), make_service()
    req = file(a)
    assert b.status(req.id).state == "pending"
    a.decide(req.id, people.bob, "deny", reason="", input_sha256=people.digest)
    assert b.status(req.id).state == "denied"
    # Decided: b answers from memory even when the store is gone.
    import shutil

    shutil.rmtree(tmp_path / "store")
    assert b.status(req.id).state == "denied"
