"""Where a gateway's time per flow goes: the wall time of every addon hook, as an mitmdump script.

Load it into the gateway of a benchmark, then print what it wrote:

    GATEHOUSE_HOOK_TIMES=/tmp/hooks.json .venv/bin/python benchmarks/buffered_latency.py \\
        --sizes 200 --gateway-arg=-s --gateway-arg="$PWD/benchmarks/hook_times.py"
    .venv/bin/python benchmarks/hook_times.py /tmp/hooks.json

(an absolute path: the gateway runs in a folder of its own; `stream_delay.py` takes
`--gateway-arg` too.) Every addon's `requestheaders`, `request`,
`responseheaders`, `response` and `error` is timed from call to return: for an async hook that
includes what it awaits (a worker thread, the spool's sync). `GATEHOUSE_HOOK_FUNCS` also times
functions inside them, e.g.
``gatehouse.recording.journal:Journal.append,gatehouse.mitm.requestjson:parse`` (module:name,
the name as the caller looks it up; a plain function or method, not a static or class
method). The file holds, per name, the count, median and p90 in ms;
with several processes writing one file, the last one to stop wins.

A probe, not a baseline: it adds ~1 µs per call, and its figures are for finding where the
difference to bare mitmdump goes, not for comparing across runs on this shared machine.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

HOOKS = ("requestheaders", "request", "responseheaders", "response", "error")
OUT_ENV = "GATEHOUSE_HOOK_TIMES"
FUNCS_ENV = "GATEHOUSE_HOOK_FUNCS"

_times: dict[str, list[float]] = {}
_lock = threading.Lock()


def _note(name: str, seconds: float) -> None:
    with _lock:
        _times.setdefault(name, []).append(seconds)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, noting the wall time of each call under `name`."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                _note(name, time.perf_counter() - t0)

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _note(name, time.perf_counter() - t0)

    return wrapper


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, ts in times.items():
        ordered = sorted(ts)
        out[name] = {
            "n": len(ts),
            "median_ms": statistics.median(ts) * 1000,
            "p90_ms": ordered[math.ceil(0.9 * len(ordered)) - 1] * 1000,  # nearest rank
        }
    return out


def _time_functions(spec: str) -> None:
    for item in filter(None, (s.strip() for s in spec.split(","))):
        module_name, _, attr = item.partition(":")
        owner: Any = importlib.import_module(module_name)
        *path, last = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, last, timed(attr, getattr(owner, last)))


def _name(addon: Any) -> str:
    """An addon's class name; a script's module name (every script module is a `module`)."""
    return addon.__name__ if inspect.ismodule(addon) else type(addon).__name__


class HookTimes:
    def running(self) -> None:
        from mitmproxy import ctx  # only inside mitmdump: the printing side below needs no mitmproxy

        out = os.environ.get(OUT_ENV, "")
        if not os.path.isabs(out):
            # The gateway runs in a folder of its own (removed with it): a relative path is lost.
            logging.warning(f"hook_times: {OUT_ENV} is {'not an absolute path' if out else 'not set'}; writing nothing")

        seen: set[int] = set()
        stack = list(ctx.master.addons.chain)
        while stack:
            addon = stack.pop()
            if id(addon) in seen or addon is self:
                continue
            seen.add(id(addon))
            for hook in HOOKS:
                fn = getattr(addon, hook, None)
                if fn is not None:
                    setattr(addon, hook, timed(f"{_name(addon)}.{hook}", fn))
            stack.extend(getattr(addon, "addons", None) or [])

    def done(self) -> None:
        out = os.environ.get(OUT_ENV, "")
        if os.path.isabs(out):
            with _lock:
                data = summary(_times)
            with open(out, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)


if os.environ.get(FUNCS_ENV):
    _time_functions(os.environ[FUNCS_ENV])

addons = [HookTimes()]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} FILE  (a file {OUT_ENV} named)")
    with open(sys.argv[1]) as f:
        data = json.load(f)
    print(f"{'hook or function':45s} {'calls':>6s} {'median ms':>10s} {'p90 ms':>8s}")
    for name, s in sorted(data.items(), key=lambda kv: -kv[1]["median_ms"]):
        print(f"{name:45s} {s['n']:6d} {s['median_ms']:10.3f} {s['p90_ms']:8.3f}")


if __name__ == "__main__":
    main()
