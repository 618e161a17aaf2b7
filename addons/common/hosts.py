"""Host names against the host lists of a policy (``passthrough_hosts``): one matcher for every feature.

A pattern is a glob, as the policy reference documents: ``*.sentry.io`` matches
``o1.ingest.sentry.io`` (``*`` crosses dots) but not ``sentry.io``; a pattern without ``*``,
``?`` or ``[`` matches that one name. Names and patterns are compared lower-case and without
a trailing dot, so ``API.Anthropic.com.`` is ``api.anthropic.com``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable


def normalise_host(host: str) -> str:
    """A host name as it is compared: lower-case, without the trailing dot of a fully qualified name."""
    return host.lower().rstrip(".")


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """Whether `host` matches one of the glob `patterns`."""
    name = normalise_host(host)
    return any(fnmatch.fnmatchcase(name, normalise_host(p)) for p in patterns)
