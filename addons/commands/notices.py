"""The texts that replace a tool call the gateway did not let run: what the model reads in
place of its tool_use, and what Claude Code shows the developer.

Each starts with "Gatehouse", says plainly whether the call was run (it never was) or is held,
names the call in one short line (`summary`), the rule and its message, and tells the model
what to do next: not to work around a block or a denial, and, for a call held for approval
(mode ``retry``), to ask the user to say when it is approved and then propose exactly the same
call again (an approval is bound to the call's hash, so a changed call needs a new one).
Plain strings, pure (no mitmproxy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gatehouse.commands.fields import as_text

SUMMARY_CHARS = 200
# The input keys that say what a call does, in the order they are preferred for a summary.
_SUMMARY_KEYS = ("command", "file_path", "notebook_path", "path", "url", "query", "pattern")

_NO_RETRY = (
    "Do not run it another way or work around this rule. If the task needs it, tell the user what you "
    "wanted to run and why."
)


def one_line(text: str) -> str:
    """`text` on one line (line breaks shown as ⏎), at most `SUMMARY_CHARS` long."""
    out = []
    for ch in text:
        if ch in "\r\n":
            out.append("\u23ce")  # ⏎: keeps a multi-line command on one line, visibly
        elif ch == "\t":
            out.append(" ")
        elif ch.isprintable():
            out.append(ch)
    line = "".join(out).strip()
    if len(line) > SUMMARY_CHARS:
        line = line[: SUMMARY_CHARS - 1].rstrip() + "\u2026"
    return line


def summary(tool: str, tool_input: Any) -> str:
    """The call in one short line: ``Bash: rm -rf /``, ``Write: /repo/.github/workflows/ci.yml``."""
    what = None
    if isinstance(tool_input, Mapping):
        for key in _SUMMARY_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str) and value.strip():
                what = value
                break
    if what is None:
        what = as_text(tool_input)
    return one_line(f"{tool}: {what}")


def blocked_text(tool: str, tool_input: Any, rule_id: str | None, message: str) -> str:
    """A call a rule (or the ``[commands]`` default) blocks."""
    rule = f"rule {rule_id}" if rule_id else "the policy's default for tool calls ([commands] default)"
    lines = [
        "Gatehouse blocked this tool call: it was not run.",
        f"Call: {summary(tool, tool_input)}",
        f"Blocked by: {rule}",
    ]
    if message:
        lines.append(f"Reason: {message}")
    lines.append(_NO_RETRY)
    return "\n".join(lines)


def denied_text(tool: str, tool_input: Any, approval_id: str, by: str, reason: str) -> str:
    """A held call an approver denied."""
    return "\n".join(
        [
            "Gatehouse: an approver denied this tool call: it was not run.",
            f"Call: {summary(tool, tool_input)}",
            f"Approval: {approval_id}, denied by {by}",
            f"Reason: {reason.strip() or '(none given)'}",
            _NO_RETRY,
        ]
    )


def timeout_denied_text(tool: str, tool_input: Any, approval_id: str) -> str:
    """A held call nobody decided on in time, where the policy then denies (``on_timeout = "deny"``)."""
    return "\n".join(
        [
            "Gatehouse: no approver decided on this tool call in time, so it was denied: it was not run.",
            f"Call: {summary(tool, tool_input)}",
            f"Approval: {approval_id} (expired)",
            "If it is still needed, tell the user: proposing the same call again asks the approvers again.",
        ]
    )


def retry_text(
    tool: str,
    tool_input: Any,
    approval_id: str,
    approvers: Sequence[str],
    rule_id: str,
    message: str,
    cli_line: str,
) -> str:
    """A call held for approval (mode ``retry``, or ``hold`` after its wait): it runs once
    approved, when the model proposes it again unchanged."""
    who = ", ".join(approvers) if approvers else "(no approver groups configured)"
    lines = [
        "Gatehouse is holding this tool call for approval: it has not been run.",
        f"Call: {summary(tool, tool_input)}",
        f"Rule: {rule_id}" + (f": {message}" if message else ""),
        f"Approval id: {approval_id}",
        f"Who can approve: a member of {who}",
        f"To approve: {cli_line}",
        "Tell the user that this call needs approval, with the approval id and the command above, and ask them "
        "to say when it has been approved. Then propose exactly the same call again, with identical input: it "
        "will run once. A changed call needs a new approval. Do not try to get the same effect another way "
        "meanwhile.",
    ]
    return "\n".join(lines)


def replacement_block(text: str) -> dict:
    """The content block that takes a tool_use block's place in the response."""
    return {"type": "text", "text": text}
