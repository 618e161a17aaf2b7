"""Every flow hook of every gateway addon fails closed.

mitmproxy runs the whole script as one addon inside one error handler per event: an
exception in one of our hooks skips every later hook for that event (masking, recording)
and the flow goes on. So each HTTP flow hook must be wrapped in `flowutil.fail_closed`,
which turns the exception into a refusal the later addons see.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from mitmproxy.test import taddons, tflow

import gatehouse.mitm
from gatehouse.mitm.exchanges import ExchangeIds
from gatehouse.mitm.flowutil import exchange_of, fail_closed

HTTP_FLOW_HOOKS = ("http_connect", "requestheaders", "request", "responseheaders", "response", "error")


def _wrapper_codes() -> set:
    class Probe:
        @fail_closed("probe")
        def sync(self, flow): ...

        @fail_closed("probe")
        async def coro(self, flow): ...

    return {Probe.sync.__code__, Probe.coro.__code__}


def addon_hooks() -> list[tuple[str, str, object]]:
    found = []
    for mod in pkgutil.iter_modules(gatehouse.mitm.__path__):
        module = importlib.import_module(f"gatehouse.mitm.{mod.name}")
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for hook in HTTP_FLOW_HOOKS:
                method = cls.__dict__.get(hook)
                if method is not None:
                    found.append((f"{mod.name}.{cls_name}", hook, method))
    return found


def test_the_walk_finds_the_addons():
    names = {name for name, _, _ in addon_hooks()}
    assert {
        "access.Access",
        "credentials.Credentials",
        "exchanges.ExchangeIds",
        "identity.IdentityAddon",
        "masking.Masking",
        "protocols.ProtocolGuard",
        "recorder.Recorder",
    } <= names


@pytest.mark.parametrize("name,hook,method", addon_hooks(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_flow_hook_is_wrapped_in_fail_closed(name, hook, method):
    assert method.__code__ in _wrapper_codes(), f"{name}.{hook} is not wrapped in @fail_closed"


def test_an_exception_in_a_wrapped_hook_refuses_the_flow(monkeypatch):
    addon = ExchangeIds()

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure with content: sk-ant-secret")

    monkeypatch.setattr("gatehouse.mitm.exchanges.refusal_response", broken)
    with taddons.context(addon):
        flow = tflow.tflow(resp=True)
        ex = exchange_of(flow)
        ex.refusal = object()  # makes `response` put the refusal back, which now raises
        addon.response(flow)
    assert flow.response.status_code == 500
    assert b"exchange failed" in flow.response.content and b"sk-ant-secret" not in flow.response.content
    assert ex.refused and ex.errors == ["exchange: internal error RuntimeError"]
