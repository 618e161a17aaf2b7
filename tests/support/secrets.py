"""Synthetic secrets for masking tests: random credentials of each format, checks on masked output,
and masking policies built from TOML text."""

from __future__ import annotations

import random
import string
import tomllib
from pathlib import Path

from gatehouse.masking.config import parse_masking
from gatehouse.policy.reader import Section

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"
HEX = "0123456789abcdef"

FORMAT_KINDS = [
    "aws-access-key-id",
    "github-pat",
    "github-oauth-token",
    "github-app-token",
    "github-fine-grained-pat",
    "gitlab-token",
    "slack-bot-token",
    "slack-user-token",
    "anthropic-api-key",
    "anthropic-admin-key",
    "openai-api-key",
    "stripe-secret-key",
    "google-api-key",
    "npm-token",
    "pypi-token",
    "sendgrid-api-key",
    "twilio-api-key",
    "vault-token",
    "huggingface-token",
    "databricks-token",
    "dockerhub-pat",
    "shopify-token",
    "jwt",
]

# The masker's fingerprint key in tests: fixed, so a secret's fingerprint is the same every run.
FINGERPRINT_KEY = b"test-fingerprint-key-0123456789ab"

# A fixed JWT-shaped token (EdDSA header, claims, a fake signature) for the log-redaction and
# error-page tests.
SAMPLE_JWT = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6ImdhdGVob3VzZS1kZXYifQ."
    "c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMDEyMzQ1Njc4OQ"
)


def random_chars(rng: random.Random, chars: str, n: int) -> str:
    return "".join(rng.choices(chars, k=n))


def fake_secret(kind: str, rng: random.Random) -> str:
    """A random credential of the given format (the rule id that should name it)."""
    r = lambda chars, n: random_chars(rng, chars, n)
    upper = string.ascii_uppercase + string.digits
    makers = {
        "aws-access-key-id": lambda: rng.choice(["AKIA", "ASIA"]) + r(upper, 16),
        "github-pat": lambda: "ghp_" + r(ALNUM, 36),
        "github-oauth-token": lambda: "gho_" + r(ALNUM, 36),
        "github-app-token": lambda: rng.choice(["ghu_", "ghs_"]) + r(ALNUM, 36),
        "github-fine-grained-pat": lambda: "github_pat_" + r(ALNUM, 22) + "_" + r(ALNUM, 59),
        "gitlab-token": lambda: "glpat-" + r(URLSAFE, 20),
        "slack-bot-token": lambda: "xoxb-" + r("0123456789", 12) + "-" + r("0123456789", 13) + "-" + r(ALNUM, 24),
        "slack-user-token": lambda: "xoxp-" + "-".join(r("0123456789", 12) for _ in range(3)) + "-" + r(HEX, 32),
        "anthropic-api-key": lambda: "sk-ant-api03-" + r(URLSAFE, 93) + "AA",
        "anthropic-admin-key": lambda: "sk-ant-admin01-" + r(URLSAFE, 93) + "AA",
        "openai-api-key": lambda: "sk-proj-" + r(URLSAFE, 60) + "T3Blbk" + "FJ" + r(URLSAFE, 60),
        "stripe-secret-key": lambda: rng.choice(["sk", "rk"]) + "_live_" + r(ALNUM, 24),
        "google-api-key": lambda: "AIza" + r(URLSAFE, 35),
        "npm-token": lambda: "npm_" + r(ALNUM, 36),
        "pypi-token": lambda: "pypi-AgEIcHlwaS5vcmc" + r(URLSAFE, 70),
        "sendgrid-api-key": lambda: "SG." + r(URLSAFE, 22) + "." + r(URLSAFE, 43),
        "twilio-api-key": lambda: "SK" + r(HEX, 32),
        "vault-token": lambda: "hvs." + r(URLSAFE, 90),
        "huggingface-token": lambda: "hf_" + r(string.ascii_letters, 33) + "Q",
        "databricks-token": lambda: "dapi" + r(HEX, 32),
        "dockerhub-pat": lambda: "dckr_pat_" + r(URLSAFE, 27),
        "shopify-token": lambda: "shpat_" + r(HEX, 32),
        "jwt": lambda: "eyJhbGciOiJIUzI1NiJ9." + "eyJ" + r(URLSAFE, 40) + "." + r(URLSAFE, 43),
    }
    return makers[kind]()


