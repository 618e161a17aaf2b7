"""Deny by default, as a property: a known secret planted anywhere in a random JSON body (a
value or a key, at any depth, under any field name, in a request or a response, buffered or
streamed in random chunks) never reaches the output, except in the fields that
`BYTE_IDENTICAL_FIELDS` documents, which stay byte-identical."""

from __future__ import annotations

import base64
import copy
import json
import random
import string
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.masking.byte_identical import BINARY_MEDIA_TYPES, BYTE_IDENTICAL_FIELDS, TOOL_BLOCK_TYPES
from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from gatehouse.wire.assembler import assemble_message
from gatehouse.wire.pipeline import SsePipeline
from gatehouse.wire.sse import encode_event, parse_sse
from support.secrets import FINGERPRINT_KEY

MASKER = Masker(parse_masking(None), FINGERPRINT_KEY)
EXEMPT = {(t, f) for t, f, _ in BYTE_IDENTICAL_FIELDS}
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# Field names and type values of the API (so that exempt shapes and tool inputs come up), and
# random ones. Random text uses letters that cannot spell a rule's keyword or a secret.
API_FIELDS = [
    "type",
    "text",
    "content",
    "input",
    "thinking",
    "signature",
    "data",
    "source",
    "media_type",
    "encrypted_content",
    "encrypted_index",
    "name",
    "id",
    "title",
    "url",
    "citations",
    "metadata",
    "tools",
    "system",
    "messages",
    "cited_text",
    "message",
    "error",
    "delta",
    "usage",
    "tool_use_id",
]
TYPES = [
    "text",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "server_tool_use",
    "mcp_tool_use",
    "tool_result",
    "mcp_tool_result",
    "base64",
    "image",
    "document",
    "web_search_result",
    "web_search_result_location",
    "compaction",
    "signature_delta",
    "thinking_delta",
    "future_block",
    "url",
]
SAFE = "abcxyz ABCXYZ019-./:é"

field_names = st.one_of(st.sampled_from(API_FIELDS), st.text(alphabet=SAFE, min_size=1, max_size=10))
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.text(alphabet=SAFE, max_size=24),
    st.sampled_from(TYPES),
    st.sampled_from(["image/png", "text/plain", "application/pdf"]),
)


json_values = st.recursive(
    leaves, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(field_names, c, max_size=5)), max_leaves=25
)
typed_objects = st.builds(
    lambda t, d: {"type": t, **d}, st.sampled_from(TYPES), st.dictionaries(field_names, json_values, max_size=4)
)


def secrets_of(rng: random.Random) -> list[str]:
    alnum = string.ascii_letters + string.digits
    return [
        "ghp_" + "".join(rng.choice(alnum) for _ in range(36)),
        "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
    ]


# --------------------------------------------------------------------------------------------
# Planting and checking
# --------------------------------------------------------------------------------------------


def containers(value: Any) -> list[Any]:
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (dict, list)):
            out.append(v)
            stack.extend(v.values() if isinstance(v, dict) else v)
    return out


def plant(body: Any, secret: str, draw) -> None:
    """Put `secret` somewhere in `body`: a string value, a key, a list item, with context or alone."""
    target = draw(st.sampled_from(containers(body)))
    text = draw(st.sampled_from([secret, f"key {secret}", f"{secret}\nmore", f'x="{secret}"']))
    if isinstance(target, list):
        target.insert(draw(st.integers(0, len(target))), text)
        return
    how = draw(st.sampled_from(["value", "key", "nested"]))
    if how == "key":
        target[text] = draw(json_values)
    elif how == "nested":
        target[draw(field_names)] = {draw(field_names): [text]}
    else:
        target[draw(field_names)] = text


def child_slot(parent_type: str | None, key: str, is_list: bool, parent_slot: bool) -> bool:
    """Where the API puts blocks with byte-identical fields (docs/security.md): a message's or
    response's content list, a streamed event's block or delta, a server tool's results, a
    block's citations, an image's or document's source. Nowhere else."""
    server = (
        parent_type is not None
        and parent_type.endswith("_tool_result")
        and parent_type not in ("tool_result", "mcp_tool_result")
    )
    if is_list:
        if key == "content":
            return parent_type in (None, "message") or server
        return key == "citations" and parent_slot
    if key in ("content_block", "delta"):
        return parent_type in ("content_block_start", "content_block_delta")
    if key == "content":
        return server
    if key == "citation":
        return parent_slot
    return key == "source" and parent_type in ("image", "document")


