"""Who made a request, as the report names it: the client (Claude Code, an SDK, other) read from
the recorded user agent and SDK headers, the identity from the verified token, and whether
either is a CI job."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_CLAUDE_CODE_UA = re.compile(r"claude-cli/(?P<version>[0-9][^\s(]*)\s*(?:\((?P<detail>[^)]*)\))?", re.I)
_SDK_UA = re.compile(r"Anthropic/(?P<lang>[A-Za-z]+)\s+(?P<version>[0-9][^\s]*)")
_ENTRYPOINTS = {
    "cli": "",
    "sdk-ts": "TypeScript SDK",
    "sdk-py": "Python SDK",
    "sdk-cli": "print mode",
    "claude-code-github-action": "GitHub Action",
    "claude-desktop": "Desktop",
}
_CI_MARKERS = ("github-action", "gitlab", "ci", "jenkins", "buildkite", "circleci")
_CI_ISSUERS = ("token.actions.githubusercontent.com", "gitlab", "circleci", "buildkite")


def describe_client(client: Mapping[str, Any] | None, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"label", "kind": claude-code|sdk|other, "ci": bool, "user_agent"} from a record's client part."""
    client = client or {}
    headers = headers or {}
    ua = str(client.get("user_agent") or "")
    label, kind, ci = ua[:80] or "unknown client", "other", False
    if m := _CLAUDE_CODE_UA.search(ua):
        parts = [p.strip() for p in (m.group("detail") or "").split(",") if p.strip()]
        extra = [_ENTRYPOINTS.get(p, p) for p in parts if p not in ("external",)]
        extra = [e for e in extra if e]
        label = f"Claude Code {m.group('version')}" + (f" ({', '.join(extra)})" if extra else "")
        kind = "claude-code"
        ci = any(any(c in p for c in _CI_MARKERS) for p in parts if p not in ("cli",))
    elif m := _SDK_UA.search(ua):
        lang = {"python": "Python", "js": "TypeScript", "typescript": "TypeScript", "go": "Go", "java": "Java"}.get(
            m.group("lang").lower(), m.group("lang")
        )
        label, kind = f"{lang} SDK {m.group('version')}", "sdk"
    elif headers.get("x-stainless-lang"):
        lang = str(headers.get("x-stainless-lang"))
        label, kind = f"{lang} SDK {headers.get('x-stainless-package-version') or ''}".strip(), "sdk"
    app = client.get("app")
    if isinstance(app, str) and app and app != "cli" and kind == "claude-code":
        label += f" [{app}]"
    if not ci:
        ci = str(headers.get("x-stainless-runtime", "")).lower() == "ci" or "ci" in str(app or "").lower().split("-")
    return {"label": label, "kind": kind, "ci": ci, "user_agent": ua}


def describe_identity(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    if not identity:
        return {
            "subject": None,
            "email": None,
            "name": None,
            "issuer": None,
            "groups": [],
            "label": "anonymous",
            "ci": False,
        }
    subject = identity.get("subject")
    email = identity.get("email")
    groups = [str(g) for g in identity.get("groups") or []]
    issuer = str(identity.get("issuer") or "")
    return {
        "subject": subject,
        "email": email,
        "name": identity.get("name"),
        "issuer": identity.get("issuer_name") or identity.get("issuer"),
        "groups": groups,
        "label": email or subject or "anonymous",
        # A CI job's own OIDC token (docs/identity.md), or a group named for CI.
        "ci": any(h in issuer for h in _CI_ISSUERS) or any(g.lower() == "ci" for g in groups),
    }
