"""The gateway process itself: what it does once it runs, for every flow after.

Once every addon has started, what the process holds for good (mitmproxy, the libraries, the
policy, compiled rules: hundreds of thousands of objects) is moved out of the garbage
collector's sight (`gc.freeze`). A full collection otherwise walks all of it, and one is due
every so often as flows come and go: measured with `benchmarks/throughput.py --attribute`, a
collection held the process 72-135 ms (the event loop, or the GIL from a worker thread) at 1
and at 32 clients; with the freeze, none took over 8 ms. Objects made later (flows, caches) are
collected as before.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


class Runtime:
    def running(self) -> None:
        gc.collect()  # what start-up left behind is freed, not frozen
        gc.freeze()
        log.debug(f"gatehouse: {gc.get_freeze_count()} start-up objects kept out of garbage collection")
