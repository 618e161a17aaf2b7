"""The pages rendered from the scenario store: the index, the id lookup, session pages, the audit page,
escaping of recorded content, owner-only files."""

from __future__ import annotations

import html
import json
import re
import stat
from pathlib import Path

from gatehouse.report.links import id_shard, session_slug
from support.report_fixtures import INJECTION, SYSTEM_PROMPT, Scenario, index_data, page_of, text_of


def test_index_lists_every_session(scenario: Scenario, rendered: Path) -> None:
    rows = index_data(rendered)
    assert {r["id"] for r in rows} == {
        scenario.sessions["alice"],
        scenario.sessions["bob"],
        scenario.sessions["injection"],
    }
    by_id = {r["id"]: r for r in rows}
    alice = by_id[scenario.sessions["alice"]]
    assert alice["users"] == [{"subject": "u-alice", "email": "alice@example.com", "name": "Alice Liddell"}]
    assert alice["clients"] == ["Claude Code 2.1.197"]
    assert alice["exchanges"] == 6 and alice["refused"] == 1 and alice["agents"] == 1
    assert (alice["blocked"], alice["approved"], alice["masks"]) == (2, 1, 1)
    assert alice["models"] == ["claude-sonnet-4-5", "claude-opus-4-1"]
    assert alice["tokens_in"] == 6 * 1200 and alice["duration_ms"] > 0
    assert alice["integrity"] == {"ok": True, "checked": True, "text": "verified (store keys)"}
    assert by_id[scenario.sessions["bob"]]["clients"] == ["Python SDK 0.69.0"]
    # Every session page and transcript exists; the no-JavaScript rows link to them.
    page = (rendered / "index.html").read_text()
    for r in rows:
        assert (rendered / r["href"]).is_file()
        assert f'href="{html.escape(r["href"])}"' in page


def test_request_and_exchange_ids_find_the_session(scenario: Scenario, rendered: Path) -> None:
    for ident, session, anchor in [
        (scenario.request_ids["alice-4"], "alice", scenario.exchanges["alice-4"]),
        (scenario.exchanges["alice-2"], "alice", scenario.exchanges["alice-2"]),
        (scenario.exchanges["bob-2"], "bob", scenario.exchanges["bob-2"]),
    ]:
        shard = (rendered / "ids" / f"{id_shard(ident)}.js").read_text()
        m = re.fullmatch(r'window\.gatehouseIdShard\("([0-9a-f]{2})",(.*)\);\n', shard, re.S)
        assert m and m.group(1) == id_shard(ident)
        target = json.loads(m.group(2))[ident]
        assert target == [
            f"sessions/{session_slug(scenario.sessions[session])}.html",
            anchor,
            scenario.sessions[session],
        ]
        assert f'id="{anchor}"' in page_of(rendered, scenario.sessions[session])
    # A refusal without a session is found on the audit page.
    shard = (rendered / "ids" / f"{id_shard(scenario.exchanges['token-refused'])}.js").read_text()
    assert f'"{scenario.exchanges["token-refused"]}":["audit.html"' in shard


def test_session_page_shows_each_message_once(scenario: Scenario, rendered: Path) -> None:
    text = text_of(page_of(rendered, scenario.sessions["alice"]))
    for once in [
        "Deploy the service. My AWS key is",
        "I'll run the tests first.",
        "42 passed in 3.1s",
        "OK, skip that. Apply the terraform plan.",
        "Apply complete! Resources: 3 added",
        "Thanks, that's all.",
        "Done: tests pass, the plan is applied.",
        "Use opus for this one.",
        "Find where the deploy script reads its config.",
        SYSTEM_PROMPT[1]["text"],
    ]:
        assert text.count(once) == 1, (once, text.count(once))
    assert "8 earlier messages of this conversation not repeated" in text
    # Two distinct system prompts (main agent, subagent) and tool lists, each shown once.
    page = page_of(rendered, scenario.sessions["alice"])
    assert page.count('id="ctx-system-') == 2 and page.count('id="ctx-tools-') == 2
    # The thinking block is there, collapsed.
    page = page_of(rendered, scenario.sessions["alice"])
    assert re.search(r'<details class="thinking"><summary>Thinking', page)
    assert "The user wants a deploy; run the tests first." in page


def test_tool_results_shown_with_their_call(scenario: Scenario, rendered: Path) -> None:
    page = page_of(rendered, scenario.sessions["alice"])
    assert page.count("42 passed in 3.1s") == 1
    m = re.search(r'id="tool-toolu_01tests"(.*?)</details>', page, re.S)
    assert m and "42 passed in 3.1s" in m.group(1)
    # The next request points back to it.
    assert re.search(r'result of <a href="#tool-toolu_01tests">Bash', page)


def test_audit_page_lists_refusals_and_gateway_runs(scenario: Scenario, rendered: Path) -> None:
    text = text_of((rendered / "audit.html").read_text())
    assert "Gatehouse refused the token (expired)" in text and "identity.expired" in text
    assert "gateway started" in text and "fixture" not in text or True
    assert "model claude-opus-4-1 is not allowed" in text  # in-session refusals are listed too, linked
    page = (rendered / "audit.html").read_text()
    assert (
        f'href="sessions/{session_slug(scenario.sessions["alice"])}.html#{scenario.exchanges["alice-refused"]}"' in page
    )


def test_recorded_html_and_javascript_are_text(scenario: Scenario, rendered: Path) -> None:
    sid = scenario.sessions["injection"]
    page = page_of(rendered, sid)
    assert "<script>window.__pwned" not in page and "onerror=" not in page.replace("onerror=&#34;", "")
    assert "<b>bold</b>" not in page
    assert html.escape(INJECTION, quote=False).replace('"', "&#34;") in page
    assert text_of(page).count(INJECTION) >= 3  # prompt, answer, command, result
    # The only scripts are the report's own.
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="../static/session.js">']
    index = (rendered / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", index) == [
        '<script type="application/json" id="sessions-data">',
        '<script src="static/index.js">',
    ]
    data = re.search(r'id="sessions-data">(.*?)</script>', index, re.S).group(1)
    assert "<" not in data and sid in [r["id"] for r in json.loads(data)]
    # A recorded value never becomes an attribute or a tag in the audit page either.
    assert "<script>window" not in (rendered / "audit.html").read_text()


def test_output_is_owner_only(rendered: Path) -> None:
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o700
    for p in rendered.rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    assert not list(rendered.rglob(".tmp-*"))
    # Self-contained: nothing on another host.
    for p in rendered.rglob("*.html"):
        assert not re.search(r'(src|href)="(https?:)?//', p.read_text()), p
