"""The stream guard: each rule's pattern turned into one that accepts every prefix of its
matches (`match_prefix_pattern`), and what a `TextStream` releases with it: as soon as no
secret can begin in the text, never a secret in clear, the same as masking the whole text.

The guard's soundness is what the streaming invariant rests on (text_stream's docstring):
checked here on the real pack over the labelled corpus, and on generated patterns."""

from __future__ import annotations

import json
import random
import string
import tomllib
from itertools import pairwise
from pathlib import Path

import pytest
import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from gatehouse.masking.rules import compile_pattern, keywords_in_every_match, match_prefix_pattern
from gatehouse.masking.scanner import StreamGuard
from support.secrets import FINGERPRINT_KEY, fake_secret, rules_only, survives

REPO = Path(__file__).resolve().parents[3]
PACK = tomllib.loads((REPO / "policies" / "rules" / "secrets.toml").read_text())["rules"]
CORPUS = [
    json.loads(line)
    for line in (REPO / "tests" / "fixtures" / "corpus" / "secrets-dev.jsonl").read_text().splitlines()
    if line.strip()
]


def stream(masker: Masker, text: str, cuts: list[int], hold_back: int = 256) -> tuple[str, list[str]]:
    ts = masker.text_stream("content[0].text", hold_back)
    out = [ts.push(text[a:b]) for a, b in pairwise([0, *cuts, len(text)])]
    out.append(ts.flush())
    return "".join(out), out


@pytest.fixture(scope="module")
def masker() -> Masker:
    return Masker(parse_masking(None), FINGERPRINT_KEY)


# --------------------------------------------------------------------------------------------
# The derivation
# --------------------------------------------------------------------------------------------


def test_every_rule_of_the_pack_is_judged_by_the_guard(masker):
    """No built-in rule falls back to the fixed window: each pattern is read, and each rule's
    keywords are spelled out by its matches themselves."""
    for r in PACK:
        assert match_prefix_pattern(r["pattern"]) is not None, r["id"]
        assert keywords_in_every_match(r["pattern"], tuple(r.get("keywords", ()))), r["id"]
    assert masker.scanner.stream_guard.full_window == ()


def _assert_prefixes_live(guard: StreamGuard, text: str, ms: int, me: int, what: str) -> None:
    """Every text that ends inside (or at the end of) the match [ms, me) must be held from ms."""
    for k in range(ms + 1, me + 1):
        data = text[:k].encode("utf-8", "replace")
        live = len(data[: guard.live_start(data)].decode("utf-8", "replace"))
        assert live <= ms, f"{what}: text cut at {k} released up to {live}, but a match starts at {ms}"


def test_prefix_patterns_accept_every_prefix_of_every_corpus_match():
    """For each rule of the pack and each of its matches in the corpus (whether or not the
    scanner accepts it as a secret), every prefix of the match is judged live."""
    guards = {r["id"]: StreamGuard(parse_masking(None).scanner.rules[i : i + 1]) for i, r in enumerate(PACK)}
    for r in PACK:
        rx = compile_pattern(r["pattern"])
        guard = guards[r["id"]]
        for row in CORPUS:
            text = row["text"]
            pos = 0
            while (m := rx.search(text, pos)) is not None:
                _assert_prefixes_live(guard, text, m.start(), m.end(), f"{r['id']} in {row['id']}")
                pos = m.start() + 1


# Generated patterns: small RE2 syntax over a small alphabet, so that random texts match.
_ATOMS = ["a", "b", "-", r"\.", "[ab]", "[^a]", ".", r"\w", r"\s", "[a-b_]", r"\x61", r"\pL"]
_ASSERTS = ["^", "$", r"\b", r"\B", r"\A", r"\z"]


@st.composite
def patterns(draw, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["atom", "atom", "assert", "cat", "alt", "rep", "group", "flags"]))
    if depth > 3 and kind not in ("atom", "assert"):
        kind = "atom"
    if kind == "atom":
        return draw(st.sampled_from(_ATOMS))
    if kind == "assert":
        return draw(st.sampled_from(_ASSERTS))
    if kind == "cat":
        return "".join(draw(st.lists(patterns(depth + 1), min_size=2, max_size=4)))
    if kind == "alt":
        return "(?:" + "|".join(draw(st.lists(patterns(depth + 1), min_size=2, max_size=3))) + ")"
    if kind == "group":
        return draw(st.sampled_from(["(", "(?P<g>", "(?:"])) + draw(patterns(depth + 1)) + ")"
    if kind == "flags":
        inner = draw(patterns(depth + 1))
        flag = draw(st.sampled_from(["(?i)", "(?U)", "(?i:", "(?s:", "(?-i:"]))
        return flag + inner + ("" if flag.endswith(")") else ")")
    inner = draw(patterns(depth + 1))
    q = draw(st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}", "*?", "{1,3}?"]))
    return f"(?:{inner}){q}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns(), st.text(alphabet="aAbB-._ \n", min_size=1, max_size=24))
