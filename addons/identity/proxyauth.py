"""Proxy credentials: the ``Proxy-Authorization`` value a client sends, read into a token and a user name.

The value is size-capped before it is decoded; failures are `TokenError`, whose message says
how to send the token. Nothing here verifies the token.
"""

from __future__ import annotations

import base64
import binascii

from gatehouse.identity.errors import HINT_NEW_TOKEN, TokenError

#: Largest header value that may carry a token (a Basic header is base64 of user:token).
MAX_HEADER_BYTES = 24 * 1024


def parse_proxy_authorization(value: str) -> tuple[str, str | None]:
    """``(token, user)`` from a Proxy-Authorization value.

    ``Basic base64(user:TOKEN)`` is what ``HTTPS_PROXY=http://user:TOKEN@host:port`` sends (the
    user is returned for `user_claim`); ``Bearer TOKEN`` is also accepted. The value is
    size-checked before anything else is done with it.
    """
    if len(value) > MAX_HEADER_BYTES:
        raise TokenError(
            "too_large", f"The proxy credentials are {len(value)} bytes long; at most {MAX_HEADER_BYTES} are accepted."
        )
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer":
        if not rest:
            raise TokenError("missing", "The proxy credentials say Bearer but carry no token. " + HINT_NEW_TOKEN)
        return rest, None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise TokenError(
                "malformed", "The proxy credentials (Basic) are not valid base64. " + HINT_NEW_TOKEN
            ) from None
        user, sep, password = decoded.partition(":")
        if not sep or not password.strip():
            raise TokenError(
                "no_password",
                "The proxy credentials have a user name but no password. The token "
                "goes in the password: HTTPS_PROXY=http://gatehouse:TOKEN@HOST:PORT (run "
                "`gatehouse token` to get one).",
            )
        return password.strip(), user
    # The scheme is not echoed: without a space, the "scheme" is the credential itself.
    raise TokenError(
        "malformed",
        "The proxy credentials use neither the Basic nor the Bearer scheme; use Basic "
        "(HTTPS_PROXY=http://gatehouse:TOKEN@HOST:PORT) or Bearer.",
    )
