"""The [masking] section and the rule packs it names: defaults, keys, validation errors with
file and key, packs by name or path, rules that replace or disable others."""

from __future__ import annotations

import pytest

from gatehouse.masking.config import DEFAULT_HOLD_BACK_CHARS, load_pack
from gatehouse.policy.reader import PolicyError
from support.secrets import FORMAT_KINDS, masking_section, rule_ids, rules_only

# --------------------------------------------------------------------------------------------
# Defaults and the built-in pack
# --------------------------------------------------------------------------------------------


def test_absent_section_means_builtin_pack_on(builtin):
    assert builtin.enabled
    assert builtin.packs == ("secrets",)
    assert builtin.hold_back_chars == DEFAULT_HOLD_BACK_CHARS
    assert builtin.on_unparseable == "refuse"
    assert builtin.fingerprint_secret_env is None
    expected = set(FORMAT_KINDS) | {
        "private-key",
        "aws-secret-access-key",
        "azure-storage-key",
        "slack-webhook-url",
        "database-url-password",
        "password-assignment",
    }
    assert expected <= set(builtin.rule_ids)


def test_empty_section_equals_defaults(builtin):
    pol = masking_section("[masking]\n")
    assert pol == builtin
    assert pol.rule_ids == builtin.rule_ids


def test_builtin_pack_found_through_importlib_resources():
    rules = load_pack("secrets")
    assert len(rules) >= 30
    assert all(r.regex is not None for r in rules)


# --------------------------------------------------------------------------------------------
# The [masking] section
# --------------------------------------------------------------------------------------------


def test_section_keys(tmp_path):
    pol = masking_section(
        """
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
""",
        tmp_path,
    )
    assert "jwt" not in pol.rule_ids and "generic-secret" not in pol.rule_ids
    assert pol.rule_ids[-1] == "acme-key"
    assert pol.hold_back_chars == 512
    assert pol.fingerprint_secret_env == "GATEHOUSE_FINGERPRINT_SECRET"
    assert pol.on_unparseable == "forward"
    assert pol.allowlist.patterns == ("^test-",) and pol.allowlist.stopwords == ("dummy",)
    hits = pol.scanner.scan("use acme_" + "0123456789abcdef" * 2 + " here")
    assert rule_ids(hits) == ["acme-key"]


def test_no_rules_means_masking_off():
    pol = rules_only()
    assert not pol.enabled
    assert pol.scanner.scan("AKIA" + "A" * 16) == []


@pytest.mark.parametrize(
    "body, key, words",
    [
        (
            '[[masking.rules]]\nid = "bad"\npattern = "(unclosed"\n',
            "masking.rules[0].pattern",
            ["'bad'", "invalid RE2"],
        ),
        ('[[masking.rules]]\nid = "look"\npattern = "(?<=x)y"\n', "masking.rules[0].pattern", ["'look'"]),
        ('[[masking.rules]]\nid = "empty"\npattern = "a*"\n', "masking.rules[0].pattern", ["empty string"]),
        ('[[masking.rules]]\nid = "Bad Id"\npattern = "x"\n', "masking.rules[0].id", ["lower-case"]),
        (
            '[[masking.rules]]\nid = "g"\npattern = "(x)"\nsecret_group = 2\n',
            "masking.rules[0].secret_group",
            ["1 capture"],
        ),
        (
            '[[masking.rules]]\nid = "k"\npattern = "x"\nkeywrods = ["x"]\n',
            "masking.rules[0].keywrods",
            ["unknown key"],
        ),
        (
            '[[masking.rules]]\nid = "a"\npattern = "x"\nallowlist.patterns = ["("]\n',
            "masking.rules[0].allowlist.patterns[0]",
            ["invalid RE2"],
        ),
        (
            '[[masking.rules]]\nid = "d"\npattern = "x"\n[[masking.rules]]\nid = "d"\npattern = "y"\n',
            "masking.rules[1].id",
            ["duplicate"],
        ),
        ('[masking]\ndisable = ["no-such-rule"]\n', "masking.disable[0]", ["no rule 'no-such-rule'"]),
        ('[masking]\non_unparseable = "drop"\n', "masking.on_unparseable", ["refuse", "forward"]),
        ("[masking]\nhold_back_chars = 3\n", "masking.hold_back_chars", ["at least"]),
        ('[masking]\npacks = ["../../etc/passwd"]\n', "", ["cannot read rule pack"]),
        ('[masking]\npacks = ["No Such"]\n', "masking.packs[0]", ["built-in name"]),
        (
            '[masking]\nfingerprint_secret_env = "not a name"\n',
            "masking.fingerprint_secret_env",
            ["environment variable"],
        ),
        ("[masking]\nenabled = true\n", "masking.enabled", ["unknown key"]),
    ],
)
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
    pol = masking_section(
        """
[[masking.rules]]
id = "aws-access-key-id"
description = "only the long-term kind"
pattern = '''\\b(AKIA[A-Z0-9]{16})\\b'''
""".replace("[[masking.rules]]", "[masking]\n[[masking.rules]]", 1)
    )
    assert pol.rule_ids.count("aws-access-key-id") == 1
    assert pol.scanner.scan("ASIA" + "B" * 16) == []
    assert rule_ids(pol.scanner.scan("AKIA" + "B" * 16)) == ["aws-access-key-id"]


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
    assert rule_ids(pol.scanner.scan("id ACME-" + "1" * 20)) == ["acme-token"]


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
    p.write_text("[masking]\nhold_back = 300\n")
    with pytest.raises(PolicyError, match=r"p.toml: masking.hold_back: unknown key"):
        load_policy(p)
