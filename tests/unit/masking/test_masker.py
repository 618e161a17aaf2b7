"""The Masker: replacements, the Messages API walkers and the generic walk (deny by default),
adjacent texts joined, and the recorder's copy."""

from __future__ import annotations

import base64
import copy
import json
import random
import re

import pytest

from gatehouse.masking.masker import Masker, format_where
from support.scanning import CountingScanner
from support.secrets import (
    FINGERPRINT_KEY,
    fake_pem,
    fake_secret,
    rules_only,
    secret_in_context,
    survives,
)

TOKEN = re.compile(r"\[MASKED:([a-z0-9._-]+):([0-9a-f]{6})\]")


def aws(rng: random.Random | None = None) -> str:
    return fake_secret("aws-access-key-id", rng or random.Random(1))


# --------------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------------


def test_replacement_names_rule_and_is_deterministic(masker):
    secret = aws()
    out, found = masker.mask_text(f"id={secret} and again {secret}", "system")
    m = TOKEN.findall(out)
    assert m == [("aws-access-key-id", m[0][1])] * 2
    assert secret not in out
    assert [f.rule for f in found] == ["aws-access-key-id"] * 2
    assert {f.where for f in found} == {"system"}
    assert masker.mask_text(f"id={secret} and again {secret}", "system")[0] == out
    assert found[0].fingerprint == masker.fingerprint(secret) and len(found[0].fingerprint) == 6


def test_whole_secret_replaced_prefix_included(masker):
    rng = random.Random(3)
    for _ in range(200):
        text, secret, kind = secret_in_context(rng)
        out, found = masker.mask_text(text)
        assert not survives(secret, out), (kind, text, out)
        assert any(f.rule == kind for f in found)


def test_masking_is_idempotent(masker):
    rng = random.Random(4)
    for _ in range(200):
        text = " ".join(secret_in_context(rng)[0] for _ in range(3))
        once, _ = masker.mask_text(text)
        twice, found = masker.mask_text(once)
        assert twice == once and found == []


def test_mask_spans_gives_input_offsets(masker):
    secret = aws()
    text = f"é {secret} x"
    out, spans = masker.mask_spans(text)
    assert [(s.rule, text[s.start : s.end]) for s in spans] == [("aws-access-key-id", secret)]


def test_format_where():
    assert format_where(("messages", 3, "content", 1, "content")) == "messages[3].content[1].content"
    assert format_where(("system",)) == "system"
    assert format_where(("content", 0, "input", "cmd", 2)) == "content[0].input.cmd[2]"


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def request_body(s: str) -> dict:
    """A request with a secret `s` in every kind of field, and in fields that must not change."""
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "metadata": {"user_id": "u"},
        "system": [{"type": "text", "text": f"deploy key {s}", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": f"my key is {s}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": f"the user pasted {s}", "signature": "c2ln/" + s},
                    {"type": "redacted_thinking", "data": "ZGF0/" + s},
                    {"type": "text", "text": f"I will use {s}"},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "Bash",
                        "input": {"command": f"export KEY={s}", "env": [{"v": s}], "n": 3},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"echo {s}"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "is_error": False,
                        "content": [
                            {"type": "text", "text": f"out: {s}"},
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": "iVBO/" + s},
                            },
                        ],
                    },
                    {
                        "type": "document",
                        "title": f"notes {s}",
                        "context": f"ctx {s}",
                        "source": {"type": "text", "media_type": "text/plain", "data": f"doc {s}"},
                    },
                    {
                        "type": "document",
                        "source": {"type": "content", "content": [{"type": "text", "text": f"c {s}"}]},
                    },
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE/" + s},
                    },
                    {
                        "type": "search_result",
                        "source": "https://x",
                        "title": "t",
                        "content": [{"type": "text", "text": f"r {s}"}],
                    },
                    {"type": "text", "text": f"thanks {s}"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": s}},
                ],
            },
        ],
    }


