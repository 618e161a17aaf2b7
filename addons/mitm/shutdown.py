"""A graceful stop: on SIGTERM (or Ctrl-C) the gateway finishes what it has accepted and drains
its recording spool before it exits.

mitmproxy answers SIGTERM by running every addon's `done` hook while the event loop and the
open connections still run, and only then cancels them. This addon's `done` (it comes before
the other gateway addons' `done`) uses that window, within ``[recording] drain_seconds`` of
the signal:

1. it closes the proxy's listeners, so a load balancer sends new connections elsewhere;
2. a request that still arrives on an open (kept-alive) connection is answered 503
   ``overloaded_error`` with ``x-should-retry: true`` and ``connection: close``: the SDKs and
   Claude Code retry it, on a new connection, against another replica;
3. it waits for the flows in progress (a streamed answer, a held tool call) to end;
4. flows still going at the deadline are recorded as they are, with the reason among their
   errors (mitmproxy cannot cut a flow in transit; the exit that follows does);
5. the recorder spools the chain's last checkpoint and uploads the spool, for whatever time is
   left (at least `MIN_UPLOAD_SECONDS`), and says how many objects stay if the store cannot
   take them.

A script reload also runs `done`, but mitmproxy is not exiting then: nothing is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable

from mitmproxy import ctx, http

from gatehouse.mitm.flowutil import fail_closed, refuse
from gatehouse.mitm.recorder import Recorder
from gatehouse.mitm.state import GatewayState
from gatehouse.recording.config import RecordingPolicy
from gatehouse.wire.apierrors import ApiError

log = logging.getLogger(__name__)

SHUTTING_DOWN = ApiError(
    "overloaded_error",
    "This Gatehouse gateway is shutting down and takes no new requests; retry, and another one will answer.",
    status=503,
    should_retry=True,
    extra_headers={"connection": "close"},
)
# The spool's upload gets at least this long after the flows, even when they used up
# drain_seconds: the records of what just ended are the ones most worth keeping.
MIN_UPLOAD_SECONDS = 2.0
CUT_OFF = "cut off: the gateway stopped before this exchange ended ([recording] drain_seconds passed)"
# How often the wait for the flows in progress looks again.
POLL_SECONDS = 0.05


class GracefulStop:
    def __init__(self, state: GatewayState, *, recorder: Recorder, clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.recorder = recorder
        self.clock = clock
        self.stopping = False
        self._in_flight: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    @property
    def drain_seconds(self) -> float:
        policy = self.state.policy
        recording = policy.recording if policy is not None else None
        return float((recording or RecordingPolicy()).drain_seconds)

    # -- flows ----------------------------------------------------------------------------------
    @fail_closed("shutdown")
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.stopping:
            refuse(flow, SHUTTING_DOWN, "shutdown")
            return
        self._in_flight.add(flow)

    @fail_closed("shutdown")
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self.stopping:
            refuse(flow, SHUTTING_DOWN, "shutdown")

    @fail_closed("shutdown")
    def response(self, flow: http.HTTPFlow) -> None:
        self._in_flight.discard(flow)

    @fail_closed("shutdown")
    def error(self, flow: http.HTTPFlow) -> None:
        self._in_flight.discard(flow)

    def in_flight(self) -> list[http.HTTPFlow]:
        return [f for f in self._in_flight if f.live]

    # -- the stop -------------------------------------------------------------------------------
    async def done(self) -> None:
        if not ctx.master.should_exit.is_set():
            return  # a script reload, not an exit
        self.stopping = True
        deadline = self.clock() + self.drain_seconds
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is not None:
            await proxyserver.servers.update([])  # listeners closed; open connections go on
        waiting = self.in_flight()
        log.info(
            f"gatehouse: stopping: no new connections; waiting up to {self.drain_seconds:g} s for "
            f"{len(waiting)} flow(s) in progress, then for the recording spool"
        )
        while waiting and self.clock() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            waiting = self.in_flight()
        if waiting:
            log.warning(f"gatehouse: stopping: {len(waiting)} flow(s) still in progress after drain_seconds; cut off")
            # On the loop, not in a worker thread: these flows are still live, and the loop is
            # what changes them. Nothing else is served any more that this would hold up.
            self.recorder.record_cut_off(waiting, CUT_OFF)
        upload_seconds = max(deadline - self.clock(), MIN_UPLOAD_SECONDS)
        await asyncio.to_thread(self.recorder.finish, upload_seconds)