def exempt_ok(node: dict, key: Any, free: bool, slot: bool) -> bool:
    """Whether masking may leave node[key] (a string) as it is: the documented list, in its place."""
    t = node.get("type")
    if free or not slot or not isinstance(t, str) or (t, key) not in EXEMPT:
        return False
    if node.get("type") == "base64" and key == "data":
        mt = node.get("media_type")
        return isinstance(mt, str) and mt.lower() in BINARY_MEDIA_TYPES
    return True


def _children(v: dict, free: bool, slot: bool):
    t = v.get("type") if isinstance(v.get("type"), str) else None
    for k, x in v.items():
        if isinstance(x, (dict, list)):
            cfree = free or (k == "input" and t in TOOL_BLOCK_TYPES) or k == "error"
            yield x, cfree, (not cfree) and child_slot(t, k, isinstance(x, list), slot)


def leaks(value: Any, secret: str, block: bool = False) -> list[str]:
    """Strings of `value` that hold `secret` outside the byte-identical fields (and text
    base64 sources that decode to it)."""
    found: list[str] = []
    stack: list[tuple[Any, bool, bool]] = [(value, False, block)]
    while stack:
        v, free, slot = stack.pop()
        if isinstance(v, dict):
            t = v.get("type") if isinstance(v.get("type"), str) else None
            for k, x in v.items():
                if isinstance(k, str) and secret in k:
                    found.append(f"key {k!r}")
                if isinstance(x, str):
                    if exempt_ok(v, k, free, slot):
                        continue
                    if secret in x:
                        found.append(f"{k}: {x!r}")
                    if t == "base64" and k == "data" and not free:
                        try:
                            if secret in base64.b64decode(x, validate=True).decode("utf-8", "replace"):
                                found.append(f"base64 {k}")
                        except ValueError:
                            pass
            stack.extend(_children(v, free, slot))
        elif isinstance(v, list):
            stack.extend((x, free, slot and isinstance(x, dict)) for x in v)
        elif isinstance(v, str) and secret in v:
            found.append(repr(v))
    return found


def exempt_values(value: Any, block: bool = False) -> list[tuple[Any, ...]]:
    """The byte-identical fields of `value`, in walk order, for comparing before and after."""
    out = []
    stack: list[tuple[Any, bool, bool]] = [(value, False, block)]
    while stack:
        v, free, slot = stack.pop()
        if isinstance(v, dict):
            t = v.get("type") if isinstance(v.get("type"), str) else None
            for k, x in v.items():
                if isinstance(x, str) and exempt_ok(v, k, free, slot):
                    out.append((t, k, x))
            stack.extend(_children(v, free, slot))
        elif isinstance(v, list):
            stack.extend((x, free, slot and isinstance(x, dict)) for x in v)
    return sorted(out, key=repr)


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------

blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.text(alphabet=SAFE, max_size=40)),
    st.builds(
        lambda i, v: {"type": "tool_use", "id": f"toolu_{i}", "name": "Bash", "input": {"command": v}},
        st.integers(0, 99),
        json_values,
    ),
    st.builds(
        lambda c: {"type": "tool_result", "tool_use_id": "toolu_1", "content": c},
        st.one_of(st.text(alphabet=SAFE, max_size=30), st.lists(typed_objects, max_size=3)),
    ),
    st.builds(
        lambda t, sig: {"type": "thinking", "thinking": t, "signature": sig},
        st.text(alphabet=SAFE, max_size=30),
        st.text(alphabet=string.ascii_letters, max_size=20),
    ),
    st.builds(
        lambda: {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    ),
    st.builds(
        lambda t: {
            "type": "document",
            "source": {"type": "base64", "media_type": "text/plain", "data": base64.b64encode(t.encode()).decode()},
        },
        st.text(alphabet=SAFE, max_size=30),
    ),
    typed_objects,
)


@st.composite
def request_bodies(draw):
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": draw(st.one_of(st.text(alphabet=SAFE, max_size=30), st.lists(blocks, max_size=3))),
        "messages": [
            {
                "role": draw(st.sampled_from(["user", "assistant"])),
                "content": draw(st.one_of(st.text(alphabet=SAFE, max_size=30), st.lists(blocks, max_size=5))),
            }
            for _ in range(draw(st.integers(1, 3)))
        ],
    }
    for k, v in draw(st.dictionaries(field_names, json_values, max_size=3)).items():
        body.setdefault(k, v)
    return body


@st.composite
def response_bodies(draw):
    body: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": draw(st.lists(blocks, max_size=5)),
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    for k, v in draw(st.dictionaries(field_names, json_values, max_size=3)).items():
        body.setdefault(k, v)
    return body


