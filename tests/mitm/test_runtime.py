"""The gateway process (gatehouse.mitm.runtime): start-up's objects kept out of garbage collection."""

from __future__ import annotations

import gc

from mitmproxy.hooks import RunningHook
from mitmproxy.test import taddons

from gatehouse.mitm.runtime import Runtime


def test_once_running_start_up_objects_are_frozen_and_later_ones_collected():
    gc.unfreeze()
    try:
        with taddons.context(Runtime()) as tctx:
            tctx.master.addons.trigger(RunningHook())
            assert gc.get_freeze_count() > 1000  # the interpreter, mitmproxy, the test run
            before = gc.get_freeze_count()

            class Cycle:
                pass

            a, b = Cycle(), Cycle()
            a.other, b.other = b, a
            del a, b
            assert gc.collect() >= 2  # made after the freeze: still collected
            assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()
