"""`Masker.mask_spanned`: masking a body part by part, remembering the parts seen before, gives
exactly what the whole walk gives (masked values, findings and their order), turn after turn."""

from __future__ import annotations

import base64
import copy
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.masking.masker import MAX_WHERE_DEPTH, Masker
from gatehouse.wire.jsonbody import loads, loads_spanned
from support.secrets import FINGERPRINT_KEY, fake_secret


@pytest.fixture
def masker(builtin) -> Masker:
    return Masker(builtin, FINGERPRINT_KEY)


def ghp(seed: int = 1) -> str:
    return fake_secret("github-pat", random.Random(seed))


def aws(seed: int = 1) -> str:
    return fake_secret("aws-access-key-id", random.Random(seed))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def by_request(masker: Masker, text: str) -> tuple[dict, list]:
    body = loads(text)
    return body, masker.mask_request(body)


def by_parts(masker: Masker, text: str) -> tuple[dict, list]:
    doc = loads_spanned(text)
    assert doc is not None
    result = masker.mask_spanned(doc)
    out = result.encode()
    assert json.loads(out) == result.values  # what goes upstream is what the result says
    return (json.loads(out) if result.findings else loads(text)), result.findings


def same_as_the_walk(masker: Masker, body: dict) -> list:
    """Mask `body` both ways, twice (the second time from the cache), and return the findings."""
    text = json.dumps(body)
    want_body, want = by_request(masker, text)
    for _ in range(2):
        got_body, got = by_parts(masker, text)
        assert got == want
        assert got_body == want_body
    # The recorder's copy: everything masked, under "body".
    want_rec, want_rec_findings = Masker(masker.policy, FINGERPRINT_KEY).mask_for_record({"body": loads(text)})
    for _ in range(2):
        doc = loads_spanned(text)
        assert doc is not None
        rec = masker.mask_spanned(doc, record=True, where="body")
        assert rec.findings == want_rec_findings
        assert rec.values == want_rec["body"]
    return want


def session_body(secret: str) -> dict:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": f"env {secret[:12]}"}],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": f"deploy with {secret}"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": f"the key {secret}", "signature": "c2ln"},
                    {"type": "text", "text": "Running it."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": f"export T={secret}"}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
            "a bare string item " + secret,
            ["a list item", secret],
            {
                "role": "user",
                "content": [{"type": "text", "text": "split " + secret[:10]}, {"type": "text", "text": secret[10:]}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": b64(secret)}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(secret)}},
                ],
            },
        ],
        "metadata": {"user_id": json.dumps({"session_id": "s", "device_id": secret})},
        "stop_sequences": [f"x {secret}"],
        "error": {"type": "text", "text": secret},
        "note": f"top-level {secret}",
    }


def test_a_session_body_masks_as_the_walk_does(masker):
    found = same_as_the_walk(masker, session_body(ghp()))
    wheres = [f.where for f in found]
    assert "messages[0].content[0].text" in wheres and "messages[3]" in wheres and "note" in wheres
    assert "messages[1].content[0].thinking" not in wheres  # signed: left as it is on the wire


def test_findings_of_a_remembered_message_name_where_it_is_now(masker):
    secret = ghp()
    body = session_body(secret)
    first = same_as_the_walk(masker, body)
    # The next turn: one more message in front (as after a compaction) and one at the end.
    body["messages"].insert(0, {"role": "user", "content": "earlier"})
    body["messages"].append({"role": "user", "content": [{"type": "text", "text": "and now?"}]})
    again = same_as_the_walk(masker, body)
    assert [f.where for f in again if f.where.startswith("messages[1].")] == [
        f.where.replace("messages[0].", "messages[1].") for f in first if f.where.startswith("messages[0].")
    ]
    assert {f.fingerprint for f in again} == {f.fingerprint for f in first}


def test_a_message_one_character_apart_is_masked_again(masker):
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "nothing here"}]}]}
    by_parts(masker, json.dumps(body))
    body["messages"][0]["content"][0]["text"] = f"nothing here {aws()}"
    got_body, got = by_parts(masker, json.dumps(body))
    assert [f.rule for f in got] == ["aws-access-key-id"]
    assert aws() not in json.dumps(got_body)


def test_the_same_text_in_another_place_is_not_confused(masker):
    # A thinking block is exempt in a message's content, not elsewhere: the same text under
    # "system" or as a message is masked by its own context, never from the other's entry.
    block = [{"type": "thinking", "thinking": f"k {ghp()}", "signature": "c2ln"}]
    same_as_the_walk(masker, {"messages": [{"role": "assistant", "content": block}]})
    found = same_as_the_walk(masker, {"system": block, "messages": [block]})
    assert {f.where for f in found} == {"system[0].thinking", "messages[0][0].thinking"}


def test_bodies_the_shortcut_does_not_cover_are_walked_whole(masker):
    s = ghp()
    same_as_the_walk(masker, {"type": "base64", "data": b64(s), "messages": [{"content": s}]})
    same_as_the_walk(masker, {s: "a secret as a key", "messages": [{"content": s}]})
    same_as_the_walk(masker, {"messages": []})
    same_as_the_walk(masker, {})


