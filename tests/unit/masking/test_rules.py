"""The rule engine: the rule model, packs, the [masking] section, and RE2 scanning.

`fake_secret(kind, rng)` builds synthetic credentials at run time (nothing secret-shaped is
written in this repository); the other masking tests import it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.policy.reader import PolicyError
from gatehouse.masking.rules import (
    DEFAULT_HOLD_BACK_CHARS,
    MASK_PREFIX,
    Allowlist,
    Scanner,
    load_pack,
    make_allowlist,
    parse_masking,
    shannon_entropy,
)
from support.secrets import B64, FORMAT_KINDS, random_chars, fake_secret, masking_section, secret_in_context

REPO = Path(__file__).resolve().parents[3]

# --------------------------------------------------------------------------------------------
# Synthetic secrets
# --------------------------------------------------------------------------------------------















# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------




def ids(hits) -> list[str]:
    return [h.rule.id for h in hits]


@pytest.fixture(scope="module")
def builtin():
    return parse_masking(None)


# --------------------------------------------------------------------------------------------
# Defaults and the built-in pack
# --------------------------------------------------------------------------------------------


def test_absent_section_means_builtin_pack_on(builtin):
    assert builtin.enabled
    assert builtin.packs == ("secrets",)
    assert builtin.hold_back_chars == DEFAULT_HOLD_BACK_CHARS
    assert builtin.on_unparseable == "refuse"
    assert builtin.fingerprint_secret_env is None
    expected = set(FORMAT_KINDS) | {"private-key", "aws-secret-access-key", "azure-storage-key", "slack-webhook-url",
                                    "database-url-password", "password-assignment"}
    assert expected <= set(builtin.rule_ids)


def test_empty_section_equals_defaults(builtin):
    pol = masking_section("[masking]\n")
    assert pol == builtin
    assert pol.rule_ids == builtin.rule_ids


def test_every_builtin_rule_documents_its_format(builtin):
    for rule in builtin.rules:
        assert len(rule.description) >= 30, rule.id
        assert "secrets.toml: rules[" in rule.source, rule.source


def test_builtin_pack_found_through_importlib_resources():
    rules = load_pack("secrets")
    assert len(rules) >= 30
    assert all(r.regex is not None for r in rules)


@pytest.mark.parametrize("kind", FORMAT_KINDS)
def test_each_format_is_found_and_named(builtin, kind):
    rng = random.Random(kind)
    for _ in range(20):
        secret = fake_secret(kind, rng)
        text = f"config: {secret} (do not share)"
        hits = builtin.scanner.scan(text)
        assert [(h.rule.id, h.secret) for h in hits] == [(kind, secret)], text


def test_context_kinds_are_found(builtin):
    rng = random.Random(11)
    for _ in range(300):
        text, secret, kind = secret_in_context(rng)
        hits = builtin.scanner.scan(text)
        assert any(h.rule.id == kind and secret in text[h.start:h.end] for h in hits), (kind, text)


@pytest.mark.parametrize("text", [
    "password = os.environ['DB_PASSWORD']",
    "password = self.password",
    "const password = process.env.DB_PASSWORD;",
    "password: ${{ secrets.DB_PASSWORD }}",
    "api_key = get_secret('payments/stripe')  # fetched at runtime",
    "token: ${{ secrets.NPM_TOKEN }}",
    'request_id = "f217a317-5013-482e-2f25-05e1afd21b14"',
    "https://user:${DB_PASSWORD}@db.example.com/x",
    "postgres://app:<password>@localhost/db",
    "AKIAIOSFODNN7EXAMPLE",
    "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in your environment before running.",
    "A key file starts with -----BEGIN RSA PRIVATE KEY----- and ends with -----END RSA PRIVATE KEY-----.",
    "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",
    "sha256:b7ae17c6bab4e222dd6a9ff5b9c5959442a218ebb214eb95c6977fd42cec23b1  dist/app.tar.gz",
    "pwd = '/home/dev/project'",
    "password = '********'",
])
def test_near_misses_are_not_secrets(builtin, text):
    assert builtin.scanner.scan(text) == [], text


def test_masked_text_is_never_a_secret_again(builtin):
    for text in ['password = "[MASKED:password-assignment:0a1b2c]"', "token: [MASKED:github-pat:0a1b2c]",
                 "DB_PASSWORD=[MASKED:password-assignment:0a1b2c]"]:
        assert builtin.scanner.scan(text) == []


# --------------------------------------------------------------------------------------------
# The [masking] section
# --------------------------------------------------------------------------------------------


def test_section_keys(tmp_path):
    pol = masking_section("""