def test_request_masks_every_text_field_and_nothing_signed(masker):
    s = aws()
    body = request_body(s)
    original = copy.deepcopy(body)
    found = masker.mask_request(body)
    wheres = sorted(f.where for f in found)
    assert wheres == sorted(
        [
            "system[0].text",
            "messages[0].content",
            "messages[1].content[2].text",
            "messages[1].content[3].input.command",
            "messages[1].content[3].input.env[0].v",
            "messages[2].content[0].content",
            "messages[2].content[1].content[0].text",
            "messages[2].content[2].title",
            "messages[2].content[2].context",
            "messages[2].content[2].source.data",
            "messages[2].content[3].source.content[0].text",
            "messages[2].content[5].content[0].text",
            "messages[2].content[6].text",
        ]
    )
    # Signed and binary content is byte-for-byte unchanged (each holds the secret, maskable
    # if it were text: mask_for_record does mask it).
    assert masker.mask_for_record(original["messages"][1]["content"][0])[1]
    assert body["messages"][1]["content"][0] == original["messages"][1]["content"][0]
    assert body["messages"][1]["content"][1] == original["messages"][1]["content"][1]
    assert body["messages"][2]["content"][1]["content"][1] == original["messages"][2]["content"][1]["content"][1]
    assert body["messages"][2]["content"][4] == original["messages"][2]["content"][4]
    assert body["messages"][2]["content"][7] == original["messages"][2]["content"][7]
    # Structure and non-text fields are unchanged: the body is still a valid request.
    assert body["tools"] == original["tools"] and body["metadata"] == original["metadata"]
    assert body["messages"][1]["content"][3]["input"]["n"] == 3
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert json.loads(json.dumps(body)) == body
    # Masking the masked body again changes nothing (prompt caching).
    again = copy.deepcopy(body)
    assert masker.mask_request(again) == [] and again == body


def test_request_with_system_string_and_count_tokens_shape(masker):
    s = fake_secret("github-pat", random.Random(2))
    body = {"model": "m", "system": f"token {s}", "messages": [{"role": "user", "content": "hi"}]}
    found = masker.mask_request(body)
    assert [f.where for f in found] == ["system"] and s not in body["system"]


def test_request_tolerates_odd_shapes(masker):
    for body in [
        {},
        {"messages": None},
        {"messages": ["x", 1, None, {"content": 5}]},
        {"system": 3},
        {"messages": [{"role": "user", "content": [None, 1, "x", {"type": "text"}, {"type": "tool_use"}]}]},
    ]:
        assert masker.mask_request(body) == []


def test_deeply_nested_tool_input_is_walked_without_recursion(masker):
    s = aws()
    inner: dict = {"v": s}
    for _ in range(5000):
        inner = {"a": [inner]}
    body = {
        "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "X", "input": inner}]}]
    }
    found = masker.mask_request(body)
    assert len(found) == 1 and found[0].where.endswith(".v")


def test_disabled_policy_changes_nothing():
    m = Masker(rules_only(), FINGERPRINT_KEY)
    body = request_body(aws())
    before = copy.deepcopy(body)
    assert m.mask_request(body) == [] and body == before
    assert m.mask_text("x " + aws())[1] == []


# --------------------------------------------------------------------------------------------
# Texts found clean before
# --------------------------------------------------------------------------------------------


def counting(masker: Masker) -> tuple[Masker, CountingScanner]:
    m = Masker(masker.policy, FINGERPRINT_KEY)
    m.scanner = counter = CountingScanner(m.scanner)
    return m, counter


def tool_result(text: str) -> dict:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": text}]}


def test_a_long_clean_text_is_scanned_once_for_the_wire_and_the_record(masker):
    m, counter = counting(masker)
    output = "line of build output\n" * 400  # a tool's output: long, nothing secret in it
    m.mask_request({"messages": [tool_result(output)]})
    m.mask_for_record({"body": {"messages": [tool_result(output)]}})
    assert counter.scanned.count(len(output)) == 1


def test_a_text_like_a_clean_one_but_for_a_secret_is_masked(masker):
    """Remembered by the whole text: one of the same length and beginning, with a secret at its
    end, is scanned and masked."""
    m, _ = counting(masker)
    secret = "line of build output\n" * 400 + f"K={aws()}"
    clean = "line of build output\n" * 400 + "x" * (len(secret) - 8400)
    assert len(clean) == len(secret)
    assert m.mask_request({"messages": [tool_result(clean)]}) == []
    assert m.mask_text(clean) == (clean, [])
    body = {"messages": [tool_result(secret)]}
    assert [f.rule for f in m.mask_request(body)] == ["aws-access-key-id"]
    assert aws() not in json.dumps(body)
    masked, found = m.mask_text(secret)
    assert aws() not in masked and [f.rule for f in found] == ["aws-access-key-id"]


