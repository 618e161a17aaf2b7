"""A graceful stop through a real mitmdump: SIGTERM closes the listener, refuses new requests
on open connections, lets the flows in progress finish, and drains the spool to the store."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import anthropic
import pytest

from gatehouse.recording.reader import expand_request_body
from gatehouse.recording.stores import open_store
from support.fake_upstream import Reply
from support.harness import Gateway, sdk_client
from support.recorded import s3_env, s3_policy, store_records, verify, wait_records
from support.s3_server import CREDENTIALS

MODEL = "claude-sonnet-4-5"


def terminate(gw: Gateway) -> None:
    """SIGTERM, as systemd, Kubernetes or docker stop send it; does not wait."""
    assert gw.proc is not None
    os.killpg(gw.proc.pid, signal.SIGTERM)


def wait_refused(port: int, timeout: float = 15) -> None:
    """Until a new connection to `port` is refused (the listener is closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} still takes connections {timeout}s after SIGTERM")


def exit_code(gw: Gateway, timeout: float) -> int:
    assert gw.proc is not None
    return gw.proc.wait(timeout=timeout)


def test_sigterm_finishes_the_stream_in_progress_refuses_new_requests_and_drains_to_s3(gateway_factory, upstream, s3):
    bucket = f"drain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket, object_lock=True)
    url = f"s3://{bucket}/gatehouse"
    gw = gateway_factory(s3_policy(s3, bucket, "drain_seconds = 30\n"), env=dict(CREDENTIALS))
    client = sdk_client(gw)
    for i in range(3):
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": f"before {i}"}])
    # A second client whose connection stays open (kept alive) across the signal.
    late = sdk_client(gw)
    late.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "kept alive"}])

    answer = "this streamed answer is finished after the signal"
    reply = Reply.text(answer, chunk_chars=4, pause_before_event=4)
    upstream.enqueue(reply)
    stream = client.messages.create(
        model=MODEL, max_tokens=50, stream=True, messages=[{"role": "user", "content": "in progress"}]
    )
    events = iter(stream)
    first = next(events)
    assert reply.gate.wait_reached(10)

    terminate(gw)
    wait_refused(gw.port)
    # A request on the connection that was open: a retryable refusal, not a hang or a reset.
    with pytest.raises(anthropic.APIStatusError) as e:
        late.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "after the signal"}])
    assert e.value.status_code == 503
    assert e.value.response.headers["x-should-retry"] == "true"
    body = e.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert "shutting down" in body["error"]["message"]

    reply.gate.release()
    text = "".join(
        ev.delta.text for ev in [first, *events] if ev.type == "content_block_delta" and ev.delta.type == "text_delta"
    )
    assert text == answer  # the stream in progress was finished, whole
    assert exit_code(gw, 40) == 0
    log = gw.log()
    assert "stay in the spool" not in log, log

    # Everything is in the store, none of it left for a next start that may never come.
    recs = store_records(url, endpoint_url=s3.endpoint_url)
    assert len([r for r in recs if r["kind"] == "exchange"]) == 5, [r["kind"] for r in recs]
    [refusal] = [r for r in recs if r["kind"] == "refusal"]
    assert refusal["response"]["status"] == 503
    assert refusal["decisions"][-1]["stage"] == "shutdown"
    r = verify(url, "--s3-endpoint-url", s3.endpoint_url, env=dict(os.environ, **s3_env(s3)))
    assert r.returncode == 0, r.stdout + r.stderr
    spool = gw.workdir / "state" / "spool" / "segments"
    assert not spool.exists() or not any(spool.iterdir())


def test_sigterm_with_the_store_down_says_what_stays_spooled_and_the_next_start_uploads_it(
    gateway_factory, upstream, s3
):
    bucket = f"drain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket, object_lock=True)
    url = f"s3://{bucket}/gatehouse"
    policy = s3_policy(s3, bucket, "drain_seconds = 3\n")
    gw = gateway_factory(policy, env=dict(CREDENTIALS))
    client = sdk_client(gw)
    client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "stored"}])
    assert len(wait_records(url, 1, endpoint_url=s3.endpoint_url)) == 1
    s3.stop()
    for i in range(3):
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": f"spooled {i}"}])
    started = time.monotonic()
    terminate(gw)
    assert exit_code(gw, 60) == 0
    took = time.monotonic() - started
    log = gw.log()
    assert "object(s) stay in the spool" in log, log
    assert took < 45, took  # bounded by drain_seconds and the store's timeouts, not a hang

    s3.restart()
    gw.start()  # the same state dir: the spool is resumed and uploaded
    recs = wait_records(url, 4, endpoint_url=s3.endpoint_url, timeout=60)
    gw.stop()
    store = open_store(url, endpoint_url=s3.endpoint_url)
    said = [expand_request_body(r, store)["messages"][0]["content"] for r in recs if r["kind"] == "exchange"]
    assert sorted(said) == [
        "spooled 0",
        "spooled 1",
        "spooled 2",
        "stored",
    ]
    r = verify(url, "--s3-endpoint-url", s3.endpoint_url, env=dict(os.environ, **s3_env(s3)))
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_flow_still_in_progress_at_the_deadline_is_recorded_as_cut_off(gateway_factory, upstream, tmp_path):
    store = tmp_path / "store"
    gw = gateway_factory(f'[recording]\nstore = "{store}"\ndrain_seconds = 1\n')
    client = sdk_client(gw)
    reply = Reply.text("an answer the stop does not wait for", chunk_chars=4, pause_before_event=3)
    upstream.enqueue(reply)
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=50, stream=True, messages=[{"role": "user", "content": "slow"}]
    )
    exchange_id = raw.headers["x-gatehouse-exchange-id"]
    assert reply.gate.wait_reached(10)
    terminate(gw)
    try:
        assert exit_code(gw, 30) == 0
    finally:
        reply.gate.release()
    recs = store_records(str(store))
    [cut] = [r for r in recs if r.get("exchange_id") == exchange_id]
    assert any("cut off: the gateway stopped" in e for e in cut["errors"]), cut["errors"]
    r = verify(str(store))
    assert r.returncode == 0, r.stdout + r.stderr