@st.composite
def planted(draw, bodies):
    body = draw(bodies)
    secret = draw(st.sampled_from(secrets_of(random.Random(draw(st.integers(0, 2**32))))))
    # sometimes a text/plain document holding it, or it in a text split over two blocks
    where = draw(st.sampled_from(["anywhere", "anywhere", "anywhere", "document", "split"]))
    content = None
    if isinstance(body, dict):
        if isinstance(body.get("messages"), list) and body["messages"]:
            first = body["messages"][0]
            content = first.get("content") if isinstance(first, dict) else None
        else:
            content = body.get("content")
    if where == "anywhere" or not isinstance(content, list):
        plant(body, secret, draw)
    elif where == "document":
        content.append(
            {
                "type": "document",
                "source": {
                    "type": "base64",
                    "media_type": "text/plain",
                    "data": base64.b64encode(f"cfg {secret}\n".encode()).decode(),
                },
            }
        )
    else:  # split over two adjacent text blocks: neither half is a secret alone
        h = draw(st.integers(1, len(secret) - 1))
        at = draw(st.integers(0, len(content)))
        content[at:at] = [
            {"type": "text", "text": "see " + secret[:h], "split": "a"},
            {"type": "text", "text": secret[h:] + " ok", "split": "b"},
        ]
    return body, secret


def split_text(value: Any) -> str:
    """The two halves of a split secret, joined again (after masking: what the model reads)."""
    parts = {
        d["split"]: d.get("text", "") for d in containers(value) if isinstance(d, dict) and d.get("split") in ("a", "b")
    }
    return parts.get("a", "") + parts.get("b", "")


def check_masked(original: Any, masked: Any, secret: str, mask) -> None:
    assert not leaks(masked, secret), leaks(masked, secret)
    joined = split_text(masked)
    assert not any(secret[i : i + 12] in joined for i in range(len(secret) - 11)), joined
    assert exempt_values(masked) == exempt_values(original)  # byte-identical, all of them
    again = copy.deepcopy(original)
    mask(again)
    assert again == masked  # deterministic
    twice = copy.deepcopy(masked)
    assert mask(twice) == [] and twice == masked  # stable when masked again


@SETTINGS
@given(planted(request_bodies()))
def test_a_secret_anywhere_in_a_request_never_gets_through(case):
    body, secret = case
    original = copy.deepcopy(body)
    MASKER.mask_request(body)
    check_masked(original, body, secret, MASKER.mask_request)


@SETTINGS
@given(planted(response_bodies()))
def test_a_secret_anywhere_in_a_response_never_gets_through(case):
    body, secret = case
    original = copy.deepcopy(body)
    MASKER.mask_response_message(body)
    check_masked(original, body, secret, MASKER.mask_response_message)