[masking]
packs = ["secrets"]
disable = ["jwt", "generic-secret"]
hold_back_chars = 512
fingerprint_secret_env = "GATEHOUSE_FINGERPRINT_SECRET"
on_unparseable = "forward"
allowlist = { patterns = ['^test-'], stopwords = ["dummy"] }

[[masking.rules]]
id = "acme-key"
description = "ACME internal API key: acme_ + 32 hex"
pattern = '''\\b(acme_[0-9a-f]{32})\\b'''
keywords = ["acme_"]
""", tmp_path)
    assert "jwt" not in pol.rule_ids and "generic-secret" not in pol.rule_ids
    assert pol.rule_ids[-1] == "acme-key"
    assert pol.hold_back_chars == 512
    assert pol.fingerprint_secret_env == "GATEHOUSE_FINGERPRINT_SECRET"
    assert pol.on_unparseable == "forward"
    assert pol.allowlist.patterns == ("^test-",) and pol.allowlist.stopwords == ("dummy",)
    hits = pol.scanner.scan("use acme_" + "0123456789abcdef" * 2 + " here")
    assert ids(hits) == ["acme-key"]


def test_no_rules_means_masking_off():
    pol = masking_section("[masking]\npacks = []\n")
    assert not pol.enabled
    assert pol.scanner.scan("AKIA" + "A" * 16) == []


@pytest.mark.parametrize("body, key, words", [
    ('[[masking.rules]]\nid = "bad"\npattern = "(unclosed"\n', "masking.rules[0].pattern", ["'bad'", "invalid RE2"]),
    ('[[masking.rules]]\nid = "look"\npattern = "(?<=x)y"\n', "masking.rules[0].pattern", ["'look'"]),
    ('[[masking.rules]]\nid = "empty"\npattern = "a*"\n', "masking.rules[0].pattern", ["empty string"]),
    ('[[masking.rules]]\nid = "Bad Id"\npattern = "x"\n', "masking.rules[0].id", ["lower-case"]),
    ('[[masking.rules]]\nid = "g"\npattern = "(x)"\nsecret_group = 2\n', "masking.rules[0].secret_group", ["1 capture"]),
    ('[[masking.rules]]\nid = "k"\npattern = "x"\nkeywrods = ["x"]\n', "masking.rules[0].keywrods", ["unknown key"]),
    ('[[masking.rules]]\nid = "a"\npattern = "x"\nallowlist.patterns = ["("]\n',
     "masking.rules[0].allowlist.patterns[0]", ["invalid RE2"]),
    ('[[masking.rules]]\nid = "d"\npattern = "x"\n[[masking.rules]]\nid = "d"\npattern = "y"\n',
     "masking.rules[1].id", ["duplicate"]),
    ('[masking]\ndisable = ["no-such-rule"]\n', "masking.disable[0]", ["no rule 'no-such-rule'"]),
    ('[masking]\non_unparseable = "drop"\n', "masking.on_unparseable", ["refuse", "forward"]),
    ('[masking]\nhold_back_chars = 3\n', "masking.hold_back_chars", ["at least"]),
    ('[masking]\npacks = ["../../etc/passwd"]\n', "", ["cannot read rule pack"]),
    ('[masking]\npacks = ["No Such"]\n', "masking.packs[0]", ["built-in name"]),
    ('[masking]\nfingerprint_secret_env = "not a name"\n', "masking.fingerprint_secret_env", ["environment variable"]),
    ('[masking]\nenabled = true\n', "masking.enabled", ["unknown key"]),
])
def test_invalid_sections_are_refused_with_file_and_key(tmp_path, body, key, words):
    text = body if body.startswith("[masking]") else "[masking]\n" + body
    with pytest.raises(PolicyError) as e:
        masking_section(text, tmp_path)
    msg = str(e.value)
    if key:
        assert f"policy.toml: {key}:" in msg
    for w in words:
        assert w in msg


def test_policy_rule_replaces_builtin_rule_of_same_id(builtin):
    pol = masking_section("""
