"""The LogSafety addon: every log record of the process rendered redacted (the record factory,
mitmproxy's formatter), the redacting wrapper of the process's output streams, and the addon in
a mitmproxy master with the Dumper (wrapped once, request lines and records redacted, `done`)."""

from __future__ import annotations

import io
import logging
import random
import sys

import pytest
from mitmproxy import hooks
from mitmproxy.addons.dumper import Dumper
from mitmproxy.test import taddons, tflow

from gatehouse.mitm import logsafety
from gatehouse.mitm.state import GatewayState
from support.secrets import SAMPLE_JWT, fake_secret

# -- every log record of the process -------------------------------------------------------------


@pytest.fixture
def factory():
    logsafety.install_record_factory()
    yield
    logsafety.uninstall_record_factory()


def test_record_factory_redacts_message_args_and_exceptions(factory):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("gatehouse.test.logsafety")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("refused %s", f"Bearer {SAMPLE_JWT}")
        try:
            raise ValueError(f"bad line {SAMPLE_JWT}")
        except ValueError:
            logger.exception("failed")
        logger.info("plain %d%%", 5)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert SAMPLE_JWT not in out and SAMPLE_JWT[:30] not in out
    assert "refused Bearer [REDACTED" in out and "ValueError: bad line [REDACTED:jwt]" in out
    assert "plain 5%" in out


def test_record_factory_is_used_by_mitmproxy_formatter(factory):
    from mitmproxy import log as mlog

    record = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1, "line %s", (SAMPLE_JWT,), None)
    assert SAMPLE_JWT not in mlog.MitmFormatter(False).format(record)


def test_redacting_stream_wraps_and_unwraps():
    inner = io.StringIO()
    stream = logsafety.wrap(inner)
    assert logsafety.wrap(stream) is stream
    print(f"GET https://api.anthropic.com/?k={SAMPLE_JWT}", file=stream)
    stream.flush()
    assert SAMPLE_JWT not in inner.getvalue() and "GET https://api.anthropic.com/?k=" in inner.getvalue()
    assert logsafety.unwrap(stream) is inner


# -- the addon in a mitmproxy master ------------------------------------------------------------

ANTHROPIC_KEY = fake_secret("anthropic-api-key", random.Random(10))


@pytest.fixture
def process_streams(monkeypatch):
    """Gives the test stdout and stderr of its own, and puts them and the shared redactor's hooks
    back after it (the addon wraps and sets them for the life of the process). Called from the
    test body: pytest's capture sets sys.stdout again between a fixture's setup and the test."""

    def take() -> tuple[io.StringIO, io.StringIO]:
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        return out, err

    monkeypatch.setattr(logsafety.REDACTOR, "mask", logsafety.REDACTOR.mask)
    monkeypatch.setattr(logsafety.REDACTOR, "refresh", logsafety.REDACTOR.refresh)
    yield take
    logsafety.uninstall_record_factory()


def wrapped_once(stream, inner) -> bool:
    return isinstance(stream, logsafety.RedactingStream) and stream.inner is inner


def test_every_output_is_wrapped_once_however_often_the_addon_is_configured(process_streams):
    out, err = process_streams()
    dumper_out = io.StringIO()
    dumper = Dumper(dumper_out)
    addon = logsafety.LogSafety(GatewayState())
    with taddons.context(dumper, addon) as tctx:
        for _ in range(2):
            tctx.configure(addon)
            tctx.master.addons.invoke_addon_sync(addon, hooks.RunningHook())
        assert wrapped_once(sys.stdout, out) and wrapped_once(sys.stderr, err)
        assert wrapped_once(dumper.outfp, dumper_out)
        line = dumper._echo_request_line
        assert isinstance(line, logsafety._RedactingRequestLine)
        assert not isinstance(line._original, logsafety._RedactingRequestLine)
        assert logging.getLogRecordFactory() is logsafety._factory


def test_the_dumpers_request_line_and_every_log_record_are_redacted(process_streams):
    out, _ = process_streams()
    dumper_out = io.StringIO()
    dumper = Dumper(dumper_out)
    addon = logsafety.LogSafety(GatewayState())
    with taddons.context(dumper, addon) as tctx:
        tctx.configure(addon)
        tctx.configure(addon)
        f = tflow.tflow(resp=True)
        f.request.path = f"/v1/messages?token={SAMPLE_JWT}&key={ANTHROPIC_KEY}"
        dumper.response(f)

        log_out = io.StringIO()
        handler = logging.StreamHandler(log_out)
        logger = logging.getLogger("gatehouse.test.logsafety.addon")
        logger.addHandler(handler)
        try:
            logger.warning("refused %s with x-api-key %s", f.request.url, ANTHROPIC_KEY)
        finally:
            logger.removeHandler(handler)
        print(f"Authorization: Bearer {SAMPLE_JWT}")
        sys.stdout.flush()

    request_line = dumper_out.getvalue()
    # Redacted before the Dumper cuts the URL to the terminal's width (at least 50 characters).
    assert "GET http://address:22/v1/messages?token=[REDACTED" in request_line, request_line
    for text in (request_line, log_out.getvalue(), out.getvalue()):
        assert "[REDACTED" in text, text
        # Not whole, and not the part the Dumper's cut would leave.
        assert SAMPLE_JWT[:16] not in text and ANTHROPIC_KEY[:16] not in text, text


def test_done_flushes_what_is_pending_and_redaction_stays(process_streams):
    """`done` does not unwrap: other addons and mitmproxy's shutdown still print after it."""
    out, _ = process_streams()
    dumper_out = io.StringIO()
    dumper = Dumper(dumper_out)
    addon = logsafety.LogSafety(GatewayState())
    with taddons.context(dumper, addon) as tctx:
        tctx.configure(addon)
        sys.stdout.write(f"shutting down, key {ANTHROPIC_KEY}")  # no newline: held back
        assert out.getvalue() == ""
        tctx.master.addons.invoke_addon_sync(addon, hooks.DoneHook())
        assert out.getvalue().startswith("shutting down, key [REDACTED") and ANTHROPIC_KEY[:16] not in out.getvalue()
        assert wrapped_once(sys.stdout, out) and wrapped_once(dumper.outfp, dumper_out)
        assert logging.getLogRecordFactory() is logsafety._factory