def test_prefix_patterns_accept_every_prefix_of_generated_matches(pattern, text):
    try:
        rx = compile_pattern(pattern)
    except re2.error:
        return  # not RE2 (the rule would be refused when the policy is read)
    pp = match_prefix_pattern(pattern)
    assert pp is not None, pattern  # every construct generated here is one the derivation reads
    guard_rx = compile_pattern(f"(?:{pp})\\z")
    for start in range(len(text) + 1):
        m = rx.search(text, start)
        if m is None:
            break
        for k in range(m.start(), m.end() + 1):
            live = guard_rx.search(text[:k])
            assert live is not None and live.start() <= m.start(), (pattern, text, m.span(), k)


@pytest.mark.parametrize(
    "pattern",
    [r"\Qa.b\E", r"a\1", r"\C", r"(?=x)", r"\G", r"(?P=n)"],
)
def test_syntax_the_derivation_does_not_read_gives_none(pattern):
    assert match_prefix_pattern(pattern) is None


def test_keywords_a_match_spells_out():
    assert keywords_in_every_match(r"(?i)pass(?:word)?\s*=\s*(\S+)", ("pass",))
    assert keywords_in_every_match(r"(?:api[_.-]?key|token)=(\w+)", ("key", "token"))
    assert not keywords_in_every_match(r"(?:api[_.-]?key|\w+)=(\w+)", ("key",))  # one branch lacks it
    assert not keywords_in_every_match(r"[0-9a-f]{32}", ("mytoken",))  # keyword elsewhere in the text
    assert keywords_in_every_match(r"(?:xtoken)+", ("token",))
    assert not keywords_in_every_match(r"(?:xtoken)*", ("token",))  # may be absent


# --------------------------------------------------------------------------------------------
# What is released, and when
# --------------------------------------------------------------------------------------------


def test_prose_is_released_delta_by_delta(masker):
    """Only what could still begin a secret is held: the last word, never more than a word
    and the character before it."""
    rng = random.Random(7)
    words = "the config loader reads each file once and keeps the result keyed by path".split()
    text = " ".join(rng.choice(words) for _ in range(300)) + "."
    ts = masker.text_stream("w")
    got = []
    for i in range(0, len(text), 4):
        got.append(ts.push(text[i : i + 4]))
        tail = text[: i + 4]
        last_word = len(tail) - max(tail.rfind(" "), 0)
        assert ts.pending <= last_word, (tail[-20:], ts.pending)
    got.append(ts.flush())
    assert "".join(got) == text
    assert sum(1 for g in got if g) > len(got) * 0.6  # most deltas release something


def test_a_token_prefix_is_held_until_the_token_is_decided(masker):
    s = fake_secret("github-pat", random.Random(3))
    ts = masker.text_stream("w")
    assert ts.push("Use gh") == "Use"
    assert ts.push("p_") == ""
    out = "Use"
    for i in range(4, len(s), 5):
        out += ts.push(s[i : i + 5])
        assert "ghp_" not in out
    out += ts.push(" now") + ts.flush()
    assert out == masker.mask_text("Use " + s + " now")[0]


