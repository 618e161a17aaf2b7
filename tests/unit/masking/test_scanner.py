"""The scanner: overlapping hits merged, character offsets, scanning from a position, and one
RE2 Set pass (not one per rule) in linear time."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.masking.config import parse_masking
from gatehouse.masking.rules import Hit
from gatehouse.masking.scanner import MASK_PREFIX, Scanner
from support.secrets import B64, random_chars, rules_only, secret_in_context


def test_overlapping_secrets_are_masked_as_one_union():
    pol = rules_only("""
[[masking.rules]]
id = "short"
pattern = '''AAA[0-9]{4}'''
[[masking.rules]]
id = "long"
pattern = '''[0-9]{4}BBBBBBBB'''
""")
    hits = pol.scanner.scan("x AAA1234BBBBBBBB y")
    assert len(hits) == 1
    h = hits[0]
    assert (h.start, h.end) == (2, 17) and h.rule.id == "long"


def test_offsets_are_characters_with_non_ascii_and_surrogates(builtin):
    secret = "AKIA" + "Q" * 16
    text = "Ünïcödé 🔑 " + secret + " 日本"
    [h] = builtin.scanner.scan(text)
    assert text[h.start : h.end] == secret
    # JSON lets a string carry a lone surrogate; scanning must not fail on it
    text2 = "\ud800 x " + secret
    [h2] = builtin.scanner.scan(text2)
    assert text2[h2.start : h2.end] == secret


def test_scan_from_pos_sees_context_and_min_end(builtin):
    secret = "ghp_" + "a1" * 18
    text = "xx " + secret + " yy " + secret
    assert len(builtin.scanner.scan(text)) == 2
    assert len(builtin.scanner.scan(text, pos=4)) == 1  # starts inside the first: \b fails there
    assert len(builtin.scanner.scan(text, min_end=len(secret) + 3)) == 1


def test_a_scan_from_inside_a_step_sees_other_matches_and_spans_say_where(builtin):
    """A rule's search steps from one match to the end of its secret: the rejected value
    ``password`` hides the match that begins at the second ``password``, so a scan from
    inside that step finds a match the whole text's scan does not (and could miss one it
    finds). `spans` names the steps; a scan from a position inside none of them finds
    exactly the whole text's hits from there on."""
    text = "Lorem ipsum dolor sit amet, password = password = token: and more"
    whole = [(h.rule.id, h.start, h.end) for h in builtin.scanner.scan(text)]
    assert whole == []  # the second `password` is the rejected value of the first match
    inside = text.index("password", 30) - 1  # the space before the second `password`
    assert [h.secret for h in builtin.scanner.scan(text, pos=inside)] == ["token:"]
    spans: list[tuple[int, int]] = []
    builtin.scanner.scan(text, spans=spans)
    assert any(ms < inside < resume for ms, resume in spans)
    for pos in range(len(text)):
        if not any(ms < pos < resume for ms, resume in spans):
            got = [(h.rule.id, h.start, h.end) for h in builtin.scanner.scan(text, pos=pos)]
            assert got == [w for w in whole if w[1] >= pos], pos


def test_spans_are_character_offsets(builtin):
    text = "é日🔑 password = hunter22x and ghp_" + "a1" * 18
    spans: list[tuple[int, int]] = []
    hits = builtin.scanner.scan(text, spans=spans)
    assert [h.secret for h in hits] == ["hunter22x", "ghp_" + "a1" * 18]
    assert (text.index(" password"), text.index(" and")) in spans


# --------------------------------------------------------------------------------------------
# One pass, not one per rule; linear time
# --------------------------------------------------------------------------------------------


def naive_scan(scanner: Scanner, text: str):
    """Every rule run on its own over the whole text: the reference for the RE2 Set. Each
    rule steps as the scanner does: the next search begins where the secret ends."""
    hits = []
    for rule in scanner.rules:
        if rule.keywords and not any(k in text.lower() for k in rule.keywords):
            continue
        at = 0
        while at <= len(text) and (m := rule.regex.search(text, at)) is not None:
            g = rule.secret_group
            if g is None:
                g = next((i for i in range(1, rule.groups + 1) if m.start(i) >= 0), 0)
            s, e = m.span(g)
            if s < 0 or e <= s:
                at = m.end() if m.end() > m.start() else m.start() + 1
                continue
            at = e
            secret = text[s:e]
            if scanner._accept(rule, secret, lambda m=m: m.group(0)):
                hits.append(Hit(rule, s, e, m.start(), m.end(), secret))
    return scanner.resolve(hits)


FRAGMENTS = [
    "password = ",
    "token: ",
    "AKIA",
    "sk-ant-",
    "-----BEGIN RSA PRIVATE KEY-----\n",
    "\n",
    " ",
    '"',
    "https://u:",
    "@db",
    "eyJ",
    ".",
    "xoxb-",
    "é",
    "日本",
    "=",
    "key=",
    "aws_secret_access_key = ",
]


@st.composite
def mixed_texts(draw):
    rng = random.Random(draw(st.integers(0, 2**32)))
    parts = []
    for _ in range(draw(st.integers(1, 12))):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            parts.append(secret_in_context(rng)[0])
        elif choice == 1:
            parts.append(draw(st.sampled_from(FRAGMENTS)))
        elif choice == 2:
            parts.append(random_chars(rng, B64 + " \n_-.", rng.randint(1, 80)))
        else:
            parts.append(draw(st.text(max_size=20)))
    return "".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed_texts())
def test_set_prefilter_finds_what_every_rule_alone_finds(text):
    scanner = parse_masking(None).scanner
    got = [(h.rule.id, h.start, h.end) for h in scanner.scan(text)]
    want = [(h.rule.id, h.start, h.end) for h in naive_scan(scanner, text)]
    assert got == want


@pytest.mark.parametrize(
    "name, text",
    [
        ("repeated prefixes", "AKIA" * 250_000),
        ("key block without END", "-----BEGIN RSA PRIVATE KEY-----\n" + ("QUJD" * 16 + "\n") * 15_000),
        ("BEGIN markers only", "-----BEGIN RSA PRIVATE KEY-----\nMIIE" * 28_000),
        ("assignments without values", "password=" * 110_000),
        ("JWT-like fragments", "eyJhbGciOiJIUzI1NiJ9.eyJ" * 40_000),
        ("URL userinfo", ("postgres://u:" + "p" * 50 + "@") * 15_000),
        ("base64", "".join(random.Random(1).choices(B64, k=1_000_000))),
    ],
)
def test_hostile_megabyte_scans_in_linear_time(builtin, name, text):
    t = time.perf_counter()
    builtin.scanner.scan(text)
    elapsed = time.perf_counter() - t
    # RE2 is linear; generous bound for slow CI machines (typically 2-200 ms here).
    assert elapsed < 5.0, f"{name}: {elapsed:.2f}s"


def test_mask_prefix_constant_matches_replacement_format():
    assert MASK_PREFIX == "[MASKED:"