@SETTINGS
@given(
    planted(st.one_of(json_values.filter(lambda v: isinstance(v, (dict, list))), st.lists(typed_objects, min_size=1)))
)
def test_a_secret_anywhere_in_any_json_never_gets_through(case):
    body, secret = case
    original = copy.deepcopy(body)
    MASKER.mask_document(body)
    check_masked(original, body, secret, MASKER.mask_document)
    rec, _ = MASKER.mask_for_record(original)  # the recorder's copy: nothing is exempt
    assert secret not in json.dumps(rec, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


def ev(name: str, **data: Any) -> tuple[str, dict[str, Any]]:
    return name, {"type": name, **data}


@st.composite
def planted_streams(draw):
    rng = random.Random(draw(st.integers(0, 2**32)))
    secret = rng.choice(secrets_of(rng))
    spot = draw(
        st.sampled_from(
            [
                "text",
                "tool",
                "tool_start",
                "tool_cut",
                "tool_escaped",
                "message_start",
                "message_delta",
                "error",
                "server_block",
                "citation",
                "unknown_event",
                "key",
            ]
        )
    )
    extra = draw(st.dictionaries(field_names, json_values, max_size=2))

    def pieces(s: str, n: int) -> list[str]:
        out, i = [], 0
        while i < len(s):
            k = rng.randint(1, n)
            out.append(s[i : i + k])
            i += k
        return out

    msg = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
        **extra,
    }
    if spot == "message_start":
        msg[draw(field_names)] = f"x {secret}"
    if spot == "key":
        msg["usage"] = {"input_tokens": 1, secret: 1}
    events = [ev("message_start", message=msg)]
    idx = 0
    # a thinking block first, with the secret in it: byte-identical, allowed
    if draw(st.booleans()):
        events += [
            ev("content_block_start", index=idx, content_block={"type": "thinking", "thinking": "", "signature": ""}),
            ev("content_block_delta", index=idx, delta={"type": "thinking_delta", "thinking": f"saw {secret}"}),
            ev("content_block_delta", index=idx, delta={"type": "signature_delta", "signature": "c2ln" + secret}),
            ev("content_block_stop", index=idx),
        ]
        idx += 1
    text = draw(st.text(alphabet=SAFE, max_size=200))
    if spot == "text":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + " " + secret + " " + text[at:]
    events.append(ev("content_block_start", index=idx, content_block={"type": "text", "text": ""}))
    events += [
        ev("content_block_delta", index=idx, delta={"type": "text_delta", "text": p})
        for p in pieces(text, rng.choice([1, 3, 12, 40]))
    ]
    if spot == "citation":
        events.append(
            ev(
                "content_block_delta",
                index=idx,
                delta={
                    "type": "citations_delta",
                    "citation": {"type": "char_location", "cited_text": f"c {secret}", "document_index": 0},
                },
            )
        )
    events.append(ev("content_block_stop", index=idx))
    idx += 1
    cut_here = False
    if spot.startswith("tool"):
        inp = draw(st.dictionaries(field_names, json_values, max_size=3))
        inp[draw(field_names)] = f"echo {secret}"
        start_input: Any = inp if spot == "tool_start" else {}
        events.append(
            ev(
                "content_block_start",
                index=idx,
                content_block={"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": start_input},
            )
        )
        if spot != "tool_start":
            js = json.dumps(inp, ensure_ascii=rng.random() < 0.5)
            shown = secret
            if spot == "tool_escaped":  # the secret's first letter escaped (and its "_"), "/" as "\/"
                shown = f"\\u{ord(secret[0]):04x}" + secret[1:].replace("_", "\\u005f")
                js = js.replace("echo " + secret, "echo\\/" + shown)
            if spot in ("tool_cut", "tool_escaped"):  # cut short (max_tokens): not valid JSON
                js = js[: js.index(shown) + len(shown) + draw(st.integers(0, 1))]
                cut_here = draw(st.booleans())
            events += [
                ev("content_block_delta", index=idx, delta={"type": "input_json_delta", "partial_json": p})
                for p in pieces(js, 15)
            ]
        if not cut_here:
            events.append(ev("content_block_stop", index=idx))
        idx += 1
    if spot == "server_block" and not cut_here:
        events += [
            ev(
                "content_block_start",
                index=idx,
                content_block={
                    "type": draw(st.sampled_from(["web_search_tool_result", "mcp_tool_result", "future_result"])),
                    "tool_use_id": "x",
                    "content": [{"type": "text", "text": secret, **extra}],
                },
            ),
            ev("content_block_stop", index=idx),
        ]
    if spot == "unknown_event" and not cut_here:
        events.append(ev("future_event", payload=[{"x": secret}]))
    if spot == "error":
        events.append(ev("error", error={"type": "overloaded_error", "message": f"upstream said {secret}"}))
    elif not cut_here:
        delta = {"stop_reason": "end_turn", "stop_sequence": f"{secret}" if spot == "message_delta" else None}
        events += [ev("message_delta", delta=delta, usage={"output_tokens": 5}), ev("message_stop")]
    data = b"".join(encode_event(n, d) for n, d in events)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=40))))
    if draw(st.booleans()):
        cuts = sorted(set(cuts + list(range(0, len(data), draw(st.integers(1, 9))))))
    return data, secret, cuts


def _stream(data: bytes, cuts: list[int]) -> tuple[bytes, SsePipeline]:
    pipe = SsePipeline(MASKER)
    bounds = [0, *[c for c in cuts if 0 < c < len(data)], len(data)]
    out = bytearray()
    for a, b in pairwise(bounds):
        r = pipe(data[a:b])
        assert r == [] or (isinstance(r, bytes) and r)  # never b"" before the end
        out += r if isinstance(r, bytes) else b"".join(r)
    out += pipe(b"")
    return bytes(out), pipe


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(planted_streams())
def test_a_secret_anywhere_in_a_stream_never_gets_through(case):
    data, secret, cuts = case
    out, pipe = _stream(data, cuts)
    events = parse_sse(out)
    assert not pipe.errors, pipe.errors
    for _, d in events:
        assert not leaks(d, secret), (d, leaks(d, secret))
    # what the client assembles (texts joined over deltas, tool inputs parsed)
    msg = assemble_message(events)
    content = msg.get("content") if isinstance(msg.get("content"), list) else []
    assert not leaks({**msg, "content": None}, secret)
    for block in content:  # each is what its content_block_start carried: a block
        assert not leaks(block, secret, block=True), leaks(block, secret, block=True)
    for block in msg.get("content", []):
        if isinstance(block, dict) and isinstance(block.get("input"), str):  # cut short: still JSON text
            decoded = block["input"].encode().decode("unicode_escape", "replace")
            assert secret[4:] not in decoded and secret[4:].replace("_", "\\u005f") not in block["input"], block
    # the same as buffered, whatever the chunking
    whole, _ = _stream(data, [])
    assert out == whole
