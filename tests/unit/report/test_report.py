"""The replay report, rendered from stores the recorder's own code wrote (tests/support/report_fixtures.py)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from gatehouse.recording import records
from gatehouse.report import report
from gatehouse.recording.records import canonical_json, parse_json
from gatehouse.recording.stores import LocalStore
from support.report_fixtures import AWS_KEY, INJECTION, SYSTEM_PROMPT, Conversation, Scenario, Writer, claude_code_headers, message, \
    scenario_store, user_text, ALICE
from gatehouse.cli.main import main as cli

SCHEMA = Path(report.__file__).resolve().parents[1] / "schemas" / "transcript.schema.json"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return scenario_store(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def rendered(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "report"
    result = report.build_report(LocalStore(scenario.store_dir), report.ReportOptions(out=out))
    assert result.ok, result.integrity
    return out


def index_data(out: Path) -> list[dict]:
    page = (out / "index.html").read_text()
    m = re.search(r'<script type="application/json" id="sessions-data">(.*?)</script>', page, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


def page_of(out: Path, session_id: str) -> str:
    return (out / "sessions" / f"{report.session_slug(session_id)}.html").read_text()


def transcript_of(out: Path, session_id: str) -> dict:
    return json.loads((out / "sessions" / f"{report.session_slug(session_id)}.json").read_text())


def text_of(page: str) -> str:
    """The visible text of a page, roughly: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


# -- the index ------------------------------------------------------------------------------------

def test_index_lists_every_session(scenario: Scenario, rendered: Path) -> None:
    rows = index_data(rendered)
    assert {r["id"] for r in rows} == {scenario.sessions["alice"], scenario.sessions["bob"],
                                      scenario.sessions["injection"]}
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
        shard = (rendered / "ids" / f"{report.id_shard(ident)}.js").read_text()
        m = re.fullmatch(r'window\.gatehouseIdShard\("([0-9a-f]{2})",(.*)\);\n', shard, re.S)
        assert m and m.group(1) == report.id_shard(ident)
        target = json.loads(m.group(2))[ident]
        assert target == [f"sessions/{report.session_slug(scenario.sessions[session])}.html", anchor,
                          scenario.sessions[session]]
        assert f'id="{anchor}"' in page_of(rendered, scenario.sessions[session])
    # A refusal without a session is found on the audit page.
    shard = (rendered / "ids" / f"{report.id_shard(scenario.exchanges['token-refused'])}.js").read_text()
    assert f'"{scenario.exchanges["token-refused"]}":["audit.html"' in shard


# -- a session page -------------------------------------------------------------------------------

def test_session_page_shows_each_message_once(scenario: Scenario, rendered: Path) -> None:
    text = text_of(page_of(rendered, scenario.sessions["alice"]))
    for once in ["Deploy the service. My AWS key is", "I'll run the tests first.", "42 passed in 3.1s",
                 "OK, skip that. Apply the terraform plan.", "Apply complete! Resources: 3 added",
                 "Thanks, that's all.", "Done: tests pass, the plan is applied.",
                 "Use opus for this one.", "Find where the deploy script reads its config.",
                 SYSTEM_PROMPT[1]["text"]]:
        assert text.count(once) == 1, (once, text.count(once))
    assert "8 earlier messages of this conversation not repeated" in text
    # Two distinct system prompts (main agent, subagent) and tool lists, each shown once.
    page = page_of(rendered, scenario.sessions["alice"])
    assert page.count('id="ctx-system-') == 2 and page.count('id="ctx-tools-') == 2
    # The thinking block is there, collapsed.
    page = page_of(rendered, scenario.sessions["alice"])
    assert re.search(r'<details class="thinking"><summary>Thinking', page)
    assert "The user wants a deploy; run the tests first." in page


