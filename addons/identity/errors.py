"""Why a token was refused: `TokenError(check, message)` and the hint that ends most refusals.

Every step of verification (reading the proxy credentials, decoding the JWT, finding its key,
judging its claims) raises `TokenError`; its message says which check failed and what to do,
and never contains the token.
"""

from __future__ import annotations

HINT_NEW_TOKEN = (
    "Get a fresh token (`gatehouse token` for the local development issuer, or from your "
    "identity provider) and send it as the proxy password (HTTPS_PROXY=http://gatehouse:TOKEN@HOST:PORT), "
    "through Claude Code's apiKeyHelper, or as ANTHROPIC_AUTH_TOKEN."
)


class TokenError(Exception):
    """A token was refused. `check` names the failed check; `message` is safe to show the user.

    Checks: ``missing``, ``too_large``, ``malformed``, ``no_password``, ``issuer``, ``algorithm``, ``no_keys``,
    ``unknown_key``, ``signature``, ``audience``, ``expired``, ``not_yet_valid``,
    ``issued_in_future``, ``claims``, ``user``.
    """

    # How far verification got before each check failed. When several issuer entries share an
    # `iss`, the error of the entry that got furthest is the one worth reporting.
    RANK = {
        "missing": 0,
        "too_large": 0,
        "malformed": 0,
        "no_password": 0,
        "issuer": 1,
        "algorithm": 2,
        "no_keys": 3,
        "unknown_key": 4,
        "signature": 5,
        "audience": 6,
        "expired": 7,
        "not_yet_valid": 7,
        "issued_in_future": 7,
        "claims": 8,
        "user": 9,
    }

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message

    @property
    def rank(self) -> int:
        return self.RANK.get(self.check, 0)

    def __repr__(self) -> str:
        return f"TokenError({self.check!r}, {self.message!r})"