def test_a_text_too_big_to_remember_is_scanned_every_time(masker, monkeypatch):
    import gatehouse.masking.masker as masker_module

    monkeypatch.setattr(masker_module, "CLEAN_TEXT_BYTES", 64 * 1024)  # a text over 4 KB is not kept
    m, counter = counting(masker)
    output = "x" * 8000
    for _ in range(2):
        m.mask_text(output)
    assert counter.scanned.count(len(output)) == 2


def test_a_long_text_with_a_secret_is_masked_every_time(masker):
    m, counter = counting(masker)
    output = "line of build output\n" * 400 + f"AWS_ACCESS_KEY_ID={aws()}\n"
    for _ in range(2):
        body = {"messages": [tool_result(output)]}
        found = m.mask_request(body)
        assert [f.rule for f in found] == ["aws-access-key-id"]
        assert aws() not in json.dumps(body)
    assert counter.scanned.count(len(output)) == 2


def test_mask_text_scans_a_repeated_clean_text_once_and_a_secret_every_time(masker):
    m, counter = counting(masker)
    agent = "claude-cli/2.0.14 (external, cli)"  # a header value every request repeats
    secret = f"token {aws()}"
    for _ in range(3):
        assert m.mask_text(agent) == (agent, [])
        masked, found = m.mask_text(secret, "request.headers.x-note")
        assert aws() not in masked and [f.rule for f in found] == ["aws-access-key-id"]
    assert counter.scanned.count(len(agent)) == 1
    assert counter.scanned.count(len(secret)) == 3


def test_texts_found_clean_are_kept_within_their_bound(masker, monkeypatch):
    import gatehouse.masking.masker as masker_module

    monkeypatch.setattr(masker_module, "CLEAN_TEXT_BYTES", 256 * 1024)
    m, counter = counting(masker)
    texts = [f"output {i:02d}: " + "x" * 8000 for i in range(40)]  # ~320 KB in all, one length
    for t in texts:
        m.mask_request({"messages": [tool_result(t)]})
    scans = len(counter.scanned)
    m.mask_request({"messages": [tool_result(texts[-1])]})  # the newest is still known
    assert len(counter.scanned) == scans
    m.mask_request({"messages": [tool_result(texts[0])]})  # the oldest was let go: scanned again
    assert counter.scanned[scans:].count(len(texts[0])) == 1


# --------------------------------------------------------------------------------------------
# Responses and the recorder's copy
# --------------------------------------------------------------------------------------------


