"""The Masker: replacement and fingerprints, the Messages API walkers, the recorder's copy,
the fingerprint key, and the streaming text masker (TextStream)."""

from __future__ import annotations

import copy
import json
import os
import random
import re
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons.core.masker import FINGERPRINT_KEY_FILE, FingerprintKeyError, Masker, fingerprint_key_for, format_where
from addons.core.rules import parse_masking
from test_rules import fake_pem, fake_secret, masking_section, secret_in_context, survives

KEY = b"test-fingerprint-key-0123456789ab"
TOKEN = re.compile(r"\[MASKED:([a-z0-9._-]+):([0-9a-f]{6})\]")


@pytest.fixture(scope="module")
def masker() -> Masker:
    return Masker(parse_masking(None), KEY)


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


def test_fingerprint_depends_on_key_and_secret(masker):
    other = Masker(masker.policy, b"another-key-another-key-another")
    a, b = aws(random.Random(1)), aws(random.Random(2))
    assert masker.fingerprint(a) != masker.fingerprint(b)
    assert masker.fingerprint(a) != other.fingerprint(a)
    assert "key" not in repr(masker).lower() or KEY.decode() not in repr(masker)


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
    assert [(s.rule, text[s.start:s.end]) for s in spans] == [("aws-access-key-id", secret)]


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
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": f"the user pasted {s}", "signature": "c2ln/" + s},
                {"type": "redacted_thinking", "data": "ZGF0/" + s},
                {"type": "text", "text": f"I will use {s}"},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash",
                 "input": {"command": f"export KEY={s}", "env": [{"v": s}], "n": 3}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"echo {s}"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": False, "content": [
                    {"type": "text", "text": f"out: {s}"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO/" + s}},
                ]},
                {"type": "document", "title": f"notes {s}", "context": f"ctx {s}",
                 "source": {"type": "text", "media_type": "text/plain", "data": f"doc {s}"}},
                {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": f"c {s}"}]}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE/" + s}},
                {"type": "search_result", "source": "https://x", "title": "t",
                 "content": [{"type": "text", "text": f"r {s}"}]},
                {"type": "text", "text": f"thanks {s}"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": s}},
            ]},
        ],
    }


def test_request_masks_every_text_field_and_nothing_signed(masker):
    s = aws()
    body = request_body(s)
    original = copy.deepcopy(body)
    found = masker.mask_request(body)
    wheres = sorted(f.where for f in found)
    assert wheres == sorted([
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
    ])
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
    for body in [{}, {"messages": None}, {"messages": ["x", 1, None, {"content": 5}]}, {"system": 3},
                 {"messages": [{"role": "user", "content": [None, 1, "x", {"type": "text"}, {"type": "tool_use"}]}]}]:
        assert masker.mask_request(body) == []


def test_deeply_nested_tool_input_is_walked_without_recursion(masker):
    s = aws()
    inner: dict = {"v": s}
    for _ in range(5000):
        inner = {"a": [inner]}
    body = {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "X", "input": inner}]}]}
    found = masker.mask_request(body)
    assert len(found) == 1 and found[0].where.endswith(".v")


def test_disabled_policy_changes_nothing():
    m = Masker(masking_section("[masking]\npacks = []\n"), KEY)
    body = request_body(aws())
    before = copy.deepcopy(body)
    assert m.mask_request(body) == [] and body == before
    assert m.mask_text("x " + aws())[1] == []


# --------------------------------------------------------------------------------------------
# Responses and the recorder's copy
# --------------------------------------------------------------------------------------------


def response_message(s: str) -> dict:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [
            {"type": "thinking", "thinking": f"found {s}", "signature": "sig/" + s},
            {"type": "text", "text": f"Your key {s} is exposed", "citations": None},
            {"type": "tool_use", "id": "toolu_9", "name": "Write", "input": {"file_path": "/x", "content": f"K={s}\n"}},
        ],
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 2},
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
# The fingerprint key
# --------------------------------------------------------------------------------------------


def test_fingerprint_key_generated_once_with_mode_0600(tmp_path):
    pol = parse_masking(None)
    k1 = fingerprint_key_for(pol, tmp_path / "state")
    k2 = fingerprint_key_for(pol, tmp_path / "state")
    path = tmp_path / "state" / FINGERPRINT_KEY_FILE
    assert k1 == k2 and len(k1) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_fingerprint_key_refuses_a_readable_file(tmp_path):
    pol = parse_masking(None)
    fingerprint_key_for(pol, tmp_path)
    os.chmod(tmp_path / FINGERPRINT_KEY_FILE, 0o644)
    with pytest.raises(PermissionError):
        fingerprint_key_for(pol, tmp_path)


