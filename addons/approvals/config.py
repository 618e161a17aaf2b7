"""The ``[approvals]`` section: who approves by default, how a flow waits, how long a grant lasts.

[approvals]
approvers = ["sre"]              # groups whose members may decide (a rule may name its own)
mode = "hold"                    # hold: the response waits for the decision; retry: answer at once
timeout_seconds = 300            # how long a held response waits (at most 540)
on_timeout = "retry"             # retry: tell the agent the approval id; deny: refuse the call
grant_seconds = 3600             # how long an approval can be used (a tool call: once)
approvals_required = 1           # distinct approvers needed
notify_url = "https://hooks.slack.com/services/..."   # optional webhook (a secret: kept out of logs)
"""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse.common.urls import http_url_problem
from gatehouse.policy.reader import Section

MODES = ("hold", "retry")
ON_TIMEOUT = ("retry", "deny")

# A held response sends nothing (not even headers) until the decision. The SDKs give up on a
# request after 600 s by default and Claude Code abandons a stream after 300 s without an event,
# so a hold must end, with room to spare, before the first of those.
MAX_TIMEOUT_SECONDS = 540.0


@dataclass(frozen=True)
class ApprovalsPolicy:
    approvers: tuple[str, ...] = ()
    mode: str = "hold"  # hold | retry
    timeout_seconds: float = 300.0  # refuse > 540
    on_timeout: str = "retry"  # retry | deny
    grant_seconds: float = 3600.0
    approvals_required: int = 1
    notify_url: str | None = None  # http(s) URL; a secret (Slack webhook URLs are credentials)


def _positive(sec: Section, key: str, default: float) -> float:
    value = sec.float(key, default)
    if value <= 0:
        raise sec.error(key, f"must be more than 0 seconds; got {value:g}")
    return value


def parse_approvals(sec: Section | None) -> ApprovalsPolicy:
    """The ``[approvals]`` table; the defaults when it is absent. Unknown keys are refused."""
    if sec is None:
        return ApprovalsPolicy()
    approvers = sec.str_list("approvers", ())
    mode = sec.str("mode", "hold", choices=MODES)
    timeout = _positive(sec, "timeout_seconds", 300.0)
    if timeout > MAX_TIMEOUT_SECONDS:
        raise sec.error(
            "timeout_seconds",
            f"must be at most {MAX_TIMEOUT_SECONDS:g} seconds; got {timeout:g}. A held response sends nothing "
            "until the decision, and clients abandon it: the SDKs after about 600 s without a response, "
            'Claude Code a stream after 300 s without an event. For longer waits use mode = "retry".',
        )
    on_timeout = sec.str("on_timeout", "retry", choices=ON_TIMEOUT)
    grant = _positive(sec, "grant_seconds", 3600.0)
    required = sec.int("approvals_required", 1, min=1)
    notify_url = sec.str("notify_url", None)
    if notify_url is not None:
        # https (or http to this machine): the URL is a credential and the text names the call.
        problem = http_url_problem(notify_url, what="webhook URL", https_unless_loopback=True)
        if problem:
            raise sec.error("notify_url", problem)
    sec.done()
    return ApprovalsPolicy(
        approvers=tuple(approvers),
        mode=mode,
        timeout_seconds=timeout,
        on_timeout=on_timeout,
        grant_seconds=grant,
        approvals_required=required,
        notify_url=notify_url,
    )