def response_message(s: str) -> dict:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "thinking", "thinking": f"found {s}", "signature": "sig/" + s},
            {"type": "text", "text": f"Your key {s} is exposed", "citations": None},
            {"type": "tool_use", "id": "toolu_9", "name": "Write", "input": {"file_path": "/x", "content": f"K={s}\n"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }


def test_response_message_masks_text_and_tool_input_not_thinking(masker):
    s = aws()
    msg = response_message(s)
    found = masker.mask_response_message(msg)
    assert sorted(f.where for f in found) == ["content[1].text", "content[2].input.content"]
    assert msg["content"][0] == {"type": "thinking", "thinking": f"found {s}", "signature": "sig/" + s}
    assert s not in json.dumps(msg["content"][1:])


def test_mask_for_record_masks_everything_on_a_copy(masker):
    s = aws()
    original = {"request": request_body(s), "response": response_message(s), s: "key as a dict key"}
    snapshot = copy.deepcopy(original)
    rec, found = masker.mask_for_record(original)
    assert original == snapshot  # the input is untouched
    assert s not in json.dumps(rec)
    assert len(found) >= 20
    assert any(f.where == "response.content[0].thinking" for f in found)
    assert any(f.where == "response.content[0].signature" for f in found)
    assert masker.mask_for_record("plain " + s)[0] == masker.mask_text("plain " + s)[0]
    assert masker.mask_for_record(7) == (7, [])


# --------------------------------------------------------------------------------------------
# Deny by default: the generic walk
# --------------------------------------------------------------------------------------------


def ghp(seed: int = 1) -> str:
    return fake_secret("github-pat", random.Random(seed))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def leaky_request(s: str) -> dict:
    """The fields an attacker test got through the old (allow-list) walker, each with `s`."""
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "metadata": {"user_id": json.dumps({"device_id": s, "session_id": "x"})},
        "stop_sequences": ["END", f"stop {s}"],
        "tools": [
            {
                "name": "Deploy",
                "description": f"uses {s}",
                "input_schema": {"type": "object", "properties": {"t": {"type": "string", "default": s}}},
            },
            {"type": "web_search_20250305", "name": "web_search", "allowed_domains": [f"{s}.example"]},
        ],
        "mcp_servers": [
            {"type": "url", "url": f"https://mcp.example/sse?key={s}", "name": "m", "authorization_token": s}
        ],
        "future_top_level_field": {"nested": [f"x {s}"]},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "url", "url": f"https://files.example/{s}.pdf"}},
                    {"type": "image", "source": {"type": "url", "url": f"https://img.example/?sig={s}"}},
                    {"type": "future_block", "payload": {"deep": [{"deeper": s}]}, "note": s},
                    {
                        "type": "text",
                        "text": "see",
                        "extra_field": s,
                        "citations": [{"type": "char_location", "cited_text": f"cite {s}", "document_title": s}],
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": s}},
                    {
                        "type": "web_search_tool_result",
                        "tool_use_id": "srvtoolu_1",
                        "content": [
                            {
                                "type": "web_search_result",
                                "url": f"https://r.example/{s}",
                                "title": f"t {s}",
                                "encrypted_content": "RU5D/" + s,
                                "page_age": None,
                            }
                        ],
                    },
                    {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "q", "server_name": "m", "input": {"q": s}},
                    {"type": "mcp_tool_result", "tool_use_id": "mcptoolu_1", "content": [{"type": "text", "text": s}]},
                    {
                        "type": "text",
                        "text": "ok",
                        "citations": [
                            {
                                "type": "web_search_result_location",
                                "url": "https://r.example",
                                "title": s,
                                "cited_text": f"c {s}",
                                "encrypted_index": "RW5j/" + s,
                            }
                        ],
                    },
                ],
            },
        ],
        s: "a secret as a key",
    }


def _strings_outside(value, exempt_pairs):
    """Every string (values and keys) of `value` except values at (type, field) in `exempt_pairs`."""
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            t = v.get("type")
            for k, x in v.items():
                out.append(k)
                if isinstance(x, str):
                    if (t, k) not in exempt_pairs:
                        out.append(x)
                else:
                    stack.append(x)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            out.append(v)
    return out


def test_request_generic_walk_masks_every_field(masker):
    s = ghp()
    body = leaky_request(s)
    found = masker.mask_request(body)
    exempt = {("web_search_result", "encrypted_content"), ("web_search_result_location", "encrypted_index")}
    assert not any(s in x for x in _strings_outside(body, exempt))
    # the encrypted fields are the only survivors, byte-identical
    result = body["messages"][1]["content"][1]["content"][0]
    assert result["encrypted_content"] == "RU5D/" + s
    assert body["messages"][1]["content"][4]["citations"][0]["encrypted_index"] == "RW5j/" + s
    wheres = {f.where for f in found}
    for w in [
        "metadata.user_id",
        "stop_sequences[1]",
        "tools[0].description",
        "tools[0].input_schema.properties.t.default",
        "tools[1].allowed_domains[0]",
        "mcp_servers[0].url",
        "mcp_servers[0].authorization_token",
        "future_top_level_field.nested[0]",
        "messages[0].content[0].source.url",
        "messages[0].content[1].source.url",
        "messages[0].content[2].payload.deep[0].deeper",
        "messages[0].content[2].note",
        "messages[0].content[3].extra_field",
        "messages[0].content[3].citations[0].cited_text",
        "messages[1].content[0].input.query",
        "messages[1].content[1].content[0].url",
        "messages[1].content[1].content[0].title",
        "messages[1].content[2].input.q",
        "messages[1].content[3].content[0].text",
        "messages[1].content[4].citations[0].title",
    ]:
        assert w in wheres, w
    # structure unchanged: same keys (but the secret one), same non-string values
    assert body["max_tokens"] == 10 and body["tools"][0]["input_schema"]["type"] == "object"
    assert list(body)[-1] == masker.replacement("github-pat", s)