[[masking.rules]]
id = "aws-access-key-id"
description = "only the long-term kind"
pattern = '''\\b(AKIA[A-Z0-9]{16})\\b'''
""".replace("[[masking.rules]]", "[masking]\n[[masking.rules]]", 1))
    assert pol.rule_ids.count("aws-access-key-id") == 1
    assert pol.scanner.scan("ASIA" + "B" * 16) == []
    assert ids(pol.scanner.scan("AKIA" + "B" * 16)) == ["aws-access-key-id"]


def test_custom_pack_relative_to_policy(tmp_path):
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "acme.toml").write_text("""
description = "ACME"
[[rules]]
id = "acme-token"
description = "ACME token: ACME- + 20 digits"
pattern = '''ACME-[0-9]{20}'''
""")
    pol = masking_section('[masking]\npacks = ["secrets", "packs/acme.toml"]\n', tmp_path)
    assert "acme-token" in pol.rule_ids and "jwt" in pol.rule_ids
    assert ids(pol.scanner.scan("id ACME-" + "1" * 20)) == ["acme-token"]


def test_invalid_pack_names_pack_file_and_rule(tmp_path):
    (tmp_path / "bad.toml").write_text('[[rules]]\nid = "broken"\npattern = "[z-a]"\n')
    with pytest.raises(PolicyError) as e:
        masking_section('[masking]\npacks = ["bad.toml"]\n', tmp_path)
    assert "bad.toml: rules[0].pattern: rule 'broken'" in str(e.value)


def test_policy_loader_uses_parse_masking(tmp_path):
    from gatehouse.policy.loader import load_policy

    p = tmp_path / "p.toml"
    p.write_text('[masking]\ndisable = ["jwt"]\nhold_back_chars = 300\n')
    policy = load_policy(p)
    assert policy.masking.hold_back_chars == 300 and "jwt" not in policy.masking.rule_ids
    p.write_text('[masking]\nhold_back = 300\n')
    with pytest.raises(PolicyError, match=r"p.toml: masking.hold_back: unknown key"):
        load_policy(p)


# --------------------------------------------------------------------------------------------
# Rule semantics
# --------------------------------------------------------------------------------------------


def custom(rules_toml: str, allowlist: str = ""):
    return masking_section("[masking]\npacks = []\n" + allowlist + rules_toml)


def test_secret_is_first_participating_group_or_whole_match():
    pol = custom("""
[[masking.rules]]
id = "alt"
pattern = '''key=(?:"([a-z]{6,})"|([0-9]{6,}))'''
[[masking.rules]]
id = "whole"
pattern = '''TOK-[0-9]{8}'''
[[masking.rules]]
id = "explicit"
pattern = '''(user)=(\\w{6,})'''
secret_group = 2
""")
    s = pol.scanner
    assert [h.secret for h in s.scan('key="abcdefg"')] == ["abcdefg"]
    assert [h.secret for h in s.scan("key=1234567")] == ["1234567"]
    assert [h.secret for h in s.scan("TOK-12345678")] == ["TOK-12345678"]
    assert [h.secret for h in s.scan("user=hunter22")] == ["hunter22"]


def test_keywords_gate_a_rule():
    pol = custom("""
