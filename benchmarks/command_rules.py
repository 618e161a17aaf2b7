"""What judging a tool call costs, against masking the same call (which every call gets anyway).

    .venv/bin/python benchmarks/command_rules.py [--rounds 300]

For Claude Code-shaped Bash commands, a Write of 100 KB and a long one-line command, it prints
the median and p99 time of `judge_call` with the built-in pack (12 rules) and of
`Masker.mask_value` on the same input, measured alternately in one run, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

from percentiles import percentile  # (the script folder is on sys.path)

from gatehouse.commands.config import CommandsPolicy, load_pack
from gatehouse.commands.judge import judge_call
from gatehouse.masking.config import parse_masking
from gatehouse.masking.masker import Masker

CALLS = {
    "typical Bash": [
        ("Bash", {"command": c, "description": "run it"})
        for c in (
            "ls -la",
            "git status && git diff --stat",
            "npm test -- --watch=false",
            "cat README.md | head -50",
            "python -m pytest tests/unit -q -x; echo done",
            "find . -name '*.py' | xargs grep -n TODO",
        )
    ],
    "Write 100 KB": [("Write", {"file_path": "src/app.py", "content": "x = 1\n" * 17000})],
    "Bash 16 KB one line": [("Bash", {"command": "echo " + "a" * 16000})],
    # A file written through a heredoc, as Claude Code often does: every line is split again.
    "Bash 16 KB heredoc": [
        (
            "Bash",
            {
                "command": "cat > notes.md <<'EOF'\n"
                + "\n".join(f'- step {i}: run `make test` with "$HOME/.cache" kept' for i in range(320))
                + "\nEOF"
            },
        )
    ],
}


def measure(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    policy = CommandsPolicy(default="allow", packs=("commands",), rules=load_pack("commands"))
    masker = Masker(parse_masking(None), b"k" * 32)
    print(f"{'calls':22} {'judge median':>13} {'p99':>9} {'mask median':>12} {'p99':>9} {'judge/mask':>11}")
    for name, calls in CALLS.items():
        judge: list[float] = []
        mask: list[float] = []
        for _ in range(args.rounds // len(calls) + 1):
            for tool, inp in calls:  # alternating, so that noise hits both alike
                judge += measure(lambda tool=tool, inp=inp: judge_call(policy, tool, inp, ("developers",)), 1)
                mask += measure(lambda inp=inp: masker.mask_value(inp, "content[0].input"), 1)
        judge.sort()
        mask.sort()
        jm, mm = statistics.median(judge), statistics.median(mask)
        print(
            f"{name:22} {jm * 1e3:10.3f} ms {percentile(judge, 0.99) * 1e3:6.3f} ms "
            f"{mm * 1e3:9.3f} ms {percentile(mask, 0.99) * 1e3:6.3f} ms {jm / mm:10.2f}x"
        )


if __name__ == "__main__":
    main()
