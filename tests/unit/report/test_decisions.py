"""Gateway decisions as the report shows them: tool calls allowed, blocked, held and approved or
denied (commands and approvals stages), exchange-level decisions, refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gatehouse.recording.stores import LocalStore
from gatehouse.report.build import ReportOptions, build_report
from gatehouse.report.decisions import decision_outcome
from support.report_fixtures import (
    ALICE,
    AWS_KEY,
    Conversation,
    Scenario,
    Writer,
    claude_code_headers,
    decision,
    index_data,
    message,
    page_of,
    text_of,
    tool_use,
    transcript_of,
    user_text,
)


@pytest.mark.parametrize(
    ("stage", "action", "outcome"),
    [
        ("commands", "allow", "allowed"),
        ("commands", "block", "blocked"),
        ("commands", "approve", "held"),  # the rule's verdict: a human must answer
        ("approvals", "hold", "held"),
        ("approvals", "approve", "approved"),  # the human's answer
        ("approvals", "approved", "approved"),
        ("approvals", "allow", "approved"),
        ("approvals", "denied", "denied"),
        ("approvals", "timeout", "denied"),
        ("credentials", "inject", "info"),
    ],
)
def test_decision_outcome_depends_on_the_stage(stage: str, action: str, outcome: str) -> None:
    assert decision_outcome({"stage": stage, "action": action}) == outcome


def test_decisions_approvals_and_masks_appear(scenario: Scenario, rendered: Path) -> None:
    page = page_of(rendered, scenario.sessions["alice"])
    text = text_of(page)
    # Allowed, with the command as code.
    assert re.search(r'id="tool-toolu_01tests".*?<pre class="code cmd"><code>pytest -q tests/</code>', page, re.S)
    # Blocked by a rule: the call the gateway removed is shown from the decision.
    assert re.search(
        r'id="tool-toolu_02rm".*?removed from the response by the gateway.*?rm -rf /var/lib/app/cache'
        r".*?commands.no-rm-rf",
        page,
        re.S,
    )
    # Held, then approved by Bob, with when and why; its result came back in the next request.
    m = re.search(r'id="tool-toolu_03tf"(.*?)</details>\s*</div>', page, re.S)
    assert m
    call = text_of(m.group(1))
    assert "held for approval" in call and "by bob@example.com" in call and "change ticket CHG-1234" in call
    assert re.search(r"by bob@example.com · 2026-01-01 \d\d:\d\d:\d\d", call) and "Apply complete!" in call
    # Denied by Carol.
    m = re.search(r'id="tool-toolu_04kube"(.*?)</ol>', page, re.S)
    assert m and "by carol@example.com" in text_of(m.group(1)) and "not during the freeze" in text_of(m.group(1))
    # The refused model request, with the rule.
    assert "Refused by the gateway" in text and "model claude-opus-4-1 is not allowed" in text
    # The secret is masked, visibly, with its rule; the store and the report never hold it.
    assert re.search(
        r'<mark class="mask" data-rule="aws-access-key-id"[^>]*>.*?\[MASKED:aws-access-key-id:[0-9a-f]{6}\]', page
    )
    for path in list(scenario.store_dir.rglob("*")) + list(rendered.rglob("*")):
        if path.is_file():
            assert AWS_KEY.encode() not in path.read_bytes(), path
    # Exchange-level decisions and per-exchange facts.
    assert "identity allow" in text and "credentials inject" in text
    assert scenario.request_ids["alice-1"] in text and "claude-sonnet-4-5" in text and "1,200 in / 80 out" in text
    # The request id is an anchor (permalink) on its exchange.
    assert f'id="{scenario.request_ids["alice-1"]}"' in page
    assert f'href="#{scenario.request_ids["alice-1"]}"' in page


def test_held_blocked_and_approved_calls(tmp_path: Path) -> None:
    """A call still waiting for its approver stays held; a blocked call and one approved by a human
    are shown with their decisions, counted on the session and in the index."""
    w = Writer(tmp_path / "store")
    sid = "approvals-pending"
    c = Conversation(w, sid, ALICE, lambda: claude_code_headers(sid))
    c.turn(
        [user_text("Restart the api in prod.")],
        message(
            [
                {"type": "text", "text": "Restarting it."},
                tool_use("toolu_h1", "Bash", {"command": "systemctl restart api"}),
            ]
        ),
        decisions=[
            decision(
                "commands",
                "approve",
                "prod restarts need an approver",
                "commands.restart",
                at=c.t,
                tool_use_id="toolu_h1",
                tool="Bash",
            ),
            decision(
                "approvals",
                "hold",
                "waiting for an approver",
                "commands.restart",
                at=c.t + 1,
                tool_use_id="toolu_h1",
                approval_id="apr_h1",
                expires_at=c.t + 600,
            ),
        ],
    )
    c.turn(
        [user_text("And the database, then deploy.")],
        message([{"type": "text", "text": "Deploying."}, tool_use("toolu_h3", "Bash", {"command": "make deploy"})]),
        decisions=[
            decision(
                "commands",
                "block",
                "no database restarts",
                "commands.no-db",
                at=c.t,
                tool_use_id="toolu_h2",
                tool_name="Bash",
                input={"command": "systemctl restart postgres"},
            ),
            decision(
                "commands",
                "approve",
                "deploys need an approver",
                "commands.deploy",
                at=c.t,
                tool_use_id="toolu_h3",
                tool="Bash",
            ),
            decision(
                "approvals",
                "allow",
                "release window",
                "commands.deploy",
                at=c.t + 5,
                tool_use_id="toolu_h3",
                by="bob@example.com",
            ),
        ],
    )
    w.close()
    out = tmp_path / "out"
    build_report(LocalStore(tmp_path / "store"), ReportOptions(out=out))
    page = page_of(out, sid)

    m = re.search(r'id="tool-toolu_h1"(.*?)</ol>', page, re.S)
    assert m
    held = text_of(m.group(1))
    assert "held for approval" in held and "commands.restart" in held and "waiting for an approver" in held
    assert "approval_idapr_h1" in held and re.search(r"expires_at2026-01-01T\d\d:\d\d:\d\d", held)
    assert re.search(
        r'id="tool-toolu_h2".*?removed from the response by the gateway.*?systemctl restart postgres'
        r".*?commands.no-db",
        page,
        re.S,
    )
    m = re.search(r'id="tool-toolu_h3"(.*?)</ol>', page, re.S)
    assert m and "approved" in text_of(m.group(1)) and "by bob@example.com" in text_of(m.group(1))
    assert "1 blocked · 1 approved · 1 held" in text_of(page)

    [row] = index_data(out)
    assert (row["blocked"], row["approved"], row["held"]) == (1, 1, 1)
    doc = transcript_of(out, sid)
    calls = {c["id"]: c for x in doc["exchanges"] for c in x["tool_calls"]}
    assert calls["toolu_h1"]["outcome"] == "held"
    assert [d["outcome"] for d in calls["toolu_h1"]["decisions"]] == ["held", "held"]
    assert calls["toolu_h2"]["removed_by_gateway"] and calls["toolu_h2"]["outcome"] == "blocked"
    assert calls["toolu_h2"]["name"] == "Bash"
    assert calls["toolu_h3"]["outcome"] == "approved" and calls["toolu_h3"]["decisions"][-1]["by"] == "bob@example.com"
    assert doc["session"]["counts"]["held"] == 1
