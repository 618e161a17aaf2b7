"""The JSON transcript of a session: valid against its schema, each message once, the gateway's annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gatehouse
from gatehouse.report.links import session_slug
from support.report_fixtures import Scenario, page_of, transcript_of

SCHEMA = Path(gatehouse.__file__).resolve().parent / "schemas" / "transcript.schema.json"


def test_transcript_is_valid_json_matching_its_schema(scenario: Scenario, rendered: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for name in ("alice", "bob", "injection"):
        doc = transcript_of(rendered, scenario.sessions[name])
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
        page = page_of(rendered, scenario.sessions[name])
        assert f'href="{session_slug(scenario.sessions[name])}.json" download=' in page
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
    assert doc["session"]["counts"] == {
        "exchanges": 6,
        "masked_spans": 1,
        "distinct_secrets": 1,
        "blocked": 2,
        "approved": 1,
        "held": 0,
        "refused": 1,
    }
    assert doc["integrity"]["status"] == "verified"
    first = doc["exchanges"][0]
    assert first["request_id"] == scenario.request_ids["alice-1"]
    assert first["identity"]["email"] == "alice@example.com" and first["timing"]["duration_ms"] == 4000.0
    assert first["messages"] == {"conversation": 0, "from": 0, "to": 1, "response": 1}