def test_a_finding_too_deep_to_name_in_full_is_never_taken_from_the_cache(masker):
    deep: object = f"deep {ghp()}"
    for _ in range(MAX_WHERE_DEPTH + 5):
        deep = {"a": deep}
    body = {"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": [deep]}]}
    found = same_as_the_walk(masker, body)
    assert found and found[0].where.startswith("...")
    body["messages"].insert(0, {"role": "user", "content": "y"})
    assert same_as_the_walk(masker, body) == found


def test_a_body_with_nothing_to_mask_goes_on_as_it_came(masker):
    text = '{"model" : "m",  "messages": [ {"role":"user","content":"hi"} ] }'
    doc = loads_spanned(text)
    assert doc is not None
    result = masker.mask_spanned(doc)
    assert result.findings == [] and result.encode() == text


def test_unchanged_parts_keep_their_text_and_masked_ones_are_rewritten(masker):
    s = ghp()
    text = '{"model":"m", "messages":[{"content": "caf\\u00e9"}, {"content": "' + s + '"}]}'
    doc = loads_spanned(text)
    assert doc is not None
    out = masker.mask_spanned(doc).encode()
    assert '{"content": "caf\\u00e9"}' in out and s not in out
    assert json.loads(out)["messages"][1]["content"].startswith("[MASKED:github-pat:")


def test_a_disabled_masker_changes_nothing(masker):
    from gatehouse.masking.config import parse_masking
    from gatehouse.policy.reader import Section

    off = Masker(parse_masking(Section({"packs": []}, "policy.toml", "masking")), FINGERPRINT_KEY)
    text = json.dumps(session_body(ghp()))
    doc = loads_spanned(text)
    assert doc is not None
    result = off.mask_spanned(doc)
    assert result.findings == [] and result.encode() == text


# -- property: any split of secrets over any shape of conversation ------------------------------

_texts = st.sampled_from(["", "plain words", "split ghp_", ghp(2), ghp(3)[:20], ghp(3)[20:], aws(4), "x " + aws(5)])
_blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _texts),
    st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "c2ln"}, _texts),
    st.builds(lambda t: {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": t}}, _texts),
    st.builds(lambda t: {"type": "tool_result", "tool_use_id": "t", "content": t}, _texts),
    st.builds(
        lambda t: {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": b64(t)}}, _texts
    ),
    _texts,
)
_messages = st.one_of(
    st.builds(
        lambda r, c: {"role": r, "content": c}, st.sampled_from(["user", "assistant"]), st.lists(_blocks, max_size=4)
    ),
    st.builds(lambda r, t: {"role": r, "content": t}, st.sampled_from(["user", "assistant"]), _texts),
    _texts,
    st.lists(_blocks, max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(_messages, max_size=6),
    system=st.one_of(_texts, st.lists(_blocks, max_size=3)),
    shift=st.integers(0, 3),
)
def test_any_conversation_masks_as_the_walk_does_turn_after_turn(builtin, messages, system, shift):
    masker = Masker(builtin, FINGERPRINT_KEY)
    body = {"model": "m", "system": system, "messages": copy.deepcopy(messages)}
    same_as_the_walk(masker, body)
    body["messages"] = (
        [{"role": "user", "content": "before"}] * shift + body["messages"] + [{"role": "user", "content": aws(9)}]
    )
    same_as_the_walk(masker, body)


# -- loads_spanned ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1,"a":2}',
        '{"a":{"b":1,"b":2}}',
        '{"messages":[{"x":1,"x":2}]}',
        '{"a":1} x',
        '{"a":1,}',
        '{"messages":[1,]}',
        '{"messages":[1 2]}',
        '{"messages":[',
        "\ufeff{}",
        '{"a":"\x01"}',
    ],
)
def test_loads_spanned_refuses_what_loads_refuses(text):
    assert loads_spanned(text) is None
    with pytest.raises(ValueError):
        loads(text)


@pytest.mark.parametrize(
    "text",
    ["{}", " { } ", '{"messages":[]}', ' {"a" : [ ] ,\n "messages" : [ 1 , {"b": [2]} ] } ', '{"messages": "x"}'],
)
def test_loads_spanned_reads_what_loads_reads_with_the_spans_of_its_parts(text):
    doc = loads_spanned(text)
    assert doc is not None and doc.value == loads(text)
    for k, a, b in doc.members:
        assert json.loads(text[a:b]) == doc.value[k]
    if isinstance(doc.value.get("messages"), list):
        assert doc.items is not None
        assert [json.loads(text[a:b]) for a, b in doc.items] == doc.value["messages"]
    else:
        assert doc.items is None


def test_loads_spanned_is_none_for_what_is_not_an_object_and_nan_can_be_refused():
    assert loads_spanned("[1]") is None
    assert loads_spanned('{"a": NaN}') is not None
    assert loads_spanned('{"a": NaN}', allow_nan=False) is None
    assert loads_spanned('{"messages": [NaN]}', allow_nan=False) is None
