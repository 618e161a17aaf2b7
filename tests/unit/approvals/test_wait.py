"""Waiting for a decision (ApprovalService.wait): a decision made through this process wakes the
waiter at once, one made through another replica within a poll interval, and no decision
returns at the timeout, without holding up anything else on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time


def decide_later(service, approval_id, who, digest, delay: float, decision: str = "approve") -> threading.Thread:
    """A decision from a worker thread after `delay` seconds, as the approvals API makes it."""

    def run() -> None:
        time.sleep(delay)
        service.decide(approval_id, who, decision, reason="ok", input_sha256=digest)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_decision_through_this_process_wakes_the_waiter_at_once(make_service, file, people):
    service = make_service(poll_interval=60.0)  # polling alone would take a minute
    req = file(service)

    async def main() -> tuple[float, str]:
        start = time.monotonic()
        decide_later(service, req.id, people.bob, people.digest, 0.2)
        st = await service.wait(req.id, 30.0)
        return time.monotonic() - start, st.state

    elapsed, state = asyncio.run(main())
    assert state == "approved"
    assert elapsed < 2.0
    assert service._waiters == {}


def test_a_decision_through_another_replica_is_seen_within_the_poll_interval(make_service, file, people):
    holder, other = make_service(poll_interval=0.25), make_service()
    req = file(holder)

    async def main() -> tuple[float, str]:
        start = time.monotonic()
        decide_later(other, req.id, people.bob, people.digest, 0.3, "deny")
        st = await holder.wait(req.id, 30.0)
        return time.monotonic() - start, st.state

    elapsed, state = asyncio.run(main())
    assert state == "denied"
    assert 0.3 <= elapsed < 0.3 + 0.25 + 1.0


def test_no_decision_returns_pending_at_the_timeout(make_service, file):
    service = make_service(poll_interval=0.1)
    req = file(service)

    async def main() -> tuple[float, str]:
        start = time.monotonic()
        st = await service.wait(req.id, 0.5)
        return time.monotonic() - start, st.state

    elapsed, state = asyncio.run(main())
    assert state == "pending"
    assert 0.5 <= elapsed < 1.5


def test_a_decided_request_returns_at_once(make_service, file, people):
    service = make_service(poll_interval=60.0)
    req = file(service)
    service.decide(req.id, people.bob, "approve", reason="", input_sha256=people.digest)

    async def main() -> float:
        start = time.monotonic()
        assert (await service.wait(req.id, 30.0)).state == "approved"
        return time.monotonic() - start

    assert asyncio.run(main()) < 1.0


def test_waiting_holds_up_nothing_else(make_service, file, people):
    """Two held flows and a busy one share the loop: the busy one keeps running, and a decision
    on one held request releases that one only."""
    service = make_service(poll_interval=0.2)
    first = file(service)
    second = file(service, input_sha256="b" * 64)

    async def main() -> tuple[int, str, str]:
        ticks = 0

        async def busy() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(busy())
        decide_later(service, first.id, people.bob, people.digest, 0.1)
        a, b = await asyncio.gather(service.wait(first.id, 5.0), service.wait(second.id, 0.6))
        ticker.cancel()
        return ticks, a.state, b.state

    ticks, a, b = asyncio.run(main())
    assert (a, b) == ("approved", "pending")
    assert ticks > 20