def test_adjacent_tokens_are_both_masked(masker):
    """The character between two secrets ends the first and begins the second: buffered and
    streamed masking both find the second."""
    rng = random.Random(4)
    a, b = fake_secret("github-pat", rng), fake_secret("github-pat", rng)
    text = f"x {a} {b} y"
    whole = masker.mask_text(text)[0]
    assert not survives(a, whole) and not survives(b, whole)
    for cuts in ([], list(range(0, len(text), 3)), [len(text) // 2]):
        assert stream(masker, text, cuts)[0] == whole


PAD = "Lorem ipsum dolor sit amet, " * 2  # longer than the context a scan sees again


@pytest.mark.parametrize(
    "text",
    [
        # stream found a match inside the whole text's first step: masked `token:`, whole did not
        PAD + "password = password = token: token: token: ",
        # stream stepped over the match the whole text finds: `hunter13xy` left in clear
        PAD + "password = password = password = hunter13xy and more",
        "DB_PASSWORD=KgPLKpCmNAfSjJx4\npassword = password = password = hunter13xyxé日🔑 é日🔑 x",
        PAD + 'pass = q.-pass="hunter22" pass = password = x.pass=hunter33yz ',
    ],
)
def test_overlapping_candidates_stream_like_the_whole_text(masker, text):
    """A rule's scan steps from match to match, so where a scan starts decides which
    overlapping candidates it sees; the stream starts each scan where the whole text's scan
    would be too (outside its steps), whatever the split."""
    whole = masker.mask_text(text)[0]
    for cut in range(1, len(text)):
        assert stream(masker, text, [cut])[0] == whole, cut
    for step in range(1, 8):
        assert stream(masker, text, list(range(step, len(text), step)))[0] == whole, step


OVERLAP_BITS = [
    "password = ",
    "pass=",
    "DB_PASSWORD=",
    "token: ",
    "api_key = ",
    "password",
    "hunter22xy",
    "q.",
    "...-",
    '"',
    " ",
    "\n",
    "é日 ",
    "Lorem ipsum dolor sit amet, ",
]


@st.composite
def overlapping_text_and_cuts(draw):
    """Bits that make one rule's candidates overlap (a value that is the next name), secrets."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    parts = []
    for _ in range(rng.randint(1, 14)):
        if rng.random() < 0.25:
            parts.append(fake_secret(rng.choice(["github-pat", "stripe-secret-key", "npm-token"]), rng))
        else:
            parts.append(rng.choice(OVERLAP_BITS) * rng.randint(1, 3))
    text = "".join(parts)
    step = draw(st.integers(1, 12))
    cuts = sorted(
        set(draw(st.lists(st.integers(1, max(len(text) - 1, 1)), max_size=30)) + list(range(step, len(text), step)))
    )
    return text, cuts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overlapping_text_and_cuts())
def test_overlapping_candidates_split_any_way_stream_like_the_whole_text(case):
    """Assignments whose values are names of other assignments, secrets glued to keywords:
    in any split, the streamed text is the whole text's masking."""
    text, cuts = case
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    assert stream(masker, text, cuts)[0] == masker.mask_text(text)[0]


@st.composite
def corpus_text_and_cuts(draw):
    rows = draw(st.lists(st.sampled_from(CORPUS), min_size=1, max_size=4))
    seps = [draw(st.sampled_from([" ", "\n", "\n\n", ". "])) for _ in rows]  # glued, a secret is not one
    text = "".join(r["text"] + s for r, s in zip(rows, seps, strict=True))
    secrets = [s for r in rows for s in r["secrets"]]
    n = len(text)
    if draw(st.booleans()):
        step = draw(st.integers(1, 9))
        cuts = list(range(step, n, step))
    else:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=60))))
    return text, secrets, cuts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus_text_and_cuts(), st.sampled_from([64, 256]))
def test_corpus_secrets_split_any_way_stream_like_the_whole_text(case, hold_back):
    """The labelled corpus's secrets, in any split: the streamed text is the whole text's
    masking, and no secret gets through, not even in the releases before the end."""
    text, secrets, cuts = case
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    out, released = stream(masker, text, cuts, hold_back)
    assert out == masker.mask_text(text)[0]
    for s in secrets:
        assert not survives(s, out), s


# --------------------------------------------------------------------------------------------
# Rules the guard cannot judge: the fixed window
# --------------------------------------------------------------------------------------------


def test_a_rule_with_a_keyword_elsewhere_keeps_the_window():
    """A user rule whose keyword need not be in the match: the keyword may come after the
    secret, so text is held `hold_back_chars` behind, and the stream still equals the whole."""
    policy = rules_only('[[masking.rules]]\nid = "hex"\npattern = "[0-9a-f]{32}"\nkeywords = ["mytoken"]\n')
    masker = Masker(policy, FINGERPRINT_KEY)
    assert masker.scanner.stream_guard.full_window == ("hex",)
    secret = "".join(random.Random(1).choice("0123456789abcdef") for _ in range(32))
    text = f"value {secret} is the mytoken of the build, see the log for details."
    whole = masker.mask_text(text)[0]
    assert "[MASKED:hex:" in whole
    out, released = stream(masker, text, list(range(0, len(text), 4)), hold_back=128)
    assert out == whole and secret not in out


def test_a_pattern_the_guard_cannot_read_keeps_the_window():
    policy = rules_only("[[masking.rules]]\nid = \"quoted\"\npattern = '\\QTKN.\\E[A-Z]{12}'\n")
    masker = Masker(policy, FINGERPRINT_KEY)
    assert masker.scanner.stream_guard.full_window == ("quoted",)
    ts = masker.text_stream("w", 64)
    assert ts.push("x" * 40 + " ") == ""  # within the window: held, as before
    text = "x" * 40 + " " + "TKN." + "ABCDEFGHIJKL" + " and then some more text" * 5
    out, _ = stream(masker, text, list(range(0, len(text), 3)), hold_back=64)
    assert out == masker.mask_text(text)[0] and "ABCDEFGHIJKL" not in out


def test_mixed_rules_hold_no_more_than_the_window(masker):
    """A user rule with any pattern and no keyword: the guard reads it, so it costs nothing."""
    policy = rules_only(
        "[[masking.rules]]\nid = \"emp\"\npattern = '(?i)\\bEMP-[0-9]{6}\\b'\n"
        "[[masking.rules]]\nid = \"any\"\npattern = '[A-Z]{3}_(\\w+)'\n"
    )
    m = Masker(policy, FINGERPRINT_KEY)
    assert m.scanner.stream_guard.full_window == ()
    text = "ticket emp-123456 and ABC_secretvalue here " + string.ascii_lowercase
    for step in (1, 2, 5):
        assert stream(m, text, list(range(0, len(text), step)))[0] == m.mask_text(text)[0]