[[masking.rules]]
id = "kw"
pattern = '''\\b[0-9a-f]{32}\\b'''
keywords = ["Secret"]
""")
    hexv = "0123456789abcdef" * 2
    assert pol.scanner.scan(f"commit {hexv}") == []
    assert ids(pol.scanner.scan(f"SECRET: {hexv}")) == ["kw"]


def test_min_entropy():
    pol = custom("""
[[masking.rules]]
id = "ent"
pattern = '''tok=([A-Za-z0-9]{20})'''
min_entropy = 3.5
""")
    assert pol.scanner.scan("tok=" + "a" * 20) == []
    assert ids(pol.scanner.scan("tok=" + "aB3dE6gH9jK2mN5pQ8sT")) == ["ent"]
    assert shannon_entropy("") == 0 and shannon_entropy("ab") == 1.0


def test_allowlists_rule_and_global():
    rules = """
[[masking.rules]]
id = "tok"
pattern = '''(?:^|\\s)(?:id|key)=(T-[a-z0-9]{8})'''
allowlist = { patterns = ['^T-0000'], stopwords = ["dead"] }
"""
    pol = custom(rules, 'allowlist = ["(?i)^t-test"]\n')
    s = pol.scanner
    assert ids(s.scan("key=T-abcd1234")) == ["tok"]
    assert s.scan("key=T-0000abcd") == []  # rule allowlist pattern
    assert s.scan("key=T-deadbeef") == []  # rule stopword
    assert s.scan("key=T-test1234") == []  # global allowlist (array form)
    # target = "match": the pattern sees the context too
    pol2 = custom(rules.replace("allowlist = { patterns = ['^T-0000'], stopwords = [\"dead\"] }",
                                "allowlist = { patterns = ['^\\s*id='], target = \"match\" }"))
    assert pol2.scanner.scan(" id=T-abcd1234") == []
    assert ids(pol2.scanner.scan(" key=T-abcd1234")) == ["tok"]


def test_allowlist_flags_stay_inside_each_pattern():
    al = make_allowlist(["(?i)abc", "^XyZ$"])
    assert al.allows("ABC", "") and al.allows("XyZ", "")
    assert not al.allows("xyz", "")
    assert not Allowlist().allows("anything", "")


def test_overlapping_secrets_are_masked_as_one_union():
    pol = custom("""
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
    assert text[h.start:h.end] == secret
    # JSON lets a string carry a lone surrogate; scanning must not fail on it
    text2 = "\ud800 x " + secret
    [h2] = builtin.scanner.scan(text2)
    assert text2[h2.start:h2.end] == secret


def test_scan_from_pos_sees_context_and_min_end(builtin):
    secret = "ghp_" + "a1" * 18
    text = "xx " + secret + " yy " + secret
    assert len(builtin.scanner.scan(text)) == 2
    assert len(builtin.scanner.scan(text, pos=4)) == 1  # starts inside the first: \b fails there
    assert len(builtin.scanner.scan(text, min_end=len(secret) + 3)) == 1


# --------------------------------------------------------------------------------------------
# One pass, not one per rule; linear time
# --------------------------------------------------------------------------------------------


def naive_scan(scanner: Scanner, text: str):
    """Every rule run on its own over the whole text: the reference for the RE2 Set."""
    from gatehouse.masking.rules import Hit

    hits = []
    for rule in scanner.rules:
        if rule.keywords and not any(k in text.lower() for k in rule.keywords):
            continue
        for m in rule.regex.finditer(text):
            g = rule.secret_group
            if g is None:
                g = next((i for i in range(1, rule.groups + 1) if m.start(i) >= 0), 0)
            s, e = m.span(g)
            if s < 0 or e <= s:
                continue
            secret = text[s:e]
            if scanner._accept(rule, secret, lambda: m.group(0)):
                hits.append(Hit(rule, s, e, m.start(), m.end(), secret))
    return scanner.resolve(hits)


