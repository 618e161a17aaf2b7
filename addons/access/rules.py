"""Just-in-time access: the policy's ``[[access.rules]]``, and which rule covers a request that
the caller's groups do not allow.

A rule names what it grants (``models`` globs and/or ``endpoints`` entries, parsed like a
group's), who may ask (``groups``; absent: anyone), and who decides (``approvers``, groups;
absent: ``[approvals] approvers``). A covered request outside the caller's groups is refused
with the approval to ask for; once approved, the caller has that access for ``grant_seconds``
(absent: ``[approvals] grant_seconds``). The approvals themselves are `gatehouse.approvals`;
the loader checks that approvers exist.

    [[access.rules]]
    id = "opus-on-request"
    models = ["claude-opus-*"]
    groups = ["developers"]
    action = "approve"
    approvers = ["leads"]
    grant_seconds = 3600
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from gatehouse.access.config import parse_endpoints
from gatehouse.access.endpoints import Endpoint, allowed
from gatehouse.exchange import Identity
from gatehouse.policy.reader import PolicyError, Section

ACTIONS = ("approve",)


@dataclass(frozen=True)
class AccessRule:
    id: str
    models: tuple[str, ...] = ()  # model globs the rule grants
    endpoints: tuple[Endpoint, ...] = ()  # endpoints the rule grants
    groups: tuple[str, ...] | None = None  # callers who may ask; None: anyone
    action: str = "approve"
    approvers: tuple[str, ...] | None = None  # None: [approvals] approvers
    grant_seconds: float | None = None  # None: [approvals] grant_seconds
    approvals_required: int | None = None  # None: [approvals] approvals_required

    def applies_to(self, groups: Iterable[str]) -> bool:
        return self.groups is None or not set(self.groups).isdisjoint(groups)

    def covers(self, *, model: str | None = None, method: str | None = None, path: str | None = None) -> bool:
        """Whether the rule grants this model, or this method on this path (query ignored)."""
        if model is not None and any(fnmatch.fnmatchcase(model, g) for g in self.models):
            return True
        return method is not None and path is not None and allowed(method, path, self.endpoints)


def _names(sec: Section, key: str) -> tuple[str, ...] | None:
    """A list of group names; absent: None. An empty list would match nobody: refused."""
    value = sec.str_list(key, None)
    if value is not None and not value:
        raise sec.error(key, "must name at least one group (leave it out for the default)")
    return value


def _parse_rule(sec: Section) -> AccessRule:
    rule_id = sec.str("id")
    models = sec.str_list("models", ())
    endpoints = parse_endpoints(sec, "endpoints", ()) or ()
    if not models and not endpoints:
        raise sec.error("", "needs `models` or `endpoints`: what the rule grants access to")
    groups = _names(sec, "groups")
    action = sec.str("action", choices=ACTIONS)
    approvers = _names(sec, "approvers")
    grant_seconds = sec.float("grant_seconds", None)
    if grant_seconds is not None and grant_seconds <= 0:
        raise sec.error("grant_seconds", f"must be more than 0 seconds; got {grant_seconds:g}")
    approvals_required = sec.int("approvals_required", None, min=1)
    sec.done()
    return AccessRule(
        id=rule_id,
        models=models,
        endpoints=endpoints,
        groups=groups,
        action=action,
        approvers=approvers,
        grant_seconds=grant_seconds,
        approvals_required=approvals_required,
    )


def parse_access_rules(root: Section) -> tuple[AccessRule, ...]:
    """The ``[[access.rules]]`` of the policy, in order; () when ``[access]`` is absent. Other
    keys of ``[access]`` are refused."""
    sec = root.section("access")
    if sec is None:
        return ()
    rules: list[AccessRule] = []
    seen: dict[str, int] = {}
    for i, rsec in enumerate(sec.sections("rules")):
        rule = _parse_rule(rsec)
        if rule.id in seen:
            raise PolicyError(
                rsec.file,
                rsec.key_path("id"),
                f"duplicate rule id {rule.id!r} (also access.rules[{seen[rule.id]}].id); ids must be unique",
            )
        seen[rule.id] = i
        rules.append(rule)
    sec.done()
    return tuple(rules)


def jit_rule_for(
    rules: Iterable[AccessRule],
    identity: Identity | None,
    *,
    model: str | None = None,
    method: str | None = None,
    path: str | None = None,
) -> AccessRule | None:
    """The first rule that applies to the caller (its `groups` include one of theirs, or it
    has none) and covers the model, or the method on the path. None without an identity: an
    approval is granted to a person."""
    if identity is None:
        return None
    for rule in rules:
        if rule.applies_to(identity.groups) and rule.covers(model=model, method=method, path=path):
            return rule
    return None


def jit_target(model: str | None = None, method: str | None = None, path: str | None = None) -> str:
    """What an access approval is for, as people read it and grants are keyed:
    ``model claude-opus-4-1`` or ``POST /v1/files`` (the query left out)."""
    if model is not None:
        return f"model {model}"
    if method is None or path is None:
        raise ValueError("jit_target needs a model, or a method and a path")
    return f"{method.upper()} {path.split('?', 1)[0]}"
