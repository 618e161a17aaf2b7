"""The texts that replace a call that was not run (gatehouse.commands.notices)."""

from __future__ import annotations

from gatehouse.commands.notices import (
    SUMMARY_CHARS,
    blocked_text,
    denied_text,
    replacement_block,
    retry_text,
    summary,
    timeout_denied_text,
)


def test_summary_is_one_short_line():
    assert summary("Bash", {"command": "rm -rf /", "description": "x"}) == "Bash: rm -rf /"
    assert summary("Write", {"file_path": "/r/.github/workflows/ci.yml", "content": "..."}) == (
        "Write: /r/.github/workflows/ci.yml"
    )
    assert summary("mcp__x__y", {"b": 1, "a": "z"}) == 'mcp__x__y: {"a":"z","b":1}'
    multi = summary("Bash", {"command": "echo a\nrm -rf /\t#x" + "y" * 500})
    assert "\n" not in multi and "\t" not in multi and "echo a\u23cerm -rf / #x" in multi
    assert len(multi) == SUMMARY_CHARS and multi.endswith("\u2026")


def test_blocked_text():
    text = blocked_text("Bash", {"command": "rm -rf /"}, "no-rm-rf-root", "Deleting / is never allowed.")
    assert text.startswith("Gatehouse blocked this tool call: it was not run.")
    assert "Call: Bash: rm -rf /" in text and "no-rm-rf-root" in text and "Reason: Deleting / is never allowed." in text
    default = blocked_text("Bash", {"command": "ls"}, None, "")
    assert "[commands] default" in default and "Reason" not in default


def test_denied_and_timeout_texts():
    text = denied_text("Bash", {"command": "terraform apply"}, "ga_1", "alice@example.com", "not today")
    assert text.startswith("Gatehouse") and "was not run" in text
    assert "ga_1" in text and "alice@example.com" in text and "Reason: not today" in text
    assert "(none given)" in denied_text("Bash", {}, "ga_1", "bob", " ")
    timeout = timeout_denied_text("Bash", {"command": "terraform apply"}, "ga_2")
    assert timeout.startswith("Gatehouse") and "ga_2" in timeout and "not run" in timeout


def test_retry_text_says_how_to_approve_and_to_propose_the_same_call():
    text = retry_text(
        "Bash",
        {"command": "terraform apply"},
        "ga_3",
        ["platform", "sre"],
        "tf-apply",
        "needs a second pair of eyes",
        "gatehouse approvals approve ga_3",
    )
    assert text.startswith("Gatehouse is holding this tool call for approval: it has not been run.")
    assert "Approval id: ga_3" in text and "platform, sre" in text
    assert "To approve: gatehouse approvals approve ga_3" in text
    assert "Rule: tf-apply: needs a second pair of eyes" in text and "exactly the same call again" in text


def test_replacement_block():
    assert replacement_block("t") == {"type": "text", "text": "t"}
