"""Recording, end to end through a real mitmdump: local and S3 stores, faults, verify, no secret at rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import anthropic
import pytest

from gatehouse.recording.reader import expand_request_body, iter_records, response_message
from gatehouse.recording.stores import open_store
from support.fake_upstream import Reply, claude_code_tool_responder
from support.harness import CALLER_KEY, GATEWAY_KEY, run_claude, sdk_client
from support.recorded import GATEHOUSE, s3_env, s3_policy, store_records, verify, wait_records
from support.s3_server import CREDENTIALS

pytestmark = pytest.mark.e2e
MODEL = "claude-sonnet-4-6"
GITHUB_PAT = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"


def local_policy(store: Path, extra: str = "") -> str:
    return f'[recording]\nstore = "{store}"\n{extra}'


def test_sdk_exchanges_are_recorded_and_verify(gateway_factory, upstream, tmp_path):
    store = tmp_path / "store"
    gw = gateway_factory(local_policy(store))
    client = sdk_client(gw)
    upstream.enqueue(Reply.text("Buffered answer."))
    msg = client.messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": f"first, with a secret {GITHUB_PAT}"}]
    )
    upstream.enqueue(
        Reply.message(
            [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls -la"}},
            ],
            stop_reason="tool_use",
        )
    )
    with client.messages.stream(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "second"}]) as s:
        streamed = s.get_final_message()
        streamed_id = s.response.headers["x-gatehouse-exchange-id"]
    with pytest.raises(anthropic.PermissionDeniedError):
        client.beta.files.list()
    gw.stop()

    recs = store_records(str(store))
    by_id = {r["exchange_id"]: r for r in recs}
    assert len([r for r in recs if r["kind"] == "exchange"]) == 2
    [refusal] = [r for r in recs if r["kind"] == "refusal"]
    assert refusal["decisions"][-1]["action"] == "deny" and "/v1/files" in refusal["decisions"][-1]["reason"]
    st = open_store(str(store))
    buffered = next(r for r in recs if r["kind"] == "exchange" and r["exchange_id"] != streamed_id)
    assert response_message(buffered, st)["content"] == [b.model_dump(exclude_none=True) for b in msg.content]
    rec = by_id[streamed_id]
    recorded = response_message(rec, st)
    assert recorded["content"] == [b.model_dump(exclude_none=True) for b in streamed.content]
    assert recorded["stop_reason"] == "tool_use"
    assert expand_request_body(rec, st)["messages"] == [{"role": "user", "content": "second"}]

    r = verify(str(store))
    assert r.returncode == 0, r.stdout + r.stderr
    # With the policy, the signer is checked against the gateway's own key, not the store's.
    r = verify(str(store), "--policy", str(gw.policy_path))
    assert r.returncode == 0 and "generated signing key" in r.stdout + r.stderr, r.stdout + r.stderr
    # No secret at rest: neither key is anywhere in the store.
    for path in store.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert GATEWAY_KEY.encode() not in data and CALLER_KEY.encode() not in data, path
            assert GITHUB_PAT.encode() not in data, path
    assert any(b"[MASKED:github-pat:" in p.read_bytes() for p in store.rglob("*.json"))


def test_claude_code_session_is_recorded(gateway_factory, upstream, tmp_path):
    store = tmp_path / "store"
    gw = gateway_factory(local_policy(store))
    upstream.responder = claude_code_tool_responder("echo recorded-run")
    work = tmp_path / "project"
    work.mkdir()
    r = run_claude(gw, work, "run the check", args=["--allowedTools", "Bash"])
    assert r.returncode == 0, r.stdout + r.stderr
    session_id = json.loads(r.stdout)["session_id"]
    gw.stop()
    recs = [x for x in store_records(str(store)) if x["request"].get("path", "").startswith("/v1/messages")]
    assert len(recs) >= 2
    assert {x["session"]["id"] for x in recs} == {session_id}
    st = open_store(str(store))
    last = expand_request_body(recs[-1], st)
    assert "recorded-run" in json.dumps(last["messages"][-1])
    assert verify(str(store)).returncode == 0


def test_s3_store_down_during_traffic_loses_nothing(gateway_factory, upstream, s3):
    bucket = f"rec-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket, object_lock=True)
    gw = gateway_factory(s3_policy(s3, bucket), env=dict(CREDENTIALS))
    client = sdk_client(gw)
    for i in range(3):
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": f"before {i}"}])
    s3.stop()
    for i in range(4):  # the gateway keeps serving while the store is down
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": f"during {i}"}])
    time.sleep(1)
    s3.restart()
    for i in range(2):
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": f"after {i}"}])
    url = f"s3://{bucket}/gatehouse"
    recs = wait_records(url, 9, timeout=60, endpoint_url=s3.endpoint_url)
    assert len(recs) == 9
    gw.stop()
    r = verify(url, "--s3-endpoint-url", s3.endpoint_url, env=dict(os.environ, **s3_env(s3)))
    assert r.returncode == 0, r.stdout + r.stderr
    # The report reads the S3 store the same way.
    out = gw.workdir / "report"
    r = subprocess.run(
        [GATEHOUSE, "report", url, "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, **s3_env(s3)),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    index = (out / "index.html").read_text()
    assert "verified" in index.lower()
    pages = list((out / "sessions").glob("*.html"))
    assert pages and "during 3" in "".join(p.read_text() for p in pages)
    # Every object is locked.
    s3c = s3.client()
    key = next(k for k in (o["Key"] for o in s3c.list_objects_v2(Bucket=bucket)["Contents"]) if "/records/" in k)
    assert s3c.head_object(Bucket=bucket, Key=key)["ObjectLockMode"] == "COMPLIANCE"


def test_s3_bucket_without_object_lock_fails_startup(gateway_factory, s3):
    bucket = f"nolock-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket, object_lock=False)
    gw = gateway_factory(s3_policy(s3, bucket), env=dict(CREDENTIALS), start=False)
    code, out = gw.run_to_exit()
    assert code != 0
    assert "Object Lock" in out


def test_sigkill_mid_traffic_keeps_completed_exchanges(gateway_factory, upstream, tmp_path):
    store = tmp_path / "store"
    gw = gateway_factory(local_policy(store))
    client = sdk_client(gw)
    done_ids = []
    for i in range(3):
        raw = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": f"q{i}"}]
        )
        done_ids.append(raw.headers["x-gatehouse-exchange-id"])
    # A streamed exchange cut by the kill: the upstream pauses mid-stream.
    reply = Reply.text("this answer will be cut off by the kill", chunk_chars=4, pause_before_event=4)
    upstream.enqueue(reply)
    stream = client.messages.create(
        model=MODEL, max_tokens=50, stream=True, messages=[{"role": "user", "content": "cut"}]
    )
    cut_id = stream.response.headers["x-gatehouse-exchange-id"]
    next(iter(stream))
    assert reply.gate.wait_reached(10)
    gw.stop(signal.SIGKILL)
    reply.gate.release()
    # Restart on the same state dir: the spool is resumed and uploaded.
    gw.start()
    recs = wait_records(str(store), 3, kinds=("exchange", "refusal", "request"))
    gw.stop()
    recs = list(iter_records(open_store(str(store))))
    exchanges = {r["exchange_id"] for r in recs if r["kind"] == "exchange"}
    assert set(done_ids) <= exchanges
    # The cut exchange is there as its request record, without a finished exchange.
    assert any(r.get("exchange_id") == cut_id and r["kind"] == "request" for r in recs)
    assert cut_id not in exchanges
    r = verify(str(store))
    assert r.returncode == 0, r.stdout + r.stderr


def test_unwritable_spool_refuses_requests(gateway_factory, upstream, tmp_path):
    store = tmp_path / "store"
    spool = tmp_path / "spool"
    gw = gateway_factory(local_policy(store, f'spool_dir = "{spool}"\non_record_failure = "refuse"\n'))
    client = sdk_client(gw)
    client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "ok"}])
    # Root ignores permissions, so make the spool unusable by replacing it with a file.
    import shutil

    shutil.rmtree(spool)
    spool.write_text("not a directory")
    time.sleep(1.2)  # the spool is probed at most once a second
    with pytest.raises(anthropic.InternalServerError) as e:
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "refused"}])
    assert e.value.response.json()["error"]["type"] == "api_error"
    assert "record" in e.value.response.json()["error"]["message"]
    assert [r.json()["messages"][0]["content"] for r in upstream.requests.messages()] == ["ok"]


def test_refused_connect_and_secrets_in_headers_are_recorded_safely(gateway_factory, upstream, tmp_path):
    import socket

    from support.harness import read_response

    store = tmp_path / "store"
    gw = gateway_factory(local_policy(store))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
        assert read_response(s).startswith(b"HTTP/1.1 403")
    # A secret pasted into the headers the recorder keeps as session and client.
    sdk_client(
        gw, default_headers={"x-claude-code-session-id": GITHUB_PAT, "user-agent": f"agent {GITHUB_PAT}"}
    ).messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    gw.stop()
    recs = store_records(str(store))
    [connect] = [r for r in recs if r["kind"] == "refusal"]
    assert connect["request"]["method"] == "CONNECT" and connect["request"]["host"] == "example.org"
    assert "not an allowed host" in connect["decisions"][-1]["reason"]
    [ex] = [r for r in recs if r["kind"] == "exchange"]
    assert ex["session"]["id"].startswith("[MASKED:github-pat:")
    assert "[MASKED:github-pat:" in ex["client"]["user_agent"]
    for path in store.rglob("*"):
        if path.is_file():
            assert GITHUB_PAT.encode() not in path.read_bytes(), path
    out = tmp_path / "report"
    r = subprocess.run(
        [GATEHOUSE, "report", str(store), "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    for path in out.rglob("*"):
        assert GITHUB_PAT not in path.name
        if path.is_file():
            assert GITHUB_PAT.encode() not in path.read_bytes(), path


def test_second_gateway_on_the_same_state_dir_refuses_to_start(gateway_factory, upstream, tmp_path):
    state = tmp_path / "shared-state"
    policy = f'[gateway]\nstate_dir = "{state}"\n' + local_policy(tmp_path / "store")
    first = gateway_factory(policy)
    second = gateway_factory(policy, start=False)
    code, out = second.run_to_exit()
    assert code != 0
    assert f"recording spool {state / 'spool'} is in use by another gateway process" in out, out
    # The first one goes on recording, alone on its chain.
    sdk_client(first).messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "still here"}])
    first.stop()
    assert len(store_records(str(tmp_path / "store"))) == 1
    r = verify(str(tmp_path / "store"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_moving_to_another_store_with_the_same_state_dir_verifies_both(gateway_factory, upstream, tmp_path):
    state = tmp_path / "shared-state"
    a, b = tmp_path / "store-a", tmp_path / "store-b"
    for store in (a, b):
        gw = gateway_factory(f'[gateway]\nstate_dir = "{state}"\n' + local_policy(store))
        sdk_client(gw).messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": str(store)}])
        gw.stop()
    r = verify(str(b))
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(a) in r.stdout + r.stderr  # the note: where the previous run lives
    r = verify(str(a))
    assert r.returncode == 0, r.stdout + r.stderr
