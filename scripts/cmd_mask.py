"""`gatehouse mask`: mask secrets in stdin with the built-in pack or a policy's rules.

Security teams use it to try a policy on real files before deploying it, and as a
pre-commit check (`--fail-on-findings`). It masks exactly as the gateway does: same rules,
same replacement text.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from gatehouse.cli.common import default_state_dir
from gatehouse.masking.config import MaskingPolicy, parse_masking
from gatehouse.masking.fingerprints import FINGERPRINT_KEY_FILE, FingerprintKeyError, fingerprint_key_for
from gatehouse.masking.masker import Masker
from gatehouse.policy.loader import load_policy
from gatehouse.policy.reader import PolicyError

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mask",
        help="mask secrets in stdin (try masking rules on real files)",
        description="Read stdin, write it to stdout with every secret replaced by "
        "[MASKED:rule-id:fingerprint], as the gateway does. Uses the built-in rule pack, "
        "or the [masking] section of --policy. Exits 0 whether or not anything was masked "
        "(1 with --fail-on-findings when something was), 2 on malformed input.",
        epilog="examples:\n"
        "  gatehouse mask < .env\n"
        "  gatehouse mask --policy policies/prod.toml --fail-on-findings < deploy.yaml > /dev/null\n"
        "  jq -c '{text: .body}' notes.jsonl | gatehouse mask --jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--policy", type=Path, help="policy file whose [masking] section to use (default: built-in pack)")
    p.add_argument(
        "--jsonl",
        action="store_true",
        help='read JSON lines {"text": ...}; write one line per input line with "text" masked and '
        '"findings": [{"rule", "start", "end", "fingerprint"}] (offsets in the input text); '
        "other keys pass through",
    )
    p.add_argument(
        "--fail-on-findings",
        action="store_true",
        help="exit 1 if anything was masked (for pre-commit hooks); a summary goes to stderr",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="gateway state folder whose fingerprint key to use, so fingerprints match the "
        "gateway's records (default ~/.gatehouse; a throwaway key if it has none)",
    )
    p.add_argument("--list-rules", action="store_true", help="list the rules in effect and exit")
    p.set_defaults(func=run_mask)


def _load_masking(policy_file: Path | None) -> MaskingPolicy:
    """The policy's masking rules, validated with the whole policy exactly as the gateway does."""
    if policy_file is None:
        return parse_masking(None)
    masking = load_policy(policy_file).masking
    assert masking is not None
    return masking


def _fingerprint_key(policy: MaskingPolicy, state_dir: Path | None) -> bytes:
    """The gateway's key when this machine has it (env var, or the state folder's key file,
    never created here); otherwise a throwaway key: fingerprints then hold within one run."""
    if policy.fingerprint_secret_env and os.environ.get(policy.fingerprint_secret_env):
        try:
            return fingerprint_key_for(policy, state_dir or default_state_dir())
        except FingerprintKeyError as e:
            print(f"gatehouse mask: {e}; using a throwaway fingerprint key", file=sys.stderr)
            return secrets.token_bytes(32)
    folder = state_dir or default_state_dir()
    try:
        if (folder / FINGERPRINT_KEY_FILE).is_file():
            return fingerprint_key_for(MaskingPolicy(), folder)
    except (OSError, FingerprintKeyError) as e:
        print(f"gatehouse mask: {e}; using a throwaway fingerprint key", file=sys.stderr)
    return secrets.token_bytes(32)


def _summary(counts: Counter[str]) -> str:
    total = sum(counts.values())
    detail = ", ".join(f"{rule}: {n}" for rule, n in sorted(counts.items()))
    return f"gatehouse mask: {total} secret(s) masked ({detail})"


def run_mask(args: argparse.Namespace) -> int:
    try:
        policy = _load_masking(args.policy)
    except PolicyError as e:
        print(f"gatehouse mask: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.list_rules:
        for rule in policy.rules:
            print(f"{rule.id}\t{rule.description}")
        return EXIT_OK
    masker = Masker(policy, _fingerprint_key(policy, args.state_dir))
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        print(f"gatehouse mask: stdin is not UTF-8 text (invalid byte at offset {e.start})", file=sys.stderr)
        return EXIT_BAD_INPUT
    counts: Counter[str] = Counter()
    if args.jsonl:
        try:
            out = _mask_jsonl(masker, text, counts)
        except _BadLine as e:
            print(f"gatehouse mask: stdin line {e.line}: {e.reason}", file=sys.stderr)
            return EXIT_BAD_INPUT
    else:
        out, spans = masker.mask_spans(text)
        counts.update(s.rule for s in spans)
    sys.stdout.write(out)
    sys.stdout.flush()
    if args.fail_on_findings and counts:
        print(_summary(counts), file=sys.stderr)
        return EXIT_FINDINGS
    return EXIT_OK


class _BadLine(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def _mask_jsonl(masker: Masker, text: str, counts: Counter[str]) -> str:
    """All lines are checked before anything is written: malformed input gives no output."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another line
    out: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            out.append("")
            continue
        try:
            obj: Any = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise _BadLine(n, f"not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise _BadLine(n, 'expected a JSON object like {"text": "..."}')
        value = obj.get("text")
        if not isinstance(value, str):
            raise _BadLine(n, 'needs a "text" key with a string value')
        masked, spans = masker.mask_spans(value)
        counts.update(s.rule for s in spans)
        obj["text"] = masked
        obj["findings"] = [
            {"rule": s.rule, "start": s.start, "end": s.end, "fingerprint": s.fingerprint} for s in spans
        ]
        out.append(json.dumps(obj, ensure_ascii=False))
    return "".join(line + "\n" for line in out)