def test_request_exempt_fields_stay_byte_identical(masker):
    s = ghp(2)
    blocks = [
        {"type": "thinking", "thinking": f"I saw {s}", "signature": "EqQBCkgIARABGAIiQL/" + s},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy/" + s},
        {"type": "compaction", "content": None, "encrypted_content": "Q09N/" + s, "signature": "c2ln/" + s},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo/" + s}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x/" + s}},
        {
            "type": "encrypted_code_execution_result",
            "encrypted_stdout": "ZW5j/" + s,
            "stderr": "",
            "return_code": 0,
            "content": [],
        },
    ]
    body = {"messages": [{"role": "assistant", "content": copy.deepcopy(blocks)}]}
    assert masker.mask_request(body) == []
    assert body["messages"][0]["content"] == blocks
    # ...and also in a response
    msg = {"type": "message", "content": copy.deepcopy(blocks)}
    assert masker.mask_response_message(msg) == [] and msg["content"] == blocks
    # ...but the recorder's copy masks them all
    rec, found = masker.mask_for_record(blocks)
    assert s not in json.dumps(rec) and len(found) >= 7


def test_exemptions_do_not_apply_inside_tool_inputs(masker):
    s = ghp(3)
    inp = {
        "type": "thinking",
        "thinking": s,
        "signature": s,
        "source": {"type": "base64", "media_type": "image/png", "data": s},
    }
    body = {
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "X", "input": copy.deepcopy(inp)}],
            }
        ]
    }
    found = masker.mask_request(body)
    assert s not in json.dumps(body) and len(found) == 3
    value, found = masker.mask_value(copy.deepcopy(inp), "input")
    assert s not in json.dumps(value) and len(found) == 3


def test_text_base64_document_is_decoded_scanned_and_reencoded(masker):
    s = ghp(4)
    text = f"config:\nGITHUB_TOKEN={s}\nend é\n"
    doc = {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": b64(text)}}
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    doc,
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "text/csv", "data": b64("a,b\n1," + s)},
                    },
                ],
            }
        ]
    }
    found = masker.mask_request(body)
    assert [f.where for f in found] == ["messages[0].content[0].source.data", "messages[0].content[1].source.data"]
    decoded = base64.b64decode(body["messages"][0]["content"][0]["source"]["data"]).decode()
    assert decoded == masker.mask_text(text)[0] and s not in decoded
    assert s not in base64.b64decode(body["messages"][0]["content"][1]["source"]["data"]).decode()
    # without a secret: byte-identical (not re-encoded); invalid base64 is scanned as text
    clean = {"type": "base64", "media_type": "text/plain", "data": b64("nothing here")}
    odd = {"type": "base64", "media_type": "text/plain", "data": f"not base64 {s}"}
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "document", "source": clean}, {"type": "document", "source": odd}]}
        ]
    }
    masker.mask_request(body)
    assert clean["data"] == b64("nothing here") and s not in odd["data"]
    # a secret that is valid base64 itself (found by the property test) is masked as it stands
    key = "AKIAJTGEV49GW1UN9427"
    base64.b64decode(key, validate=True)
    bare = {"type": "base64", "media_type": "text/plain", "data": key}
    found = masker.mask_request({"messages": [{"role": "user", "content": [{"type": "document", "source": bare}]}]})
    assert key not in bare["data"] and [f.rule for f in found] == ["aws-access-key-id"]
    # binary media types are not decoded even when the bytes hold a secret
    img = {"type": "base64", "media_type": "image/png", "data": b64(s)}
    masker.mask_request({"messages": [{"role": "user", "content": [{"type": "image", "source": img}]}]})
    assert img["data"] == b64(s)


