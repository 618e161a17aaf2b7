"""Approvals through real mitmdump processes: who may decide, bound to the exact call, quorum,
replicas sharing one store (local and S3 on the moto server), racing approvers, just-in-time
access and server-side tools."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import anthropic
import pytest

from support.approvers import approvals_cli, internal_request, recorded_decisions, wait_for_pending
from support.fake_upstream import Reply
from support.harness import sdk_client
from support.rawwire import DEV_POLICY, gatehouse_token

pytestmark = pytest.mark.e2e
MODEL = "claude-sonnet-4-6"

RULES = """
[approvals]
approvers = ["security"]
timeout_seconds = 60
on_timeout = "deny"
approvals_required = {quorum}

[commands]

[[commands.rules]]
id = "hold-deploy"
tool = "Bash"
field = "command"
pattern = '^deploy '
action = "approve"
message = "Deploys need an approver."
"""


def policy_text(state: Path, *, jwks_state: Path | None = None, recording: str = "", extra: str = "") -> str:
    text = DEV_POLICY.format(state=state)
    if jwks_state is not None:  # a replica trusts the same issuer as the first gateway
        text = text.replace(f"{state}/dev-issuer.jwks.json", f"{jwks_state}/dev-issuer.jwks.json")
    if recording:
        text += f"\n[recording]\n{recording}\n"
    return text + extra


class People:
    def __init__(self, policy: Path) -> None:
        def token(sub: str, groups: str) -> str:
            return gatehouse_token(policy, "--sub", sub, "--email", f"{sub}@example.com", "--groups", groups)

        self.alice = token("alice", "developers")  # asks
        self.bob = token("bob", "security")  # approves
        self.carol = token("carol", "security")  # approves too
        self.mallory = token("mallory", "developers")  # not an approver
        self.alice_approver = token("alice", "developers,security")  # alice, also an approver


def gateways(gateway_factory, n: int = 1, *, quorum: int = 1, recording: str = "", extra: str = ""):
    gws = [gateway_factory("", start=False) for _ in range(n)]
    first_state = gws[0].policy_path.parent / "state"
    for i, gw in enumerate(gws):
        state = gw.policy_path.parent / "state"
        gw.policy_path.write_text(
            policy_text(
                state,
                jwks_state=first_state if i else None,
                recording=recording,
                extra=RULES.format(quorum=quorum) + extra,
            )
        )
    people = People(gws[0].policy_path)  # creates the dev issuer's key and JWKS
    return [gw.start() for gw in gws], people


def ask_in_background(gw, token: str, command: str = "deploy web") -> concurrent.futures.Future:
    """Alice's SDK call whose response proposes `command`: held until decided."""
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def call():
        return sdk_client(gw, token, timeout=120).messages.create(
            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "ship it"}]
        )

    return pool.submit(call)


def enqueue_call(upstream, command: str = "deploy web") -> None:
    upstream.enqueue(Reply.tool_use("Bash", {"command": command}))


def test_only_other_people_in_the_approver_groups_decide(gateway_factory, upstream):
    [gw], p = gateways(gateway_factory)
    enqueue_call(upstream)
    held = ask_in_background(gw, p.alice)
    [item] = wait_for_pending(gw, p.bob)
    assert set(item) >= {"id", "requester", "tool", "input", "rule", "created", "expires"}

    outsider = approvals_cli(gw, p.mallory, "approve", item["id"])
    assert outsider.returncode == 1 and "security" in outsider.stdout + outsider.stderr
    own = approvals_cli(gw, p.alice_approver, "approve", item["id"])
    assert own.returncode == 1 and "cannot be decided by its requester" in own.stdout + own.stderr
    status, body = internal_request(
        gw, p.bob, "POST", f"/v1/approvals/{item['id']}/approve", {"input_sha256": "0" * 64, "reason": "x"}
    )
    assert status >= 400 and body["type"] == "error"
    status, body = internal_request(
        gw, p.bob, "POST", "/v1/approvals/ga_doesnotexist/approve", {"input_sha256": item["input_sha256"]}
    )
    assert status == 404
    stale = approvals_cli(gw, p.bob, "approve", item["id"], "--sha", "deadbeef")
    assert stale.returncode == 1 and "not the call you read" in stale.stderr
    # Another real request, approved, releases its own flow only.
    enqueue_call(upstream, "deploy api")
    other = ask_in_background(gw, p.alice, "deploy api")
    [second] = [i for i in wait_for_pending(gw, p.bob, 2) if i["id"] != item["id"]]
    assert approvals_cli(gw, p.bob, "approve", second["id"]).returncode == 0
    assert other.result(timeout=30).content[-1].input == {"command": "deploy api"}
    time.sleep(1.5)
    assert not held.done()  # none of these released it

    ok = approvals_cli(gw, p.bob, "approve", item["id"], "--reason", "change ticket 42")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    msg = held.result(timeout=30)
    assert msg.content[-1].type == "tool_use" and msg.content[-1].input == {"command": "deploy web"}
    again = approvals_cli(gw, p.carol, "deny", item["id"])
    assert again.returncode == 1 and "already" in (again.stdout + again.stderr).lower()


