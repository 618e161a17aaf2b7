"""The LogSafety addon: every log record of the process rendered redacted (the record factory,
mitmproxy's formatter), and the redacting wrapper of the process's output streams."""

from __future__ import annotations

import io
import logging

import pytest

from gatehouse.mitm import logsafety
from support.secrets import SAMPLE_JWT

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