def test_decisions_approvals_and_masks_appear(scenario: Scenario, rendered: Path) -> None:
    page = page_of(rendered, scenario.sessions["alice"])
    text = text_of(page)
    # Allowed, with the command as code.
    assert re.search(r'id="tool-toolu_01tests".*?<pre class="code cmd"><code>pytest -q tests/</code>', page, re.S)
    # Blocked by a rule: the call the gateway removed is shown from the decision.
    assert re.search(r'id="tool-toolu_02rm".*?removed from the response by the gateway.*?rm -rf /var/lib/app/cache'
                     r'.*?commands.no-rm-rf', page, re.S)
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
    assert re.search(r'<mark class="mask" data-rule="aws-access-key-id"[^>]*>.*?\[MASKED:aws-access-key-id:[0-9a-f]{6}\]',
                     page)
    for path in list(scenario.store_dir.rglob("*")) + list(rendered.rglob("*")):
        if path.is_file():
            assert AWS_KEY.encode() not in path.read_bytes(), path
    # Exchange-level decisions and per-exchange facts.
    assert "identity allow" in text and "credentials inject" in text
    assert scenario.request_ids["alice-1"] in text and "claude-sonnet-4-5" in text and "1,200 in / 80 out" in text
    # The request id is an anchor (permalink) on its exchange.
    assert f'id="{scenario.request_ids["alice-1"]}"' in page
    assert f'href="#{scenario.request_ids["alice-1"]}"' in page


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
    assert f'href="sessions/{report.session_slug(scenario.sessions["alice"])}.html#{scenario.exchanges["alice-refused"]}"' in page


# -- the transcript -------------------------------------------------------------------------------