def test_keys_are_masked_in_order_and_collisions_stay_distinct(masker):
    s, s2 = ghp(5), aws()
    tok = masker.replacement("github-pat", s)
    obj = {"a": 1, s: 2, "b": 3, tok: 4, f"x {s2}": 5}
    body = {"metadata": obj}
    found = masker.mask_request(body)
    keys = list(body["metadata"])
    assert keys == ["a", tok + "#2", "b", tok, f"x {masker.replacement('aws-access-key-id', s2)}"]
    assert list(body["metadata"].values()) == [1, 2, 3, 4, 5]
    assert sorted(f.rule for f in found) == ["aws-access-key-id", "github-pat"]
    assert all(s not in f.where and s2 not in f.where for f in found)  # a where never shows a secret
    again = copy.deepcopy(body)
    assert masker.mask_request(again) == [] and again == body


def test_secret_in_a_key_path_is_masked_in_nested_findings(masker):
    s, s2 = ghp(6), aws()
    body = {"tools": [{"input_schema": {s: {"default": s2}}}]}
    found = masker.mask_request(body)
    assert len(found) == 2 and all(s not in f.where for f in found)


def test_mask_document_takes_any_body(masker):
    s = ghp(7)
    err = {"type": "error", "error": {"type": "invalid_request_error", "message": f"bad key {s}"}, "request_id": "r"}
    assert [f.where for f in masker.mask_document(err)] == ["error.message"] and s not in json.dumps(err)
    listing = [{"id": "x", "note": s}, [s], "plain " + s, 3, None]
    assert len(masker.mask_document(listing)) == 3 and s not in json.dumps(listing)
    assert masker.mask_json_value(f"k {s}")[0] == masker.mask_text(f"k {s}")[0]
    with pytest.raises(TypeError):
        masker.mask_document("a string cannot be masked in place")
    assert masker.mask_document(5) == []


def test_deep_bodies_are_walked_without_recursion(masker):
    s = aws()
    inner: dict = {"v": s, s: 1}
    for _ in range(100_000):
        inner = {"a": [inner]}
    body = {"metadata": inner}
    found = masker.mask_request(body)
    assert len(found) == 2
    rec, found = masker.mask_for_record(body)
    assert found == []


def test_mask_json_text_catches_escaped_secrets(masker):
    s = ghp(8)
    escaped = "\\u0067" + s[1:]  # "g" as \u0067
    for raw in [
        f'{{"command": "echo {escaped} > f", "descr',
        f'{{"u": "https:\\/\\/x\\/{s}',
        f'{{"k": "{s[:3]}\\u005f{s[4:]}"}}',
        f'{{"a": "\\"{s}\\"", "b": tru',
    ]:
        out, found = masker.mask_json_text(raw, "w")
        assert found and s not in out and s[4:] not in out, raw
    assert masker.mask_json_text('{"plain": "text \\u00e9', "w") == ('{"plain": "text \\u00e9', [])


# --------------------------------------------------------------------------------------------
# Adjacent texts joined
# --------------------------------------------------------------------------------------------


def split_cases(s: str):
    h = len(s) // 2
    yield (
        "text+text",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"my token is {s[:h]}"},
                        {"type": "text", "text": f"{s[h:]} thanks"},
                    ],
                }
            ]
        },
    )
    yield (
        "text+tool_result",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"token {s[:h]}"},
                        {"type": "tool_result", "tool_use_id": "t", "content": f"{s[h:]}\nexit 0"},
                    ],
                }
            ]
        },
    )
    yield (
        "tool_result blocks",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [
                                {"type": "text", "text": s[:h]},
                                {"type": "image", "source": {"type": "url", "url": "https://i"}},
                                {"type": "text", "text": s[h:]},
                            ],
                        }
                    ],
                }
            ]
        },
    )
    yield "system", {"system": [{"type": "text", "text": f"key={s[:5]}"}, {"type": "text", "text": s[5:]}]}
    yield (
        "three pieces",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": s[:3]},
                        {"type": "text", "text": s[3:9]},
                        {"type": "text", "text": s[9:] + "."},
                    ],
                }
            ]
        },
    )


