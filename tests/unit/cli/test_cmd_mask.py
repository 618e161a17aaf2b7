"""`gatehouse mask`: what a security team runs on real files and in pre-commit hooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")
GITHUB_PAT = "ghp_" + "R8x2Lq9ZkV4mT7wN1pY6sD3fH5jB0cXeUaGi"


def mask(stdin: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GATEHOUSE, "mask", "--state-dir", str(home / "state"), *args],
        input=stdin.encode(),
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
    )


def test_plain_text_is_masked_and_exit_is_zero(tmp_path):
    # The gateway's fingerprint key, so fingerprints match its records (the CLI never creates one).
    from gatehouse.masking.fingerprints import FINGERPRINT_KEY_FILE

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / FINGERPRINT_KEY_FILE).write_bytes(b"k" * 32)
    (tmp_path / "state" / FINGERPRINT_KEY_FILE).chmod(0o600)
    r = mask(f"export GITHUB_TOKEN={GITHUB_PAT}\nREGION=eu-west-1\n", home=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert GITHUB_PAT not in out and "[MASKED:github-pat:" in out and out.endswith("REGION=eu-west-1\n")
    # Deterministic: same key, same replacement (prompt caching and auditors depend on it).
    assert mask(f"export GITHUB_TOKEN={GITHUB_PAT}\nREGION=eu-west-1\n", home=tmp_path).stdout.decode() == out


def test_jsonl_passes_other_keys_and_reports_findings(tmp_path):
    lines = [{"id": "a", "text": f"token {GITHUB_PAT} here"}, {"id": "b", "text": "nothing secret"}]
    r = mask("".join(json.dumps(x) + "\n" for x in lines), "--jsonl", home=tmp_path)
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert [o["id"] for o in out] == ["a", "b"]
    [finding] = out[0]["findings"]
    assert finding["rule"] == "github-pat" and finding["start"] == 6 and finding["end"] == 6 + len(GITHUB_PAT)
    assert len(finding["fingerprint"]) == 6 and GITHUB_PAT not in r.stdout.decode()
    assert out[1] == {"id": "b", "text": "nothing secret", "findings": []}


def test_fail_on_findings_for_pre_commit(tmp_path):
    assert mask("clean text\n", "--fail-on-findings", home=tmp_path).returncode == 0
    r = mask(f"leaked {GITHUB_PAT}\n", "--fail-on-findings", home=tmp_path)
    assert r.returncode == 1 and b"github-pat: 1" in r.stderr
    assert GITHUB_PAT.encode() not in r.stderr


def test_malformed_jsonl_exits_2_with_the_line_number(tmp_path):
    r = mask('{"text": "ok"}\n{"text": \n', "--jsonl", home=tmp_path)
    assert r.returncode == 2 and b"line 2" in r.stderr and r.stdout == b""
    r = mask('{"text": "ok"}\n{"other": 1}\n', "--jsonl", home=tmp_path)
    assert r.returncode == 2 and b"line 2" in r.stderr


def test_policy_rules_apply(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[masking]\ndisable = ["github-pat"]\n\n[[masking.rules]]\nid = "acme-token"\n'
        "description = \"ACME tokens\"\npattern = '''\\b(acme_[0-9a-f]{16})\\b'''\n"
    )
    r = mask(f"{GITHUB_PAT} acme_0123456789abcdef\n", "--policy", str(policy), home=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert GITHUB_PAT in out and "[MASKED:acme-token:" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[masking.rules]]\nid = "broken"\npattern = "(unclosed"\n')
    r = mask("x", "--policy", str(bad), home=tmp_path)
    assert r.returncode == 2 and b"masking.rules[0]" in r.stderr and b"broken" in r.stderr
