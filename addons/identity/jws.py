"""A compact JWS (``header.payload.signature``) split and decoded, before anything is trusted.

`parse_token` size-caps the token and decodes it strictly (base64url without padding, JSON
objects, an ``alg``; no ``crit``, no unencoded payload) into a `ParsedToken` for the verifier;
`looks_like_jwt` and `unverified_issuer` tell a token from an API key and pick the issuer
without verifying anything. Failures are `TokenError` (``missing``, ``too_large``, ``malformed``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from gatehouse.identity.errors import HINT_NEW_TOKEN, TokenError

#: Largest token accepted. Real IdP tokens are 1-4 KB (Entra ID with many groups ~8 KB).
MAX_TOKEN_BYTES = 16 * 1024

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def _b64decode(segment: str) -> bytes:
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object (a JOSE header or payload, a JWKS or discovery document); ValueError otherwise."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


@dataclass(frozen=True)
class ParsedToken:
    """A token split and decoded, not yet trusted."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return self.header.get("alg") if isinstance(self.header.get("alg"), str) else ""

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def _json_part(part: str, name: str) -> dict[str, Any]:
    """The JSON object of a token's header or payload; TokenError(malformed) naming which."""
    try:
        return json_object(_b64decode(part))
    except (ValueError, binascii.Error):
        raise TokenError(
            "malformed", f"The token's {name} is not base64url-encoded JSON: it is not a JWT. " + HINT_NEW_TOKEN
        ) from None


def parse_token(token: str) -> ParsedToken:
    """Split and decode a compact JWS; raises TokenError(malformed/too_large)."""
    if not isinstance(token, str) or not token.strip():
        raise TokenError("missing", "The token is empty. " + HINT_NEW_TOKEN)
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("too_large", f"The token is {len(token)} bytes long; at most {MAX_TOKEN_BYTES} are accepted.")
    token = token.strip()
    parts = token.split(".")
    if len(parts) != 3:
        what = "an encrypted token (JWE)" if len(parts) == 5 else f"{len(parts)} part(s) instead of 3"
        raise TokenError(
            "malformed", f"The token is not a signed JWT (header.payload.signature): it has {what}. " + HINT_NEW_TOKEN
        )
    header = _json_part(parts[0], "header")
    claims = _json_part(parts[1], "payload")
    try:
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error):
        raise TokenError("malformed", "The token's signature is not base64url-encoded. " + HINT_NEW_TOKEN) from None
    if not isinstance(header.get("alg"), str):
        raise TokenError("malformed", "The token's header names no signing algorithm (alg). " + HINT_NEW_TOKEN)
    if "crit" in header:
        raise TokenError(
            "malformed", "The token's header has critical extensions (crit), which Gatehouse does not support."
        )
    if header.get("b64", True) is not True:
        raise TokenError(
            "malformed", "The token uses an unencoded payload (b64: false), which Gatehouse does not accept."
        )
    return ParsedToken(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def looks_like_jwt(value: object) -> bool:
    """Cheap test: is `value` shaped like a compact JWS (three base64url parts, a JSON header with alg)?

    Used to tell a token in ``x-api-key`` from a real API key. Does not verify anything.
    """
    if not isinstance(value, str) or len(value) > MAX_TOKEN_BYTES or value.count(".") != 2:
        return False
    head, payload, sig = value.strip().split(".")
    if not head or not payload or not (_B64URL.match(payload) and _B64URL.match(sig)):
        return False
    try:
        return isinstance(json_object(_b64decode(head)).get("alg"), str)
    except (ValueError, binascii.Error):
        return False


def unverified_issuer(value: str) -> str | None:
    """The ``iss`` claim of a JWT-shaped string, unverified; None when it has none."""
    try:
        iss = json_object(_b64decode(value.strip().split(".")[1])).get("iss")
    except (ValueError, binascii.Error, IndexError):
        return None
    return iss if isinstance(iss, str) else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).hexdigest()