def test_quorum_of_two(gateway_factory, upstream):
    [gw], p = gateways(gateway_factory, quorum=2)
    enqueue_call(upstream)
    held = ask_in_background(gw, p.alice)
    [item] = wait_for_pending(gw, p.bob)
    assert approvals_cli(gw, p.bob, "approve", item["id"]).returncode == 0
    twice = approvals_cli(gw, p.bob, "approve", item["id"])
    assert twice.returncode == 1
    time.sleep(1.5)
    assert not held.done()
    assert approvals_cli(gw, p.carol, "approve", item["id"]).returncode == 0
    msg = held.result(timeout=30)
    assert msg.content[-1].type == "tool_use"


def test_deny_names_who_and_why(gateway_factory, upstream):
    [gw], p = gateways(gateway_factory)
    enqueue_call(upstream)
    held = ask_in_background(gw, p.alice)
    [item] = wait_for_pending(gw, p.bob)
    assert approvals_cli(gw, p.bob, "deny", item["id"], "--reason", "freeze week").returncode == 0
    msg = held.result(timeout=30)
    assert [b.type for b in msg.content] == ["text"]
    assert "bob@example.com" in msg.content[0].text and "freeze week" in msg.content[0].text
    assert msg.stop_reason == "end_turn"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_replicas_share_approvals(gateway_factory, upstream, tmp_path, where, request):
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        bucket = f"approvals-{int(time.time() * 1000)}"
        s3.create_bucket(bucket, object_lock=False)
        recording = f'store = "s3://{bucket}/gw"\ns3_endpoint_url = "{s3.endpoint_url}"'
    else:
        recording = f'store = "{tmp_path / "shared-store"}"'
    (one, two), p = gateways(gateway_factory, 2, recording=recording)
    enqueue_call(upstream)
    held = ask_in_background(one, p.alice)
    [item] = wait_for_pending(two, p.bob)  # seen through the other replica
    assert approvals_cli(two, p.bob, "approve", item["id"]).returncode == 0
    msg = held.result(timeout=30)  # released on the first one within its poll interval
    assert msg.content[-1].type == "tool_use"


def test_racing_approvers_one_decision_wins(gateway_factory, upstream):
    [gw], p = gateways(gateway_factory)
    enqueue_call(upstream)
    held = ask_in_background(gw, p.alice)
    [item] = wait_for_pending(gw, p.bob)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a = pool.submit(approvals_cli, gw, p.bob, "approve", item["id"])
        d = pool.submit(approvals_cli, gw, p.carol, "deny", item["id"])
        results = [a.result(), d.result()]
    assert sorted(r.returncode for r in results) == [0, 1], [r.stdout + r.stderr for r in results]
    msg = held.result(timeout=30)
    approved = results[0].returncode == 0
    assert (msg.content[-1].type == "tool_use") is approved


JIT = """
[[access.rules]]
id = "opus-on-request"
models = ["claude-opus-*"]
groups = ["developers"]
action = "approve"
approvers = ["security"]
grant_seconds = {grant}
"""


def test_just_in_time_access(gateway_factory, upstream):
    [gw], p = gateways(gateway_factory, extra=JIT.format(grant=4))
    gw.stop()
    gw.policy_path.write_text(
        gw.policy_path.read_text().replace('models = ["claude-*"]', 'models = ["claude-sonnet-*"]')
    )
    gw.start()
    client = sdk_client(gw, p.alice)

    def ask():
        return client.messages.create(
            model="claude-opus-4-1", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )

    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        ask()
    [item] = wait_for_pending(gw, p.bob)
    assert item["id"] in str(refused.value) and "security" in str(refused.value)
    assert item["kind"] == "access"
    assert approvals_cli(gw, p.bob, "approve", item["id"]).returncode == 0
    assert ask().content[0].type == "text"  # granted
    assert ask().content[0].type == "text"  # still, until the grant expires
    time.sleep(4.5)
    with pytest.raises(anthropic.PermissionDeniedError):
        ask()
    found = recorded_decisions(gw.workdir / "recordings", "approvals", until=lambda ds: len(ds) >= 2)
    assert any(d["detail"].get("grant") == "access" for d in found)


SERVER_TOOLS = """
[groups.contractors]
models = ["claude-*"]
server_tools = []
mcp_servers = false
"""


def test_server_side_tools_refused_per_group(gateway_factory, upstream):
    [gw], p = gateways(gateway_factory, extra=SERVER_TOOLS)
    contractor = gatehouse_token(gw.policy_path, "--sub", "dave", "--groups", "contractors")
    search = [{"type": "web_search_20250305", "name": "web_search"}]
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        sdk_client(gw, contractor).messages.create(
            model=MODEL, max_tokens=5, tools=search, messages=[{"role": "user", "content": "news?"}]
        )
    assert "web_search" in str(refused.value)
    msg = sdk_client(gw, p.alice).messages.create(
        model=MODEL, max_tokens=5, tools=search, messages=[{"role": "user", "content": "news?"}]
    )
    assert msg.content  # developers may
    assert len(upstream.requests.messages()) == 1