def test_transcript_is_valid_json_matching_its_schema(scenario: Scenario, rendered: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for name in ("alice", "bob", "injection"):
        doc = transcript_of(rendered, scenario.sessions[name])
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
        page = page_of(rendered, scenario.sessions[name])
        assert f'href="{report.session_slug(scenario.sessions[name])}.json" download=' in page
    doc = transcript_of(rendered, scenario.sessions["alice"])
    main = doc["conversations"][0]
    # The main conversation in Messages API shape: alternating roles, each message once.
    assert [m["role"] for m in main["messages"]] == ["user", "assistant"] * 5
    assert main["messages"][0]["content"][0]["text"].startswith("Deploy the service. My AWS key is [MASKED:")
    assert main["system"][0]["text"].startswith("You are Claude Code")
    assert [t["name"] for t in main["tools"]] == ["Bash", "Read", "Edit", "Write", "WebFetch"]
    agents = [c for c in doc["conversations"] if c["agent_id"]]
    assert [c["agent_id"] for c in agents] == ["agent-explore-1"]
    calls = {c["id"]: c for x in doc["exchanges"] for c in x["tool_calls"]}
    assert calls["toolu_03tf"]["outcome"] == "approved"
    assert [d["by"] for d in calls["toolu_03tf"]["decisions"]] == [None, None, "bob@example.com"]
    assert calls["toolu_02rm"]["removed_by_gateway"] and calls["toolu_02rm"]["outcome"] == "blocked"
    assert calls["toolu_01tests"]["result"]["text"] == "42 passed in 3.1s"
    assert doc["session"]["counts"] == {"exchanges": 6, "masked_spans": 1, "distinct_secrets": 1, "blocked": 2,
                                        "approved": 1, "held": 0, "refused": 1}
    assert doc["integrity"]["status"] == "verified"
    first = doc["exchanges"][0]
    assert first["request_id"] == scenario.request_ids["alice-1"]
    assert first["identity"]["email"] == "alice@example.com" and first["timing"]["duration_ms"] == 4000.0
    assert first["messages"] == {"conversation": 0, "from": 0, "to": 1, "response": 1}


# -- integrity ----------------------------------------------------------------------------------

def _copy_store(scenario: Scenario, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(scenario.store_dir, dst)
    for p in dst.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)
    return dst


def _rewrite(path: Path, change) -> None:
    doc = parse_json(path.read_bytes())
    change(doc)
    path.write_bytes(canonical_json(doc))


def test_tampered_record_shows_on_its_session(scenario: Scenario, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    store = _copy_store(scenario, tmp_path)
    key = scenario.keys[scenario.exchanges["alice-3"]]
    _rewrite(store / key, lambda d: d["decisions"][-1]["detail"].update(approver={"subject": "u-mallory",
                                                                                  "email": "mallory@example.com"}))
    out = tmp_path / "out"
    rc = cli(["report", str(store), "--out", str(out), "--quiet"])
    assert rc == 1
    assert "INTEGRITY FAILURE" in capsys.readouterr().err
    rows = {r["id"]: r for r in index_data(out)}
    alice = rows[scenario.sessions["alice"]]
    assert not alice["integrity"]["ok"] and "signature" in alice["integrity"]["text"]
    assert rows[scenario.sessions["bob"]]["integrity"]["ok"]
    assert rows[scenario.sessions["injection"]]["integrity"]["ok"]
    page = page_of(out, scenario.sessions["alice"])
    # The failure is shown on the exchange whose record was changed.
    m = re.search(rf'<article class="exchange kind-exchange has-problems" id="{scenario.exchanges["alice-3"]}">(.*?)</article>',
                  page, re.S)
    assert m and "signature does not verify" in m.group(1)
    # ...and on the next record of the chain, which names the changed record's old hash.
    m = re.search(rf'<article class="exchange kind-exchange has-problems" id="{scenario.exchanges["alice-4"]}">(.*?)</article>',
                  page, re.S)
    assert m and "link" in m.group(1)
    assert page.count("has-problems") == 2
    assert "Integrity: 2 problems" in text_of(page)
    assert transcript_of(out, scenario.sessions["alice"])["integrity"]["status"] == "failed"
    assert "Integrity: 2 problems" in text_of((out / "index.html").read_text())


def test_deleted_record_shows_on_the_neighbouring_sessions(scenario: Scenario, tmp_path: Path) -> None:
    store = _copy_store(scenario, tmp_path)
    (store / scenario.keys[scenario.exchanges["bob-1"]]).unlink()
    out = tmp_path / "out"
    result = report.build_report(LocalStore(store), report.ReportOptions(out=out))
    assert not result.ok
    rows = {r["id"]: r for r in index_data(out)}
    # Bob's first exchange is gone; the sessions around the gap say a record is missing.
    assert "missing" in rows[scenario.sessions["bob"]]["integrity"]["text"]
    assert "missing" in rows[scenario.sessions["alice"]]["integrity"]["text"]
    assert rows[scenario.sessions["injection"]]["integrity"]["ok"]
    assert "is missing from chain" in text_of(page_of(out, scenario.sessions["bob"]))


def test_trusted_key_from_the_command_line(scenario: Scenario, tmp_path: Path) -> None:
    pub = tmp_path / "rec.pub"
    pub.write_bytes(scenario.key.public_pem())
    out = tmp_path / "out"
    assert cli(["report", str(scenario.store_dir), "--out", str(out), "--public-key", str(pub), "--quiet"]) == 0
    assert all(r["integrity"]["text"] == "verified" for r in index_data(out))
    other = tmp_path / "other.pub"
    other.write_bytes(records.SigningKey.generate().public_pem())
    assert cli(["report", str(scenario.store_dir), "--out", str(out), "--public-key", str(other), "--quiet"]) == 1
    assert not any(r["integrity"]["ok"] for r in index_data(out))


# -- escaping ----------------------------------------------------------------------------------------

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
    assert re.findall(r"<script\b[^>]*>", index) == ['<script type="application/json" id="sessions-data">',
                                                     '<script src="static/index.js">']
    data = re.search(r'id="sessions-data">(.*?)</script>', index, re.S).group(1)
    assert "<" not in data and sid in [r["id"] for r in json.loads(data)]
    # A recorded value never becomes an attribute or a tag in the audit page either.
    assert "<script>window" not in (rendered / "audit.html").read_text()


def test_masked_text_escapes_then_marks() -> None:
    out = str(report.masked_text('<i>x</i> [MASKED:github-pat:0a1b2c] & [MASKED:<b>:zz]'))
    assert out.startswith("&lt;i&gt;x&lt;/i&gt; <mark class=\"mask\" data-rule=\"github-pat\"")
    assert "&amp; [MASKED:&lt;b&gt;:zz]" in out
    assert report.count_masks("a [MASKED:r-1:abcdef] b [MASKED:r-1:abcdef]") == 2


def test_json_for_script_cannot_close_the_script() -> None:
    s = str(report.json_for_script({"a": "</script><!-- & >"}))
    assert "<" not in s and ">" not in s and "&" not in s
    assert json.loads(s) == {"a": "</script><!-- & >"}


# -- files, filters, re-runs ------------------------------------------------------------------------

def test_output_is_owner_only(rendered: Path) -> None:
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o700
    for p in rendered.rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    assert not list(rendered.rglob(".tmp-*"))
    # Self-contained: nothing on another host.
    for p in rendered.rglob("*.html"):
        assert not re.search(r'(src|href)="(https?:)?//', p.read_text()), p


def test_filters(scenario: Scenario, tmp_path: Path) -> None:
    store = LocalStore(scenario.store_dir)
    out = tmp_path / "out"
    report.build_report(store, report.ReportOptions(out=out, user="BOB@example.com"))
    assert [r["id"] for r in index_data(out)] == [scenario.sessions["bob"]]
    report.build_report(store, report.ReportOptions(out=out, user="u-carol"))
    assert [r["id"] for r in index_data(out)] == [scenario.sessions["injection"]]
    # Pages of sessions no longer in the report are removed.
    assert len(list((out / "sessions").glob("*.html"))) == 1
    report.build_report(store, report.ReportOptions(out=out, session=scenario.sessions["alice"]))
    assert [r["id"] for r in index_data(out)] == [scenario.sessions["alice"]]
    t = records.parse_iso_time
    report.build_report(store, report.ReportOptions(out=out, since=t("2026-01-01T10:30:00.000000Z"),
                                                    until=t("2026-01-01T11:30:00.000000Z")))
    assert [r["id"] for r in index_data(out)] == [scenario.sessions["bob"]]
    assert cli(["report", str(scenario.store_dir), "--out", str(out), "--since", "2026-01-01T12:00:00Z", "-q"]) == 0
    assert {r["id"] for r in index_data(out)} == {scenario.sessions["injection"]}
    assert cli(["report", str(scenario.store_dir), "--out", str(out), "--since", "yesterday", "-q"]) == 2


def test_rerun_renders_only_new_or_changed_sessions(scenario: Scenario, tmp_path: Path) -> None:
    store_dir = _copy_store(scenario, tmp_path)
    out = tmp_path / "out"
    first = report.build_report(LocalStore(store_dir), report.ReportOptions(out=out))
    assert (first.rendered, first.reused) == (3, 0)
    alice_page = out / "sessions" / f"{report.session_slug(scenario.sessions['alice'])}.html"
    before = alice_page.stat().st_mtime_ns
    again = report.build_report(LocalStore(store_dir), report.ReportOptions(out=out))
    assert (again.rendered, again.reused) == (0, 3)
    assert alice_page.stat().st_mtime_ns == before
    # The store grows: a new gateway run records a new session and one more turn of Bob's.
    w = Writer(store_dir, key=scenario.key, spool_dir=tmp_path / "spool2")
    c = Conversation(w, "new-session-after-rerun", ALICE, lambda: claude_code_headers("new-session-after-rerun"),
                     t=records.parse_iso_time("2026-01-02T09:00:00.000000Z"))
    c.turn([user_text("A new day.")], message([{"type": "text", "text": "Good morning."}]))
    w.close()
    grown = report.build_report(LocalStore(store_dir), report.ReportOptions(out=out))
    assert (grown.rendered, grown.reused) == (1, 3), grown
    assert "new-session-after-rerun" in {r["id"] for r in index_data(out)}
    # A tampered record changes its session and the session of the next record in its chain
    # (whose link no longer matches): only those two are rendered again.
    _rewrite(store_dir / scenario.keys[scenario.exchanges["bob-2"]], lambda d: d["timing"].update(ttfb_ms=1.0))
    tampered = report.build_report(LocalStore(store_dir), report.ReportOptions(out=out))
    assert (tampered.rendered, tampered.reused) == (2, 2)
    rows = {r["id"]: r for r in index_data(out)}
    assert "signature" in rows[scenario.sessions["bob"]]["integrity"]["text"]
    assert "link" in rows[scenario.sessions["injection"]]["integrity"]["text"]


def test_streamed_exchange_with_two_records_is_one_exchange(scenario: Scenario, rendered: Path) -> None:
    doc = transcript_of(rendered, scenario.sessions["alice"])
    second = next(x for x in doc["exchanges"] if x["exchange_id"] == scenario.exchanges["alice-2"])
    assert len(second["records"]) == 2 and second["streamed"]
    assert sum(1 for x in doc["exchanges"] if x["exchange_id"] == scenario.exchanges["alice-2"]) == 1


def test_moving_cache_control_does_not_repeat_history(tmp_path: Path) -> None:
    """Claude Code moves its cache_control marker to the newest message every turn."""
    w = Writer(tmp_path / "store")
    sid = "cache-control-moves"
    c = Conversation(w, sid, ALICE, lambda: claude_code_headers(sid))
    for i in range(3):
        for m in c.messages:
            for b in m["content"]:
                b.pop("cache_control", None)
        new = user_text(f"prompt number {i}")
        new["content"][0]["cache_control"] = {"type": "ephemeral"}
        c.turn([new], message([{"type": "text", "text": f"answer number {i}"}]))
    w.close()
    out = tmp_path / "out"
    report.build_report(LocalStore(tmp_path / "store"), report.ReportOptions(out=out))
    text = text_of(page_of(out, sid))
    for i in range(3):
        assert text.count(f"prompt number {i}") == 1 and text.count(f"answer number {i}") == 1
    doc = transcript_of(out, sid)
    assert len(doc["conversations"]) == 1 and len(doc["conversations"][0]["messages"]) == 6


def test_empty_store(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    out = tmp_path / "out"
    assert cli(["report", str(tmp_path / "store"), "--out", str(out), "-q"]) == 0
    assert index_data(out) == []
    assert cli(["report", str(tmp_path / "nope"), "--out", str(out), "-q"]) == 2


def test_client_descriptions() -> None:
    d = report.describe_client
    assert d({"user_agent": "claude-cli/2.1.197 (external, cli)", "app": "cli"})["label"] == "Claude Code 2.1.197"
    gha = d({"user_agent": "claude-cli/1.0.80 (external, claude-code-github-action)"})
    assert gha["label"] == "Claude Code 1.0.80 (GitHub Action)" and gha["ci"]
    assert d({"user_agent": "claude-cli/2.0.1 (external, sdk-ts)"})["label"] == "Claude Code 2.0.1 (TypeScript SDK)"
    assert d({"user_agent": "Anthropic/Python 0.69.0"})["label"] == "Python SDK 0.69.0"
    assert d({"user_agent": "Anthropic/JS 0.60.0"})["label"] == "TypeScript SDK 0.60.0"
    assert d({"user_agent": "curl/8.0"})["kind"] == "other"


def test_id_shard_is_stable() -> None:
    # index.js computes the same FNV-1a; the browser test checks they agree on real ids.
    assert report.id_shard("req_011CAliceFirstTurn0001") == report.id_shard("req_011CAliceFirstTurn0001")
    assert {report.id_shard(f"gx_{i}") for i in range(2000)} == {f"{i:02x}" for i in range(256)}


def test_ci_identities() -> None:
    gha = report.describe_identity({"issuer": "https://token.actions.githubusercontent.com",
                                    "subject": "repo:acme/api:ref:refs/heads/main", "groups": []})
    assert gha["ci"] and gha["label"] == "repo:acme/api:ref:refs/heads/main"
    assert report.describe_identity({"issuer": "https://idp", "subject": "svc", "groups": ["ci"]})["ci"]
    assert not report.describe_identity({"issuer": "https://idp", "subject": "alice", "groups": ["dev"]})["ci"]


def test_progress_bar_on_stderr(scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["report", str(scenario.store_dir), "--out", str(tmp_path / "out"), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "sessions   [############################] 3/3" in err
    assert "3 session(s) (3 rendered, 0 unchanged)" in err
