"""The rules: the built-in pack finds each format it documents (and no near miss), and what a
rule's refinements mean (secret group, keywords, entropy, allowlists).

`fake_secret(kind, rng)` (tests/support/secrets.py) builds synthetic credentials at run time:
nothing secret-shaped is written in this repository.
"""

from __future__ import annotations

import random

import pytest

from gatehouse.masking.config import parse_masking
from gatehouse.masking.rules import Allowlist, make_allowlist, shannon_entropy
from support.secrets import FORMAT_KINDS, fake_secret, rule_ids, rules_only, secret_in_context

# --------------------------------------------------------------------------------------------
# The built-in pack
# --------------------------------------------------------------------------------------------


def test_every_builtin_rule_documents_its_format(builtin):
    for rule in builtin.rules:
        assert len(rule.description) >= 30, rule.id
        assert "secrets.toml: rules[" in rule.source, rule.source


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
        assert any(h.rule.id == kind and secret in text[h.start : h.end] for h in hits), (kind, text)


@pytest.mark.parametrize(
    "text",
    [
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
    ],
)
def test_near_misses_are_not_secrets(builtin, text):
    assert builtin.scanner.scan(text) == [], text


def test_masked_text_is_never_a_secret_again(builtin):
    for text in [
        'password = "[MASKED:password-assignment:0a1b2c]"',
        "token: [MASKED:github-pat:0a1b2c]",
        "DB_PASSWORD=[MASKED:password-assignment:0a1b2c]",
    ]:
        assert builtin.scanner.scan(text) == []


# --------------------------------------------------------------------------------------------
# Rule semantics
# --------------------------------------------------------------------------------------------


def test_secret_is_first_participating_group_or_whole_match():
    pol = rules_only("""
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
    pol = rules_only("""
[[masking.rules]]
id = "kw"
pattern = '''\\b[0-9a-f]{32}\\b'''
keywords = ["Secret"]
""")
    hexv = "0123456789abcdef" * 2
    assert pol.scanner.scan(f"commit {hexv}") == []
    assert rule_ids(pol.scanner.scan(f"SECRET: {hexv}")) == ["kw"]


def test_min_entropy():
    pol = rules_only("""
[[masking.rules]]
id = "ent"
pattern = '''tok=([A-Za-z0-9]{20})'''
min_entropy = 3.5
""")
    assert pol.scanner.scan("tok=" + "a" * 20) == []
    assert rule_ids(pol.scanner.scan("tok=" + "aB3dE6gH9jK2mN5pQ8sT")) == ["ent"]
    assert shannon_entropy("") == 0 and shannon_entropy("ab") == 1.0


def test_allowlists_rule_and_global():
    rules = """
[[masking.rules]]
id = "tok"
pattern = '''(?:^|\\s)(?:id|key)=(T-[a-z0-9]{8})'''
allowlist = { patterns = ['^T-0000'], stopwords = ["dead"] }
"""
    pol = rules_only(rules, 'allowlist = ["(?i)^t-test"]\n')
    s = pol.scanner
    assert rule_ids(s.scan("key=T-abcd1234")) == ["tok"]
    assert s.scan("key=T-0000abcd") == []  # rule allowlist pattern
    assert s.scan("key=T-deadbeef") == []  # rule stopword
    assert s.scan("key=T-test1234") == []  # global allowlist (array form)
    # target = "match": the pattern sees the context too
    pol2 = rules_only(
        rules.replace(
            "allowlist = { patterns = ['^T-0000'], stopwords = [\"dead\"] }",
            "allowlist = { patterns = ['^\\s*id='], target = \"match\" }",
        )
    )
    assert pol2.scanner.scan(" id=T-abcd1234") == []
    assert rule_ids(pol2.scanner.scan(" key=T-abcd1234")) == ["tok"]


def test_allowlist_flags_stay_inside_each_pattern():
    al = make_allowlist(["(?i)abc", "^XyZ$"])
    assert al.allows("ABC", "") and al.allows("XyZ", "")
    assert not al.allows("xyz", "")
    assert not Allowlist().allows("anything", "")


# --------------------------------------------------------------------------------------------
# Review findings: secrets glued to identifiers, the gateway's own hints, any sk-ant- value
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        "aws-access-key-id",
        "github-pat",
        "github-oauth-token",
        "github-app-token",
        "npm-token",
        "databricks-token",
        "shopify-token",
        "anthropic-api-key",
        "stripe-secret-key",
        "huggingface-token",
        "jwt",
    ],
)
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
    from gatehouse.identity.errors import HINT_NEW_TOKEN
    from gatehouse.masking.masker import Masker

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
