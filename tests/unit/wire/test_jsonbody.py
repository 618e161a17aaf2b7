"""`jsonbody.KnownItems`: a conversation's messages parsed before are taken from memory by
`loads_spanned`, and the parse is exactly the parse without it: same value, same spans, same
digests, whatever the turns look like; each taker gets a copy of its own."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.wire.jsonbody import KnownItems, loads, loads_spanned


def parse_both(text: str, known: KnownItems, allow_nan: bool = True):
    """The parse with `known` and without: asserted equal (value, spans, digests)."""
    want = loads_spanned(text, allow_nan=allow_nan)
    got = loads_spanned(text, allow_nan=allow_nan, known=known)
    assert (got is None) == (want is None)
    if want is None:
        return None
    # Compared as JSON text: NaN is not equal to itself.
    assert json.dumps(got.value) == json.dumps(want.value)
    assert got.members == want.members and got.items == want.items
    if want.items is not None:
        assert [got.digest(a, b) for a, b in got.items] == [want.digest(a, b) for a, b in want.items]
    assert [got.digest(a, b) for _, a, b in got.members] == [want.digest(a, b) for _, a, b in want.members]
    return got


def message(role: str, text: str) -> dict:
    """A message long enough to be remembered (`KnownItems.MIN_CHARS`)."""
    return {"role": role, "content": [{"type": "text", "text": text + " " + "details " * 40}]}


def test_a_late_turn_takes_the_earlier_messages_from_memory():
    known = KnownItems(1 << 20)
    turn = [message("user", "fix it"), message("assistant", "ok")]
    parse_both(json.dumps({"model": "m", "messages": turn}), known)
    assert known.hits == 0
    later = {"model": "m", "messages": [*turn, message("user", "and now?")]}
    doc = parse_both(json.dumps(later), known)
    assert doc.value == later
    assert known.hits == 2  # the two earlier messages; the new one is parsed
    # Taken with their digests: there before anyone asks for one.
    assert all(span in doc._digests for span in doc.items)


def test_the_tools_and_system_prompt_are_taken_from_memory_too():
    known = KnownItems(1 << 20)
    tools = [
        {"name": f"Tool{i}", "description": "does things " * 20, "input_schema": {"type": "object"}} for i in range(3)
    ]
    system = [{"type": "text", "text": "You are Claude Code. " * 20}]
    body = {"model": "m", "system": system, "tools": tools, "messages": [message("user", "hi")]}
    parse_both(json.dumps(body), known)
    assert known.hits == 0
    body["messages"].append(message("user", "and now?"))
    doc = parse_both(json.dumps(body), known)
    assert doc.value == body
    assert known.hits == 3  # system, tools and the first message
    # Taken with their digests, as the messages are.
    assert all((a, b) in doc._digests for key, a, b in doc.members if key in ("system", "tools"))
    # Tools that grew by one: their text is not the one known, so they are parsed.
    changed = {"model": "m", "system": system, "tools": [*tools, {"name": "New"}], "messages": []}
    assert parse_both(json.dumps(changed), known).value == changed
    assert known.hits == 4  # the system prompt only


def test_each_parse_gets_its_own_copy_of_known_tools():
    known = KnownItems(1 << 20)
    text = json.dumps({"tools": [{"name": "Bash", "description": "AKIA secret " + "runs " * 60}]})
    first = loads_spanned(text, known=known)
    first.value["tools"][0]["description"] = "[MASKED]"
    second = loads_spanned(text, known=known)
    assert known.hits == 1
    assert second.value["tools"][0]["description"].startswith("AKIA secret")
    assert second.value["tools"] is not first.value["tools"]


def test_a_known_member_is_taken_whatever_follows_it_and_the_parse_still_checks_that():
    known = KnownItems(1 << 20, min_chars=0)
    loads_spanned('{"tools":[1]}', known=known)
    for text, value in (('{"tools":[1] }', [1]), ('{"tools":[1],"x":{}}', [1])):
        assert parse_both(text, known).value["tools"] == value
    assert loads_spanned('{"tools":[1]]}', known=known) is None  # what follows is not JSON
    assert loads_spanned('{"tools":[1]x}', known=known) is None


def test_messages_that_begin_alike_are_all_remembered():
    known = KnownItems(1 << 20)
    preamble = "<system-reminder>" + "context " * 40  # longer than the characters looked up by
    turn = [message("user", preamble + f"question {i}") for i in range(3)]
    text = json.dumps({"messages": turn})
    parse_both(text, known)
    parse_both(text, known)
    assert known.hits == 3


def test_short_items_are_parsed_every_time_and_not_kept():
    known = KnownItems(1 << 20)
    text = json.dumps({"messages": list(range(10_000))})  # a body of many tiny items
    for _ in range(2):
        assert parse_both(text, known).value["messages"] == list(range(10_000))
    assert known.hits == 0 and len(known._items) == 0


def test_each_parse_gets_its_own_copy_of_a_known_message():
    known = KnownItems(1 << 20)
    text = json.dumps({"messages": [message("user", "AKIA secret")]})
    first = loads_spanned(text, known=known)
    first.value["messages"][0]["content"] = "[MASKED]"  # readers mask values in place
    second = loads_spanned(text, known=known)
    assert known.hits == 1
    assert second.value["messages"][0]["content"][0]["text"].startswith("AKIA secret")
    assert second.value["messages"][0] is not first.value["messages"][0]


@pytest.mark.parametrize(
    ("seen", "text", "value"),
    [
        # A known item whose text is a prefix of what is there now is not taken.
        ('{"messages":[1]}', '{"messages":[12]}', [12]),
        # ... even when the two agree in all the characters an item is looked up by.
        ('{"messages":[' + "1" * 300 + "]}", '{"messages":[' + "1" * 300 + "2]}", [int("1" * 300 + "2")]),
        ('{"messages":[1]}', '{"messages":[1.5, 2]}', [1.5, 2]),
        ('{"messages":[true]}', '{"messages":[true ]}', [True]),
        ('{"messages":[{"a":1}]}', '{"messages":[{"a":1} , {"a":1}]}', [{"a": 1}, {"a": 1}]),
    ],
)
def test_a_known_text_is_taken_only_where_it_ends_an_item(seen, text, value):
    known = KnownItems(1 << 20, min_chars=0)
    loads_spanned(seen, known=known)
    assert parse_both(text, known).value["messages"] == value


def test_what_is_refused_stays_refused_with_known_messages():
    known = KnownItems(1 << 20, min_chars=0)
    loads_spanned('{"messages":[{"x":1}, NaN]}', known=known)
    for text in ('{"messages":[{"x":1,"x":2}]}', '{"messages":[{"x":1}]} x', '{"messages":[{"x":1},]}'):
        assert loads_spanned(text, known=known) is None
        with pytest.raises(ValueError):
            loads(text)
    # NaN parsed where it is allowed is not taken where it is not.
    assert loads_spanned('{"messages":[NaN]}', known=known) is not None
    assert loads_spanned('{"messages":[NaN]}', allow_nan=False, known=known) is None


def test_memory_is_bounded():
    known = KnownItems(32768)
    for i in range(200):
        loads_spanned(json.dumps({"messages": [{"content": f"{i} " + "x" * 500}]}), known=known)
    # Each item costs its text, its pickle and the map's entry (about 1.5 KB here): a few fit.
    assert 10 <= len(known._items) <= 22
    assert known._items._total <= 32768


def test_a_part_over_a_sixteenth_of_the_memory_is_not_kept():
    known = KnownItems(64 * 1024)  # 4 KB at most per part
    small = {"content": "x" * 1000}
    big = {"content": "y" * 5000}
    text = json.dumps({"tools": big, "messages": [small, big]})
    for _ in range(2):
        parse_both(text, known)
    assert known.hits == 1  # the small message, the second time; the big parts every time parsed


_scalars = st.one_of(st.integers(-5, 1000), st.booleans(), st.none(), st.text(max_size=8), st.floats())
_json = st.recursive(
    _scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=3), kids, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(turns=st.lists(st.lists(_json, max_size=5), min_size=1, max_size=4), spacing=st.sampled_from([None, 1]))
def test_any_sequence_of_turns_parses_as_without_memory(turns, spacing):
    """Turns that resend, reorder, extend and change messages (numbers that are prefixes of
    others, NaN and Infinity, strings, nested values), compact or spaced, parsed where NaN is
    allowed and where it is not: every parse is the plain one."""
    known = KnownItems(1 << 16, min_chars=0)
    conversation: list = []
    for new in turns:
        conversation = conversation + new
        for messages in (conversation, list(reversed(conversation))):
            # Container members too: the same each turn, or the turn's messages again.
            for tools in (conversation[:1], messages):
                text = json.dumps({"model": "m", "tools": tools, "messages": messages, "x": {}}, indent=spacing)
                parse_both(text, known, allow_nan=True)
                parse_both(text, known, allow_nan=False)