def test_fingerprint_key_from_environment_for_replicas(tmp_path, monkeypatch):
    pol = masking_section('[masking]\nfingerprint_secret_env = "GH_TEST_FP"\n')
    monkeypatch.delenv("GH_TEST_FP", raising=False)
    with pytest.raises(FingerprintKeyError, match="GH_TEST_FP, which is not set"):
        fingerprint_key_for(pol, tmp_path)
    monkeypatch.setenv("GH_TEST_FP", "short")
    with pytest.raises(FingerprintKeyError, match="too short"):
        fingerprint_key_for(pol, tmp_path)
    monkeypatch.setenv("GH_TEST_FP", "s3cret-shared-by-all-replicas")
    key = fingerprint_key_for(pol, tmp_path)
    assert key == b"s3cret-shared-by-all-replicas"
    assert not (tmp_path / FINGERPRINT_KEY_FILE).exists()
    # Two replicas with the same secret give the same fingerprints.
    assert Masker(pol, key).fingerprint("x") == Masker(pol, fingerprint_key_for(pol, tmp_path / "b")).fingerprint("x")


# --------------------------------------------------------------------------------------------
# Streaming text
# --------------------------------------------------------------------------------------------


def stream_pieces(masker: Masker, pieces: list[str], hold_back: int = 256) -> tuple[str, list[str]]:
    ts = masker.text_stream("content[0].text", hold_back)
    released = [ts.push(p) for p in pieces]
    released.append(ts.flush())
    return "".join(released), released


def test_stream_catches_a_secret_split_across_deltas(masker):
    s = fake_secret("anthropic-api-key", random.Random(5))
    text = f"Set ANTHROPIC_API_KEY to {s} then run it."
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    out, released = stream_pieces(masker, pieces)
    assert out == masker.mask_text(text)[0]
    assert not survives(s, "".join(released))


def test_stream_releases_text_once_it_is_safe(masker):
    ts = masker.text_stream("w", 64)
    assert ts.push("a" * 40) == ""  # within the window: held
    out = ts.push("b" * 100)
    assert out and out == ("a" * 40 + "b" * 100)[:len(out)]
    assert ts.pending <= 64 + 32
    assert out + ts.flush() == "a" * 40 + "b" * 100


def test_stream_holds_private_key_until_end_marker(masker):
    rng = random.Random(6)
    pem = fake_pem(rng, "OPENSSH ", lines=40)
    text = "Here it is:\n" + pem + "\nKeep it safe." + " filler" * 100
    ts = masker.text_stream("w", 64)
    out = []
    for i in range(0, len(text), 7):
        out.append(ts.push(text[i:i + 7]))
        joined = "".join(out)
        assert "-----BEGIN" not in joined  # nothing of the block leaves before it is complete
    out.append(ts.flush())
    assert "".join(out) == masker.mask_text(text)[0]
    assert "[MASKED:private-key:" in "".join(out)


def test_stream_hold_is_bounded(masker):
    ts = masker.text_stream("w", 64, max_hold_chars=2000)
    ts.push("-----BEGIN RSA PRIVATE KEY-----\n")
    got = "".join(ts.push("QUJD" * 16 + "\n") for _ in range(100))
    assert got  # released after the bound instead of holding forever
    assert ts.pending < 2000 + 200


@st.composite
def texts_and_cuts(draw):
    rng = random.Random(draw(st.integers(0, 2**32)))
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            text, secret, kind = secret_in_context(rng)
            parts.append(text)
        else:
            parts.append(draw(st.text(alphabet=st.sampled_from(list("ab c\n=:\"'-_/é日")), max_size=60)))
    text = "".join(parts)
    cuts = sorted(set(draw(st.lists(st.integers(0, max(len(text), 1)), max_size=40))))
    return text, cuts


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts_and_cuts(), st.sampled_from([64, 128, 256]))
def test_streamed_text_equals_whole_text_masking(case, hold_back):
    text, cuts = case
    masker = Masker(parse_masking(None), KEY)
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    out, _ = stream_pieces(masker, pieces, hold_back)
    want, found = masker.mask_text(text)
    longest = max((h.end - h.start for h in masker.scanner.scan(text)), default=0)
    if longest <= hold_back - 64 or "PRIVATE KEY" in text:
        assert out == want
    # Whatever the window, no secret that the whole-text masking catches survives whole.
    for h in masker.scanner.scan(text):
        assert text[h.start:h.end] not in out or h.end - h.start <= 12