def fake_pem(rng: random.Random, kind: str = "RSA ", lines: int = 6, sep: str = "\n") -> str:
    body = sep.join(random_chars(rng, B64, 64) for _ in range(lines)) + sep + random_chars(rng, B64, 20) + "=="
    return f"-----BEGIN {kind}PRIVATE KEY-----{sep}{body}{sep}-----END {kind}PRIVATE KEY-----"


def secret_in_context(rng: random.Random) -> tuple[str, str, str]:
    """(text, secret, rule id): a random format in a random realistic context."""
    kind = rng.choice(
        FORMAT_KINDS
        + [
            "password-assignment",
            "database-url-password",
            "aws-secret-access-key",
            "azure-storage-key",
            "slack-webhook-url",
            "private-key",
        ]
    )
    if kind == "password-assignment":
        secret = random_chars(rng, ALNUM, 10) + rng.choice("!%*") + random_chars(rng, ALNUM, 5)
        return rng.choice([f"DB_PASSWORD={secret}", f'password = "{secret}"', f"  password: '{secret}'"]), secret, kind
    if kind == "database-url-password":
        secret = random_chars(rng, ALNUM, 18)
        return f"DATABASE_URL=postgres://app:{secret}@db.internal:5432/orders", secret, kind
    if kind == "aws-secret-access-key":
        secret = random_chars(rng, B64, 40)
        return f"aws_secret_access_key = {secret}", secret, kind
    if kind == "azure-storage-key":
        secret = random_chars(rng, B64, 86) + "=="
        return (
            f"DefaultEndpointsProtocol=https;AccountName=x;AccountKey={secret};EndpointSuffix=core.windows.net",
            secret,
            kind,
        )
    if kind == "slack-webhook-url":
        secret = (
            "T"
            + random_chars(rng, string.ascii_uppercase, 9)
            + "/B"
            + random_chars(rng, string.ascii_uppercase, 10)
            + "/"
            + random_chars(rng, ALNUM, 24)
        )
        return f"https://hooks.slack.com/services/{secret}", secret, kind
    if kind == "private-key":
        pem = fake_pem(rng, rng.choice(["RSA ", "EC ", "OPENSSH ", ""]))
        return f"key:\n{pem}\n", pem, kind
    secret = fake_secret(kind, rng)
    ctx = rng.choice(
        [
            "export TOKEN={}",
            'client = Client(token="{}")',
            "{}",
            "using credential {} for upstream",
            '{{"key": "{}"}}',
            "curl -H 'Authorization: Bearer {}' https://api.example.com",
        ]
    )
    return ctx.format(secret), secret, kind


def survives(secret: str, out: str) -> bool:
    """The corpus rule: a secret is masked when no 12-character window of it survives."""
    if len(secret) <= 12:
        return secret in out
    return any(secret[i : i + 12] in out for i in range(len(secret) - 11))


def masking_section(text: str, tmp_path: Path | None = None):
    path = (tmp_path / "policy.toml") if tmp_path else Path("policy.toml")
    if tmp_path:
        path.write_text(text)
    root = Section(tomllib.loads(text), path, "", path.resolve().parent)
    return parse_masking(root.section("masking"))


def rules_only(rules_toml: str = "", allowlist: str = ""):
    """A [masking] section without the built-in pack: only these `[[masking.rules]]` tables and
    `allowlist` lines (none: masking off)."""
    return masking_section("[masking]\npacks = []\n" + allowlist + rules_toml)


def rule_ids(hits) -> list[str]:
    """The rule ids of a scan's hits, in order."""
    return [h.rule.id for h in hits]
