"""The recorder's memory of request parts (`PartCache`): a request built from it is the same
record part, blobs and findings as one built without it, turn after turn."""

from __future__ import annotations

import json
import random

from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from gatehouse.recording.records import PartCache, RequestInput, build_request
from gatehouse.wire.jsonbody import loads_spanned
from support.secrets import FINGERPRINT_KEY, fake_secret

SECRET = fake_secret("github-pat", random.Random(3))


def request(messages: list, *, extra: str = "") -> RequestInput:
    body = {
        "model": "claude-sonnet-4-6",
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code." + extra}],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}],
        "messages": messages,
        "metadata": {"user_id": json.dumps({"session_id": "s-1"})},
    }
    headers = [("content-type", "application/json"), ("user-agent", "claude-cli/2")]
    return RequestInput("POST", "https", "api.anthropic.com", 443, "/v1/messages", headers, json.dumps(body).encode())


def turns(n: int) -> list:
    out: list = [{"role": "user", "content": [{"type": "text", "text": f"start with {SECRET}"}]}]
    for i in range(n):
        out.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": f"it holds {SECRET}", "signature": "c2ln"},
                    {"type": "tool_use", "id": f"toolu_{i}", "name": "Bash", "input": {"command": f"ls {i}"}},
                ],
            }
        )
        out.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "ok"}]})
    return out


def built(req: RequestInput, masker: Masker | None, cache: PartCache | None):
    b = build_request(req, masker=masker, identity=None, at=1.0, tracker=None, cache=cache)
    return b.part, b.blobs, b.findings, b.session


def test_a_session_recorded_through_the_cache_is_recorded_as_without_it():
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    cache = PartCache(masker)
    for n in range(5):
        req = request(turns(n))
        fresh = built(req, Masker(parse_masking(None), FINGERPRINT_KEY), None)
        assert built(req, masker, cache) == fresh
        assert built(req, masker, cache) == fresh  # all of it from the cache now
    assert len(cache) > 0
    part, blobs, findings, _ = fresh
    assert SECRET.encode() not in b"".join(blobs.values())
    wheres = {f["where"] for f in findings}
    assert "body.messages[0].content[0].text" in wheres and "body.messages[7].content[0].thinking" in wheres


def test_without_a_masker_the_parts_are_recorded_as_they_came():
    cache = PartCache(None)
    req = request(turns(2))
    assert built(req, None, cache) == built(req, None, None) == built(req, None, cache)


def test_a_cache_made_for_another_masker_is_not_used():
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    other = PartCache(Masker(parse_masking(None), b"another-fingerprint-key-000000000"))
    req = request(turns(1))
    assert built(req, masker, other) == built(req, masker, None)
    assert len(other) == 0


def test_the_cache_holds_at_most_its_bytes():
    cache = PartCache(None, max_bytes=64 * 1024)
    for i in range(200):
        cache.put(("item", bytes([i % 256]) * 32), f"{i:064x}", b"x" * 1000)
    assert len(cache) <= 64 * 1024 // 1200 + 1
    cache.put(("big",), "0" * 64, b"x" * 10_000)  # more than a sixteenth: not kept
    assert cache.get(("big",)) is None


def test_a_body_parsed_already_is_recorded_as_if_parsed_here():
    """`parsed` (the masking addon's parse of a body it forwarded unchanged) saves parsing it
    again: the part, blobs, findings and session are those of a build that parses itself,
    turn after turn."""
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    cache = PartCache(masker)
    for n in range(4):
        req = request(turns(n))
        fresh = built(req, Masker(parse_masking(None), FINGERPRINT_KEY), None)
        doc = loads_spanned(req.body.decode())
        b = build_request(req, masker=masker, identity=None, at=1.0, tracker=None, cache=cache, parsed=doc)
        assert (b.part, b.blobs, b.findings, b.session) == fresh
        assert SECRET not in json.dumps(b.part) + repr(b.blobs)


def test_a_parse_of_another_body_is_not_used():
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    req = request(turns(1))
    other = loads_spanned(json.dumps({"model": "claude-other", "messages": [{"role": "user", "content": "x"}]}))
    b = build_request(req, masker=masker, identity=None, at=1.0, tracker=None, cache=PartCache(masker), parsed=other)
    assert (b.part, b.blobs, b.findings, b.session) == built(req, Masker(parse_masking(None), FINGERPRINT_KEY), None)
    assert b.part["model"] == "claude-sonnet-4-6"


def test_a_parse_that_allowed_nan_is_not_recorded_as_json():
    """The masking addon's parser allows NaN and Infinity; the record has no encoding of them, and
    such a body is recorded as text, as when the recorder parses it itself."""
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    cache = PartCache(masker)
    text = json.dumps({"model": "m", "temperature": float("nan"), "messages": turns(1)})
    req = RequestInput("POST", "https", "api.anthropic.com", 443, "/v1/messages", [], text.encode())
    doc = loads_spanned(text)  # allow_nan: True, as the masking addon parses
    assert doc is not None
    b = build_request(req, masker=masker, identity=None, at=1.0, tracker=None, cache=cache, parsed=doc)
    fresh = build_request(req, masker=masker, identity=None, at=1.0, tracker=None, cache=None)
    assert b.part["encoding"] == "text" and (b.part, b.blobs, b.findings) == (fresh.part, fresh.blobs, fresh.findings)