@pytest.mark.parametrize("kind", ["github-pat", "aws-access-key-id", "anthropic-api-key", "slack-bot-token"])
def test_secret_split_across_adjacent_texts_is_masked(masker, kind):
    s = fake_secret(kind, random.Random(9))
    for name, body in split_cases(s):
        original = copy.deepcopy(body)
        found = masker.mask_request(body)
        out = json.dumps(body)
        assert not survives(s, out), (name, out)
        assert any(f.rule == kind for f in found), name
        # deterministic, and stable when masked again (prompt caching)
        again = copy.deepcopy(original)
        masker.mask_request(again)
        assert again == body, name
        twice = copy.deepcopy(body)
        assert masker.mask_request(twice) == [] and twice == body, name


def test_split_secret_token_goes_to_the_first_text(masker):
    s = ghp(10)
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a " + s[:20]}, {"type": "text", "text": s[20:] + " b"}],
            }
        ]
    }
    found = masker.mask_request(body)
    texts = [b["text"] for b in body["messages"][0]["content"]]
    assert texts == ["a " + masker.replacement("github-pat", s), " b"]
    assert [(f.rule, f.where) for f in found] == [("github-pat", "messages[0].content[0].text")]


def test_split_context_and_value_are_joined(masker):
    pw = "Zq8vLk2mWx9"
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "DB_PASSWORD="}, {"type": "text", "text": pw + "\nnext"}],
            }
        ]
    }
    masker.mask_request(body)
    assert pw not in json.dumps(body)
    assert body["messages"][0]["content"][0]["text"] == "DB_PASSWORD="


def test_long_private_key_split_across_blocks(masker):
    pem = fake_pem(random.Random(11), "RSA ", lines=60)
    cut = len(pem) - 300
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "key:\n" + pem[:cut]},
                    {"type": "text", "text": pem[cut:] + "\nthanks"},
                ],
            }
        ]
    }
    masker.mask_request(body)
    texts = [b["text"] for b in body["messages"][0]["content"]]
    assert texts[1] == "\nthanks" and texts[0].startswith("key:\n[MASKED:private-key:")
    for line in pem.split("\n")[1:-1]:
        assert line not in json.dumps(body)


def test_joining_stays_within_one_message_and_leaves_clean_texts_alone(masker):
    s = ghp(12)
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": s[:20]}]},
            {"role": "user", "content": [{"type": "text", "text": s[20:]}]},
        ]
    }
    before = copy.deepcopy(body)
    assert masker.mask_request(body) == [] and body == before
    clean = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "x" * 1000}, {"type": "text", "text": "ghp_ alone"}]}
        ]
    }
    before = copy.deepcopy(clean)
    assert masker.mask_request(clean) == [] and clean == before


def test_response_content_is_joined_too(masker):
    s = ghp(13)
    msg = {
        "type": "message",
        "content": [{"type": "text", "text": "here: " + s[:15]}, {"type": "text", "text": s[15:]}],
    }
    found = masker.mask_response_message(msg)
    assert found and s[15:] not in json.dumps(msg)
    msg2 = {
        "type": "message",
        "content": [{"type": "text", "text": "here: " + s[:15]}, {"type": "text", "text": s[15:]}],
    }
    assert masker.mask_response_message(msg2, join_adjacent=False) == []


# --------------------------------------------------------------------------------------------
# The hold limit: masked, then swallowed
# --------------------------------------------------------------------------------------------


# -- exemptions apply only where the API puts such objects (review findings) ------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: base64.encodebytes(b).decode(),  # wrapped at 76 characters
        lambda b: base64.b64encode(b).decode().rstrip("="),  # unpadded
        lambda b: " ".join(base64.b64encode(b).decode()[i : i + 8] for i in range(0, len(base64.b64encode(b)), 8)),
    ],
)
def test_text_documents_in_lenient_base64_are_decoded(masker, encode):
    pat = fake_secret("github-pat", random.Random(79))
    raw = (f"header line that is long enough to wrap the base64 output {pat}\n" * 3).encode()
    body = {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": encode(raw)}}
    found = masker.mask_document(body, block=True)
    assert found and pat not in base64.b64decode(body["source"]["data"]).decode()
