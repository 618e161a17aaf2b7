"""TextStream: a text masked as it streams, like the whole text at once, with a bounded hold
(a match still growing at the hold limit is masked and its continuation swallowed)."""

from __future__ import annotations

import random
import re
import string
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker
from support.secrets import FINGERPRINT_KEY, fake_pem, fake_secret, secret_in_context, survives

TOKEN = re.compile(r"\[MASKED:([a-z0-9._-]+):([0-9a-f]{6})\]")


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
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    out, released = stream_pieces(masker, pieces)
    assert out == masker.mask_text(text)[0]
    assert not survives(s, "".join(released))


def test_stream_releases_text_once_no_secret_can_begin_in_it(masker):
    ts = masker.text_stream("w", 64)
    # Only the last word is held: it could still become ``wor_password = ...``.
    assert ts.push("Hello, wor") == "Hello,"
    assert ts.push("ld. The") == " world."
    assert ts.push(" end") == " The"
    assert ts.flush() == " end"
    # A run of word characters is held to its end, however long (up to the hold limit)...
    ts = masker.text_stream("w", 64)
    assert ts.push("a" * 40) == "" and ts.push("b" * 100) == ""
    assert ts.push(" next") == "a" * 40 + "b" * 100
    # ...and so is what could be a secret's context, until it is clearly not one.
    ts = masker.text_stream("w", 64)
    assert ts.push("my_pass") == ""
    assert ts.push("word is long; ") == "my_password is long;"


def test_stream_holds_private_key_until_end_marker(masker):
    rng = random.Random(6)
    pem = fake_pem(rng, "OPENSSH ", lines=40)
    text = "Here it is:\n" + pem + "\nKeep it safe." + " filler" * 100
    ts = masker.text_stream("w", 64)
    out = []
    for i in range(0, len(text), 7):
        out.append(ts.push(text[i : i + 7]))
        joined = "".join(out)
        assert "-----BEGIN" not in joined  # nothing of the block leaves before it is complete
    out.append(ts.flush())
    assert "".join(out) == masker.mask_text(text)[0]
    assert "[MASKED:private-key:" in "".join(out)


def test_stream_hold_is_bounded(masker):
    ts = masker.text_stream("w", 64, max_hold_chars=2000)
    ts.push("-----BEGIN RSA PRIVATE KEY-----\n")
    got = "".join(ts.push("QUJD" * 16 + "\n") for _ in range(100))
    assert got  # released after the bound instead of holding forever...
    assert TOKEN.fullmatch(got) and "private-key" in got  # ...masked, never in clear
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
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in pairwise(bounds)]
    out, _ = stream_pieces(masker, pieces, hold_back)
    want, found = masker.mask_text(text)
    # The promise (docs/masking.md): streamed equals buffered for every secret that fits the
    # hold-back window; a PEM private key is held to its END line whatever its length, so it
    # does not count against the window.
    longest = max((h.end - h.start for h in masker.scanner.scan(text) if h.rule.id != "private-key"), default=0)
    if longest <= hold_back - 64:
        assert out == want
    # Whatever the window, no secret that the whole-text masking catches survives whole.
    for h in masker.scanner.scan(text):
        assert text[h.start : h.end] not in out or h.end - h.start <= 12


# --------------------------------------------------------------------------------------------
# The hold limit: masked, then swallowed
# --------------------------------------------------------------------------------------------


def long_jwt(rng: random.Random, n: int) -> str:
    part = lambda k: "".join(rng.choice(string.ascii_letters + string.digits + "_-") for _ in range(k))
    return "eyJ" + part(20) + ".eyJ" + part(20) + "." + part(n)


def test_hold_limit_masks_a_long_token_and_swallows_its_tail(masker):
    rng = random.Random(14)
    jwt = long_jwt(rng, 3000)
    text = "Bearer " + jwt + " and the rest."
    ts = masker.text_stream("w", 128, max_hold_chars=500)
    out = []
    for i in range(0, len(text), 7):
        out.append(ts.push(text[i : i + 7]))
        assert ts.pending <= 500 + 7 and len(ts._buf) <= 1200
    out.append(ts.flush())
    got = "".join(out)
    assert TOKEN.sub("T", got) == "Bearer T and the rest."
    assert not survives(jwt, got) and ts.swallowed > 2000
    assert [f.rule for f in ts.findings] == ["jwt"]


def test_hold_limit_masks_an_open_private_key_and_swallows_to_its_end(masker):
    rng = random.Random(15)
    pem = fake_pem(rng, "OPENSSH ", lines=200)
    text = "key:\n" + pem + "\nafter"
    ts = masker.text_stream("w", 64, max_hold_chars=1000)
    out = [ts.push(text[i : i + 13]) for i in range(0, len(text), 13)]
    out.append(ts.flush())
    got = "".join(out)
    assert TOKEN.sub("T", got) == "key:\nT\nafter"
    assert TOKEN.sub("T", masker.mask_text(text)[0]) == "key:\nT\nafter"  # the buffered result, but the fingerprint
    # no END marker ever: everything after BEGIN is swallowed, memory stays bounded
    ts = masker.text_stream("w", 64, max_hold_chars=1000)
    got = ts.push("-----BEGIN PRIVATE KEY-----\n")
    for _ in range(2000):
        got += ts.push("QUJDRA" * 10 + "\n")
        assert len(ts._buf) < 1200 and len(ts._swallow_tail) <= 80
    got += ts.flush()
    assert TOKEN.fullmatch(got) and ts.swallowed > 100_000


LONG_KINDS = ["jwt", "pem", "pypi"]


@st.composite
def long_secret_texts(draw):
    rng = random.Random(draw(st.integers(0, 2**32)))
    n = draw(st.integers(300, 2500))
    kind = draw(st.sampled_from(LONG_KINDS))
    if kind == "jwt":
        secret = long_jwt(rng, n)
    elif kind == "pem":
        secret = fake_pem(rng, rng.choice(["RSA ", "EC ", ""]), lines=n // 64 + 1)
    else:
        secret = "pypi-AgEIcHlwaS5vcmc" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))
    before = draw(st.text(alphabet=st.sampled_from(list("ab c\n=:é")), max_size=300))
    after = draw(st.text(alphabet=st.sampled_from(list("ab c\n:é")), max_size=300))
    text = before + " " + secret + draw(st.sampled_from([" ", "\n", '"', ", "])) + after
    cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=80))))
    if draw(st.booleans()):
        cuts += list(range(0, len(text), draw(st.integers(1, 40))))
    return text, secret, sorted(set(cuts))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_secret_texts(), st.sampled_from([64, 128]), st.sampled_from([0, 300, 700]))
def test_long_matches_are_masked_and_streamed_like_buffered(case, hold_back, max_hold):
    """Secrets longer than the hold limit: nothing of them leaves, memory stays bounded, and
    the output is the buffered output up to the fingerprints."""
    text, secret, cuts = case
    masker = Masker(parse_masking(None), FINGERPRINT_KEY)
    bounds = [0, *cuts, len(text)]
    ts = masker.text_stream("w", hold_back, max_hold_chars=max_hold)
    out = []
    for a, b in pairwise(bounds):
        out.append(ts.push(text[a:b]))
        assert ts.pending <= ts.max_hold + (b - a) + 64
    out.append(ts.flush())
    got = "".join(out)
    for part in secret.split("\n"):
        if len(part) >= 16 and "PRIVATE KEY" not in part:
            assert part not in got
    assert not survives(secret, got) or "PRIVATE KEY" in secret
    want = masker.mask_text(text)[0]
    assert TOKEN.sub("T", got) == TOKEN.sub("T", want)
