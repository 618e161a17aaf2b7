"""API endpoints a policy opens: a method set and a path glob, e.g. ``POST /v1/messages``.

Deny by default: a request is forwarded only when an entry names both its method and its
path. An entry written as a bare path (``/v1/models*``) takes the methods the Claude API
defines for that path when it is one of the endpoints below, and ``GET`` otherwise: a body
is only ever accepted where the policy says, in so many words, that the method carries one.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

# Methods per known path glob, for entries that name none. Order matters: first match wins.
KNOWN_METHODS: tuple[tuple[str, frozenset[str]], ...] = (
    ("/v1/messages", frozenset({"POST"})),
    ("/v1/messages/count_tokens", frozenset({"POST"})),
    ("/v1/models*", frozenset({"GET"})),
    ("/api/claude_code/*", frozenset({"GET"})),
)
# Methods that never carry a request body the gateway would forward.
BODILESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class EndpointSyntaxError(ValueError):
    """An entry that is not ``[METHOD[,METHOD...]] /path-glob``; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    methods: frozenset[str]
    pattern: str

    @classmethod
    def parse(cls, entry: str) -> Endpoint:
        text = entry.strip()
        if " " in text:
            methods_part, _, pattern = text.partition(" ")
            pattern = pattern.strip()
            methods = frozenset(m.strip().upper() for m in methods_part.split(",") if m.strip())
            unknown = sorted(methods - METHODS)
            if unknown or not methods:
                raise EndpointSyntaxError(
                    f"{entry!r}: unknown HTTP method {', '.join(unknown) or '(none)'}; "
                    f'write e.g. "POST /v1/messages" (methods: {", ".join(sorted(METHODS))})'
                )
        else:
            pattern = text
            methods = next((m for glob, m in KNOWN_METHODS if glob == pattern), frozenset({"GET"}))
        if not pattern.startswith("/"):
            raise EndpointSyntaxError(f"the path must start with '/'; got {entry!r}")
        return cls(methods, pattern)

    def matches(self, method: str, path: str) -> bool:
        """`*` matches across `/`, so `/v1/models*` covers `/v1/models/claude-x`; a pattern
        without `*` matches only that exact path. The query is ignored."""
        return method.upper() in self.methods and fnmatch.fnmatchcase(path.split("?", 1)[0], self.pattern)

    def __str__(self) -> str:
        return f"{','.join(sorted(self.methods))} {self.pattern}"


def allowed(method: str, path: str, endpoints: tuple[Endpoint, ...]) -> bool:
    return any(e.matches(method, path) for e in endpoints)


def path_allowed(path: str, endpoints: tuple[Endpoint, ...]) -> bool:
    """Whether some entry opens this path for some method (to tell 403 from 405)."""
    bare = path.split("?", 1)[0]
    return any(fnmatch.fnmatchcase(bare, e.pattern) for e in endpoints)