FRAGMENTS = ["password = ", "token: ", "AKIA", "sk-ant-", "-----BEGIN RSA PRIVATE KEY-----\n", "\n", " ", '"',
             "https://u:", "@db", "eyJ", ".", "xoxb-", "é", "日本", "=", "key=", "aws_secret_access_key = "]


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


@pytest.mark.parametrize("name, text", [
    ("repeated prefixes", "AKIA" * 250_000),
    ("key block without END", "-----BEGIN RSA PRIVATE KEY-----\n" + ("QUJD" * 16 + "\n") * 15_000),
    ("BEGIN markers only", "-----BEGIN RSA PRIVATE KEY-----\nMIIE" * 28_000),
    ("assignments without values", "password=" * 110_000),
    ("JWT-like fragments", "eyJhbGciOiJIUzI1NiJ9.eyJ" * 40_000),
    ("URL userinfo", ("postgres://u:" + "p" * 50 + "@") * 15_000),
    ("base64", "".join(random.Random(1).choices(B64, k=1_000_000))),
])
def test_hostile_megabyte_scans_in_linear_time(builtin, name, text):
    t = time.perf_counter()
    builtin.scanner.scan(text)
    elapsed = time.perf_counter() - t
    # RE2 is linear; generous bound for slow CI machines (typically 2-200 ms here).
    assert elapsed < 5.0, f"{name}: {elapsed:.2f}s"


def test_mask_prefix_constant_matches_replacement_format():
    assert MASK_PREFIX == "[MASKED:"


@pytest.mark.parametrize("kind", ["aws-access-key-id", "github-pat", "github-oauth-token", "github-app-token",
                                  "npm-token", "databricks-token", "shopify-token",
                                  "anthropic-api-key", "stripe-secret-key", "huggingface-token", "jwt"])
def test_a_secret_glued_to_an_underscore_is_still_found(kind):
    """`TOKEN_ghp_..._old`: an underscore is a word character, so a \\b boundary missed a secret
    pasted into an identifier or a bytes repr (b'a\\x00ghp_...'); the boundary is now 'not a
    letter or digit'. A letter or digit glued on still makes it another string."""
    from gatehouse.masking.masker import Masker
    masker = Masker(parse_masking(None), b"k" * 32)
    secret = fake_secret(kind, random.Random(5))
    for text in (f"TOKEN_{secret}_old", f"_{secret}", f"v={secret}_"):
        masked, found = masker.mask_text(text)
        assert secret not in masked and [f.rule for f in found] == [kind], (text, masked)


def test_the_gateways_own_hints_are_not_masked():
    """Refusals are masked before they leave (they may quote the caller); the gateway's own
    instructions must stay readable: `HTTPS_PROXY=http://gatehouse:TOKEN@HOST:PORT`."""
    from gatehouse.masking.masker import Masker
    from gatehouse.identity.tokens import HINT_NEW_TOKEN
    masker = Masker(parse_masking(None), b"k" * 32)
    assert masker.mask_text(HINT_NEW_TOKEN) == (HINT_NEW_TOKEN, [])


def test_any_sk_ant_shaped_value_is_masked_and_real_keys_keep_their_rule():
    """Found by the red-team pass: a caller's key of no known format went upstream in a body."""
    from gatehouse.masking.masker import Masker
    masker = Masker(parse_masking(None), b"k" * 32)
    _, found = masker.mask_text("key=sk-ant-caller-key-should-never-leave")
    assert [f.rule for f in found] == ["anthropic-key-like"]
    real = fake_secret("anthropic-api-key", random.Random(9))
    _, found = masker.mask_text(f"key={real}")
    assert [f.rule for f in found] == ["anthropic-api-key"]
    assert masker.mask_text("see sk-ant-api03-... in the docs")[1] == []
