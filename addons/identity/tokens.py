"""Who is calling: trusted token issuers, their signing keys, and the checks a token must pass.

`parse_issuers` reads the policy's ``[[issuers]]`` tables into `IssuerConfig`s; `TokenVerifier`
turns a JWT into an `Identity` or raises `TokenError(check, message)`, whose message says which
check failed and what to do, and never contains the token.

Order of checks. Everything an attacker controls is looked at only as far as needed to find the
key: the token is size-capped, split, decoded (strict base64url, JSON objects); its ``iss`` picks
the issuer and its header ``alg`` must be one the issuer accepts (``none`` never, HMAC only with a
configured secret, and an asymmetric algorithm only with a key of the matching type, so a public
key can never be used as an HMAC secret). Only after the signature verifies are the claims
judged (audience, exp/nbf/iat, required claims, subject), so a forged token only ever learns
"bad signature".

Keys and the event loop. Signing keys come from OIDC discovery (the default), an explicit
``jwks_uri`` or a ``jwks_file``; they are cached per source for ``jwks_cache_seconds``, refetched
on an unknown ``kid`` at most once per ``min_refetch_seconds``, and kept when a refetch fails
(cached keys keep working while the IdP is down). A network fetch blocks, so `verify` takes
``allow_fetch``: with ``allow_fetch=False`` (the event-loop fast path) it never touches the
network and raises `FetchRequired` when it would have to wait for one; the caller then runs
``verify`` again in a worker thread. Cached keys past their TTL are refreshed in a background
thread while the stale keys go on verifying. A ``jwks_file`` is read inline (small, local).

Verified tokens are cached by their sha256 (bounded), so the token a client resends on every
request costs a hash and an expiry check, not a signature verification; an entry is only used
while the key set that verified it is still the current one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from jwt.algorithms import get_default_algorithms

from gatehouse.exchange import Identity
from gatehouse.policy.reader import Section

# -- limits and algorithm tables ---------------------------------------------------------------

#: Largest token accepted. Real IdP tokens are 1-4 KB (Entra ID with many groups ~8 KB).
MAX_TOKEN_BYTES = 16 * 1024
#: Largest header value that may carry a token (a Basic header is base64 of user:token).
MAX_HEADER_BYTES = 24 * 1024
#: Largest JWKS or discovery document fetched.
MAX_DOCUMENT_BYTES = 1024 * 1024
#: Most keys kept from one JWKS.
MAX_KEYS = 64
FETCH_TIMEOUT_SECONDS = 5.0

DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA")

# Each asymmetric algorithm and the only key type (kty, crv) it may be verified with.
ASYMMETRIC_ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
# HMAC algorithms and the shortest secret (bytes) each accepts (RFC 7518 section 3.2).
HMAC_ALGORITHMS: dict[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}
SUPPORTED_ALGORITHMS = tuple(ASYMMETRIC_ALGORITHMS) + tuple(HMAC_ALGORITHMS)

_ALGORITHMS = get_default_algorithms()
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

HINT_NEW_TOKEN = (
    "Get a fresh token (`gatehouse token` for the local development issuer, or from your "
    "identity provider) and send it as the proxy password (HTTPS_PROXY=http://gatehouse:TOKEN@HOST:PORT), "
    "through Claude Code's apiKeyHelper, or as ANTHROPIC_AUTH_TOKEN."
)

ClaimPath = str | tuple[str, ...]
ClaimScalar = str | int | float | bool
ClaimValue = ClaimScalar | tuple[ClaimScalar, ...]


# -- errors ------------------------------------------------------------------------------------


class TokenError(Exception):
    """A token was refused. `check` names the failed check; `message` is safe to show the user.

    Checks: ``missing``, ``too_large``, ``malformed``, ``no_password``, ``issuer``, ``algorithm``, ``no_keys``,
    ``unknown_key``, ``signature``, ``audience``, ``expired``, ``not_yet_valid``,
    ``issued_in_future``, ``claims``, ``user``.
    """

    # How far verification got before each check failed. When several issuer entries share an
    # `iss`, the error of the entry that got furthest is the one worth reporting.
    RANK = {
        "missing": 0, "too_large": 0, "malformed": 0, "no_password": 0, "issuer": 1, "algorithm": 2, "no_keys": 3,
        "unknown_key": 4, "signature": 5, "audience": 6, "expired": 7, "not_yet_valid": 7,
        "issued_in_future": 7, "claims": 8, "user": 9,
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


class FetchRequired(Exception):
    """`verify(..., allow_fetch=False)` would have had to fetch keys: call it again off the event loop."""


class TokenConfigError(ValueError):
    """The issuers cannot be used as configured (e.g. an HMAC secret variable is not set)."""


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuerConfig:
    """One trusted issuer, as the policy's ``[[issuers]]`` table describes it."""

    name: str
    issuer: str
    audience: tuple[str, ...]
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    jwks_uri: str | None = None
    jwks_file: Path | None = None
    hmac_secret_env: str | None = None
    leeway_seconds: int = 30
    jwks_cache_seconds: int = 3600
    # (claim path, expected value); a tuple value means "any of these".
    required_claims: tuple[tuple[str, ClaimValue], ...] = ()
    subject_claim: ClaimPath = "sub"
    email_claim: ClaimPath = "email"
    name_claim: ClaimPath = "name"
    groups_claim: ClaimPath = "groups"
    static_groups: tuple[str, ...] = ()
    user_claim: ClaimPath | None = None

    @property
    def asymmetric_algorithms(self) -> tuple[str, ...]:
        return tuple(a for a in self.algorithms if a in ASYMMETRIC_ALGORITHMS)

    @property
    def key_source(self) -> str:
        """``discovery``, ``jwks_uri``, ``jwks_file`` or ``hmac`` (HMAC-only issuer: no key set)."""
        if self.jwks_uri:
            return "jwks_uri"
        if self.jwks_file:
            return "jwks_file"
        if self.asymmetric_algorithms:
            return "discovery"
        return "hmac"

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetchable_url(url: str) -> str | None:
    """Why `url` may not be fetched for keys, or None. https only; http for loopback (tests)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "is not a URL"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return None
    return "must be an https:// URL (http:// is allowed only for localhost)"


def _claim_path(sec: Section, key: str, default: ClaimPath | None) -> ClaimPath | None:
    value = sec.raw(key, default)
    if value is default:
        return value
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise sec.error(key, "expected a claim name (a string, dots for nesting) or an array of path segments")


def _claim_value(sec: Section, key: str) -> ClaimValue:
    value = sec.raw(key)
    scalar = (str, int, float, bool)
    if isinstance(value, scalar):
        return value
    if isinstance(value, list) and value and all(isinstance(v, scalar) for v in value):
        return tuple(value)
    raise sec.error(key, "expected a string, number, boolean, or a non-empty array of them (any of)")


def _parse_issuer(sec: Section) -> IssuerConfig:
    name = sec.str("name")
    if not _NAME.match(name):
        raise sec.error("name", "use letters, digits, '.', '_' and '-' (at most 64), starting with a letter or digit")
    issuer = sec.str("issuer")

    aud = sec.raw("audience")
    if isinstance(aud, str) and aud.strip():
        audience: tuple[str, ...] = (aud,)
    elif isinstance(aud, list) and aud and all(isinstance(a, str) and a.strip() for a in aud):
        audience = tuple(aud)
    else:
        raise sec.error("audience", "expected a non-empty string or array of strings: the audience tokens must be issued for")

    algorithms = sec.str_list("algorithms", DEFAULT_ALGORITHMS)
    if not algorithms:
        raise sec.error("algorithms", "must not be empty")
    for i, alg in enumerate(algorithms):
        where = f"algorithms[{i}]"
        if alg.lower() == "none":
            raise sec.error(where, "'none' (unsigned tokens) is never accepted")
        if alg not in SUPPORTED_ALGORITHMS:
            raise sec.error(where, f"unsupported algorithm {alg!r}; supported: {', '.join(SUPPORTED_ALGORITHMS)}")
    algorithms = tuple(dict.fromkeys(algorithms))

    hmac_secret_env = sec.str("hmac_secret_env", None)
    has_hmac = any(a in HMAC_ALGORITHMS for a in algorithms)
    if has_hmac and not hmac_secret_env:
        raise sec.error("algorithms", "HMAC algorithms (HS256/384/512) need hmac_secret_env: the name of the "
                        "environment variable that holds the shared secret")
    if hmac_secret_env and not has_hmac:
        raise sec.error("hmac_secret_env", "is set but algorithms lists no HMAC algorithm (HS256, HS384, HS512)")
    if hmac_secret_env and not _ENV_NAME.match(hmac_secret_env):
        raise sec.error("hmac_secret_env", "must be an environment variable name (letters, digits, underscore)")

    jwks_uri = sec.str("jwks_uri", None)
    jwks_file = sec.path_value("jwks_file", None)
    if jwks_uri and jwks_file:
        raise sec.error("jwks_file", "give one key source: jwks_uri or jwks_file (or neither, for OIDC discovery)")
    asymmetric = any(a in ASYMMETRIC_ALGORITHMS for a in algorithms)
    if not asymmetric and (jwks_uri or jwks_file):
        raise sec.error("jwks_uri" if jwks_uri else "jwks_file",
                        "algorithms lists only HMAC algorithms, so these keys would never be used")
    if jwks_uri and (why := fetchable_url(jwks_uri)):
        raise sec.error("jwks_uri", why)
    if asymmetric and not jwks_uri and not jwks_file and (why := fetchable_url(issuer)):
        raise sec.error("issuer", f"{why}, so its keys cannot be found by OIDC discovery: "
                        "set jwks_uri or jwks_file")

    leeway = sec.int("leeway_seconds", 30, min=0, max=600)
    cache = sec.int("jwks_cache_seconds", 3600, min=60, max=7 * 86400)

    required: list[tuple[str, ClaimValue]] = []
    req_sec = sec.section("required_claims")
    if req_sec is not None:
        for claim in list(req_sec.keys()):
            required.append((claim, _claim_value(req_sec, claim)))
        req_sec.done()

    subject_claim = _claim_path(sec, "subject_claim", "sub")
    email_claim = _claim_path(sec, "email_claim", "email")
    name_claim = _claim_path(sec, "name_claim", "name")
    groups_claim = _claim_path(sec, "groups_claim", "groups")
    user_claim = _claim_path(sec, "user_claim", None)
    static_groups = tuple(dict.fromkeys(sec.str_list("static_groups", ())))
    sec.done()
    assert subject_claim is not None and email_claim is not None and name_claim is not None
    assert groups_claim is not None
    return IssuerConfig(
        name=name, issuer=issuer, audience=audience, algorithms=algorithms, jwks_uri=jwks_uri,
        jwks_file=jwks_file, hmac_secret_env=hmac_secret_env, leeway_seconds=leeway,
        jwks_cache_seconds=cache, required_claims=tuple(required), subject_claim=subject_claim,
        email_claim=email_claim, name_claim=name_claim, groups_claim=groups_claim,
        static_groups=static_groups, user_claim=user_claim,
    )


def parse_issuers(secs: list[Section]) -> tuple[IssuerConfig, ...]:
    """The policy's ``[[issuers]]`` tables; raises `PolicyError` naming the file and key path."""
    out: list[IssuerConfig] = []
    seen: dict[str, int] = {}
    for i, sec in enumerate(secs):
        cfg = _parse_issuer(sec)
        if cfg.name in seen:
            raise sec.error("name", f"duplicate issuer name {cfg.name!r} (also issuers[{seen[cfg.name]}])")
        seen[cfg.name] = i
        out.append(cfg)
    return tuple(out)


# -- token parsing -----------------------------------------------------------------------------


def _b64decode(segment: str) -> bytes:
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(raw: bytes) -> dict[str, Any]:
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
        raise TokenError("malformed", f"The token is not a signed JWT (header.payload.signature): it has {what}. "
                         + HINT_NEW_TOKEN)
    try:
        header = _json_object(_b64decode(parts[0]))
    except (ValueError, binascii.Error):
        raise TokenError("malformed", "The token's header is not base64url-encoded JSON: it is not a JWT. "
                         + HINT_NEW_TOKEN) from None
    try:
        claims = _json_object(_b64decode(parts[1]))
    except (ValueError, binascii.Error):
        raise TokenError("malformed", "The token's payload is not base64url-encoded JSON: it is not a JWT. "
                         + HINT_NEW_TOKEN) from None
    try:
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error):
        raise TokenError("malformed", "The token's signature is not base64url-encoded. " + HINT_NEW_TOKEN) from None
    if not isinstance(header.get("alg"), str):
        raise TokenError("malformed", "The token's header names no signing algorithm (alg). " + HINT_NEW_TOKEN)
    if "crit" in header:
        raise TokenError("malformed", "The token's header has critical extensions (crit), which Gatehouse does not support.")
    if header.get("b64", True) is not True:
        raise TokenError("malformed", "The token uses an unencoded payload (b64: false), which Gatehouse does not accept.")
    return ParsedToken(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def parse_proxy_authorization(value: str) -> tuple[str, str | None]:
    """``(token, user)`` from a Proxy-Authorization value.

    ``Basic base64(user:TOKEN)`` is what ``HTTPS_PROXY=http://user:TOKEN@host:port`` sends (the
    user is returned for `user_claim`); ``Bearer TOKEN`` is also accepted. The value is
    size-checked before anything else is done with it.
    """
    if len(value) > MAX_HEADER_BYTES:
        raise TokenError("too_large", f"The proxy credentials are {len(value)} bytes long; at most "
                         f"{MAX_HEADER_BYTES} are accepted.")
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
            raise TokenError("malformed", "The proxy credentials (Basic) are not valid base64. "
                             + HINT_NEW_TOKEN) from None
        user, sep, password = decoded.partition(":")
        if not sep or not password.strip():
            raise TokenError("no_password", "The proxy credentials have a user name but no password. The token "
                             "goes in the password: HTTPS_PROXY=http://gatehouse:TOKEN@HOST:PORT (run "
                             "`gatehouse token` to get one).")
        return password.strip(), user
    # The scheme is not echoed: without a space, the "scheme" is the credential itself.
    raise TokenError("malformed", "The proxy credentials use neither the Basic nor the Bearer scheme; use Basic "
                     "(HTTPS_PROXY=http://gatehouse:TOKEN@HOST:PORT) or Bearer.")


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
        return isinstance(_json_object(_b64decode(head)).get("alg"), str)
    except (ValueError, binascii.Error):
        return False


def unverified_issuer(value: str) -> str | None:
    """The ``iss`` claim of a JWT-shaped string, unverified; None when it has none."""
    try:
        iss = _json_object(_b64decode(value.strip().split(".")[1])).get("iss")
    except (ValueError, binascii.Error, IndexError):
        return None
    return iss if isinstance(iss, str) else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).hexdigest()


# -- claims helpers ----------------------------------------------------------------------------


def claim_at(claims: Mapping[str, Any], path: ClaimPath) -> Any:
    """The value at a claim path, or None.

    A string path is first taken as one claim name (namespaced claims such as
    ``https://example.com/groups`` contain dots); otherwise it is split on dots, the longest
    existing key winning at each level, so ``https://example.com/claims.groups`` also works.
    A tuple is an exact list of path segments.
    """
    if isinstance(path, tuple):
        cur: Any = claims
        for seg in path:
            if not isinstance(cur, dict) or seg not in cur:
                return None
            cur = cur[seg]
        return cur
    if path in claims:
        return claims[path]
    segs = path.split(".")
    cur = claims
    i = 0
    while i < len(segs):
        if not isinstance(cur, dict):
            return None
        for j in range(len(segs), i, -1):
            key = ".".join(segs[i:j])
            if key in cur:
                cur = cur[key]
                i = j
                break
        else:
            return None
    return cur


def _path_name(path: ClaimPath) -> str:
    return path if isinstance(path, str) else ".".join(path)


def _show(value: Any, limit: int = 80) -> str:
    """A claim value for a message: JSON, shortened. Never used on the token itself."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _same(actual: Any, expected: ClaimScalar) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, (int, float)):
        return isinstance(actual, (int, float)) and actual == expected
    return isinstance(actual, str) and actual == expected


def claim_matches(actual: Any, expected: ClaimValue) -> bool:
    """A required claim: equal to the value (or one of a tuple); a list claim must contain it."""
    options = expected if isinstance(expected, tuple) else (expected,)
    values = actual if isinstance(actual, list) else [actual]
    return any(_same(a, e) for a in values for e in options)


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenError("claims", f"The token's {name} claim is not a number of seconds since the epoch.")
    return float(value)


# -- keys --------------------------------------------------------------------------------------


def fetch_url(url: str, timeout: float = FETCH_TIMEOUT_SECONDS, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """GET a discovery or JWKS document (blocking; never call it on the event loop)."""
    handlers: list[urllib.request.BaseHandler] = []
    if _is_loopback(urllib.parse.urlsplit(url).hostname):
        # An HTTPS_PROXY in the gateway's own environment must not capture loopback fetches.
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "gatehouse"})
    with opener.open(req, timeout=timeout) as resp:
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        data = resp.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(f"document larger than {max_bytes} bytes")
    return data


def _describe_error(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return f"{e.reason}"
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


@dataclass(frozen=True)
class VerificationKey:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: Any  # a cryptography public key

    def fits(self, alg: str) -> bool:
        kty, crv = ASYMMETRIC_ALGORITHMS[alg]
        return self.kty == kty and (crv is None or self.crv == crv) and (self.alg is None or self.alg == alg)


@dataclass(frozen=True)
class KeySet:
    keys: tuple[VerificationKey, ...]
    loaded_at: float
    origin: str  # where the keys came from, for messages
    skipped: int = 0

    def with_kid(self, kid: str | None) -> list[VerificationKey]:
        return [k for k in self.keys if kid is None or k.kid == kid]


def _jwk_to_key(jwk: Mapping[str, Any]) -> VerificationKey | None:
    """One JWK as a verification key, or None when it is not a usable public signing key."""
    if not isinstance(jwk, dict):
        return None
    kty = jwk.get("kty")
    use = jwk.get("use")
    if use is not None and use != "sig":
        return None
    ops = jwk.get("key_ops")
    if isinstance(ops, list) and "verify" not in ops:
        return None
    alg = jwk.get("alg") if isinstance(jwk.get("alg"), str) else None
    if alg is not None and alg not in ASYMMETRIC_ALGORITHMS:
        return None  # e.g. an encryption key, or "HS256": never take a symmetric key from a JWKS
    crv = jwk.get("crv") if isinstance(jwk.get("crv"), str) else None
    by_type = {"RSA": "RS256", "EC": {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}, "OKP": {"Ed25519": "EdDSA"}}
    family = by_type.get(kty) if isinstance(kty, str) else None
    if family is None:
        return None
    algname = family if isinstance(family, str) else family.get(crv or "")
    if algname is None:
        return None
    try:
        key = _ALGORITHMS[algname].from_jwk(jwk)
    except Exception:  # pyjwt raises several types for a bad JWK; any of them means "skip it"
        return None
    if hasattr(key, "public_key") and not hasattr(key, "verify"):
        key = key.public_key()  # a JWKS that (wrongly) publishes a private key: keep only the public half
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
    return VerificationKey(kid, kty, crv, alg, key)


def parse_jwks(data: bytes, origin: str, loaded_at: float) -> KeySet:
    doc = _json_object(data)
    raw = doc.get("keys")
    if not isinstance(raw, list):
        raise ValueError("not a JWKS (no keys array)")
    keys = [k for k in (_jwk_to_key(j) for j in raw[:MAX_KEYS]) if k is not None]
    if not keys:
        raise ValueError("the JWKS holds no usable public signing key")
    return KeySet(tuple(keys), loaded_at, origin, skipped=len(raw) - len(keys))


class KeyCache:
    """The signing keys of one key source (discovery URL, jwks_uri or jwks_file), cached.

    Thread-safe: the event loop reads it; worker threads refresh it.
    """

    def __init__(self, kind: str, location: str, issuer: str, ttl: float, *, fetch: Callable[[str], bytes],
                 clock: Callable[[], float], min_refetch: float) -> None:
        self.kind = kind  # discovery | jwks_uri | jwks_file
        self.location = location
        self.issuer = issuer
        self.ttl = ttl
        self._fetch = fetch
        self._clock = clock
        self._min_refetch = min_refetch
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._last_attempt = -math.inf
        self._last_error: str | None = None
        self._background: threading.Thread | None = None

    @property
    def local(self) -> bool:
        return self.kind == "jwks_file"

    @property
    def keys(self) -> KeySet | None:
        return self._keys

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def describe(self) -> str:
        return {"discovery": f"OIDC discovery at {self.location}", "jwks_uri": f"the JWKS at {self.location}",
                "jwks_file": f"the JWKS file {self.location}"}[self.kind]

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> KeySet:
        now = self._clock()
        if self.kind == "jwks_file":
            return parse_jwks(Path(self.location).read_bytes(), self.location, now)
        jwks_uri = self.location
        if self.kind == "discovery":
            doc = _json_object(self._fetch(self.location))
            if doc.get("issuer") != self.issuer:
                raise ValueError(f"the discovery document names issuer {_show(doc.get('issuer'))}, not {_show(self.issuer)}")
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str) or (why := fetchable_url(jwks_uri)):
                raise ValueError(f"the discovery document's jwks_uri {_show(jwks_uri)} "
                                 f"{why if isinstance(jwks_uri, str) else 'is missing'}")
        return parse_jwks(self._fetch(jwks_uri), jwks_uri, now)

    def refresh(self, *, force: bool = False) -> bool:
        """Load the keys now (blocking), unless another load happened within min_refetch.

        On failure the cached keys stay. Returns whether a load was attempted.
        """
        with self._lock:
            now = self._clock()
            if not force and now - self._last_attempt < self._min_refetch:
                return False
            self._last_attempt = now
            try:
                self._keys = self._load()
                self._last_error = None
            except Exception as e:  # network, parse, discovery mismatch: all mean "keep what we have"
                self._last_error = _describe_error(e)
            return True

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._background is not None and self._background.is_alive():
                return
            if self._clock() - self._last_attempt < self._min_refetch:
                return
            t = threading.Thread(target=self.refresh, name=f"gatehouse-jwks-{self.issuer}", daemon=True)
            self._background = t
        t.start()

    def join_background(self, timeout: float | None = None) -> None:
        t = self._background
        if t is not None:
            t.join(timeout)

    # -- lookup ----------------------------------------------------------------------------
    def lookup(self, kid: str | None, *, allow_fetch: bool) -> tuple[KeySet, list[VerificationKey]]:
        """The cached keys with this kid (all keys when the token names none).

        Raises TokenError(unknown_key / no_keys), or FetchRequired when only a network fetch
        could answer and `allow_fetch` is False.
        """
        ks = self._keys
        now = self._clock()
        if ks is not None:
            found = ks.with_kid(kid)
            if found:
                if now - ks.loaded_at >= self.ttl:
                    if self.local:
                        self.refresh()
                    elif allow_fetch:
                        self.refresh()
                    else:
                        self._refresh_in_background()  # stale keys keep verifying meanwhile
                    ks = self._keys or ks
                    found = ks.with_kid(kid) or found
                return ks, found
        # Not known (first use, or a kid the IdP may just have rotated in): load, rate-limited;
        # or wait for a load another thread has in progress.
        if now - self._last_attempt >= self._min_refetch or self._lock.locked():
            if not allow_fetch and not self.local:
                raise FetchRequired(self.issuer)
            self.refresh()
            ks = self._keys
            if ks is not None and (found := ks.with_kid(kid)):
                return ks, found
        raise self._no_key_error(kid)

    def _no_key_error(self, kid: str | None) -> TokenError:
        if self._keys is None:
            why = f" ({self._last_error})" if self._last_error else ""
            return TokenError("no_keys", f"The gateway has no signing keys for this token's issuer: loading them "
                              f"from {self.describe()} failed{why}. Try again in a minute; if it persists, tell "
                              "the gateway operator.")
        return TokenError("unknown_key", "The token names a signing key (kid) that its issuer does not "
                          f"publish ({self.describe()}). It was not signed by that issuer, or the issuer rotated "
                          "its keys: try again in a minute. " + HINT_NEW_TOKEN)


# -- the verifier ------------------------------------------------------------------------------


@dataclass
class _Cached:
    identity: Identity
    config: IssuerConfig
    keyset: KeySet | None  # the key set that verified it (None for HMAC)
    user_value: Any


@dataclass(frozen=True)
class _IssuerEntry:
    config: IssuerConfig
    keys: KeyCache | None
    hmac_secret: bytes | None = field(default=None, repr=False)


class TokenVerifier:
    """Verifies tokens against the configured issuers. Safe to share between threads.

    `fetch(url) -> bytes` loads discovery and JWKS documents (blocking); `clock()` is the time
    for exp/nbf/iat, key TTLs and refetch rate limits; `environ` supplies HMAC secrets.
    """

    def __init__(self, issuers: Sequence[IssuerConfig], *, fetch: Callable[[str], bytes] = fetch_url,
                 clock: Callable[[], float] = time.time, min_refetch_seconds: float = 30.0,
                 cache_size: int = 4096, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self._clock = clock
        self._cache_size = cache_size
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._caches: dict[tuple[str, str, int], KeyCache] = {}
        self._by_iss: dict[str, list[_IssuerEntry]] = {}
        self._by_name: dict[str, _IssuerEntry] = {}
        for cfg in issuers:
            keys = None
            if cfg.key_source != "hmac":
                location = {"discovery": cfg.discovery_url, "jwks_uri": cfg.jwks_uri,
                            "jwks_file": str(cfg.jwks_file)}[cfg.key_source]
                assert location is not None
                # Entries sharing one key source (same issuer, different required claims) share its cache.
                ck = (cfg.key_source, location, cfg.jwks_cache_seconds)
                keys = self._caches.get(ck)
                if keys is None:
                    keys = self._caches[ck] = KeyCache(cfg.key_source, location, cfg.issuer, cfg.jwks_cache_seconds,
                                                       fetch=fetch, clock=clock, min_refetch=min_refetch_seconds)
            secret = None
            if cfg.hmac_secret_env:
                value = environ.get(cfg.hmac_secret_env)
                if not value:
                    raise TokenConfigError(f"issuer {cfg.name!r}: environment variable {cfg.hmac_secret_env} "
                                           "(hmac_secret_env) is not set")
                secret = value.encode()
                shortest = max(HMAC_ALGORITHMS[a] for a in cfg.algorithms if a in HMAC_ALGORITHMS)
                if len(secret) < shortest:
                    raise TokenConfigError(f"issuer {cfg.name!r}: the secret in {cfg.hmac_secret_env} is "
                                           f"{len(secret)} bytes; the HMAC algorithms configured need at least {shortest}")
            entry = _IssuerEntry(cfg, keys, secret)
            self._by_iss.setdefault(cfg.issuer, []).append(entry)
            self._by_name[cfg.name] = entry

    # -- introspection ---------------------------------------------------------------------
    @property
    def issuers(self) -> tuple[IssuerConfig, ...]:
        return tuple(e.config for e in self._by_name.values())

    def trusts(self, iss: str | None) -> bool:
        return iss is not None and iss in self._by_iss

    def key_caches(self) -> list[KeyCache]:
        return list(self._caches.values())

    def key_status(self) -> list[dict[str, Any]]:
        """One line per issuer for diagnostics: where its keys come from and whether they loaded."""
        out = []
        for e in self._by_name.values():
            ks = e.keys.keys if e.keys else None
            out.append({
                "name": e.config.name, "issuer": e.config.issuer, "source": e.config.key_source,
                "location": e.keys.location if e.keys else e.config.hmac_secret_env,
                "keys": len(ks.keys) if ks else (1 if e.hmac_secret else 0),
                "loaded_at": ks.loaded_at if ks else None,
                "last_error": e.keys.last_error if e.keys else None,
            })
        return out

    # -- start-up --------------------------------------------------------------------------
    def prefetch(self) -> list[str]:
        """Load every issuer's keys now (blocking). Returns warnings; never raises."""
        warnings = []
        for cache in self._caches.values():
            cache.refresh(force=True)
            if cache.keys is None:
                names = ", ".join(repr(e.config.name) for e in self._by_name.values() if e.keys is cache)
                warnings.append(f"issuer {names}: could not load signing keys from {cache.describe()} "
                                f"({cache.last_error}); its tokens are refused until the keys can be loaded "
                                "(retried on demand)")
        return warnings

    # -- verification ----------------------------------------------------------------------
    def verify(self, token: str, *, user: str | None = None, allow_fetch: bool = True) -> Identity:
        """The identity a token proves, or TokenError.

        `user` is the proxy user name (Basic credentials); it must equal the issuer's
        `user_claim` when that is set and is ignored otherwise.
        """
        if not isinstance(token, str) or not token.strip():
            raise TokenError("missing", "No token was sent. " + HINT_NEW_TOKEN)
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError("too_large", f"The token is {len(token)} bytes long; at most {MAX_TOKEN_BYTES} are accepted.")
        digest = token_hash(token)
        hit = self._cache_get(digest)
        if hit is not None:
            keys = self._by_name[hit.config.name].keys
            if keys is None or keys.keys is hit.keyset:
                self.check_expiry(hit.identity)
                self._check_user(hit.config, hit.user_value, user)
                return hit.identity
            # The key set changed since (refresh or rotation): verify again, the key may be gone.
            self._cache_pop(digest)

        parsed = parse_token(token)
        iss = parsed.claims.get("iss")
        entries = self._by_iss.get(iss) if isinstance(iss, str) else None
        if not entries:
            # The token's own `iss` is not echoed: nothing in an unverified token is trusted
            # enough to be shown, logged or recorded (it may carry anything).
            trusted = ", ".join(sorted(_show(i) for i in self._by_iss)) or "none"
            what = "an issuer (iss)" if iss is not None else "no issuer (iss)"
            raise TokenError("issuer", f"The token names {what} that this gateway does not trust "
                             f"(trusted: {trusted}). " + HINT_NEW_TOKEN)
        failures: list[TokenError] = []
        for entry in entries:
            try:
                identity, keyset, user_value = self._verify_with(entry, parsed, digest, user, allow_fetch)
            except TokenError as e:
                failures.append(e)
                continue
            self._cache_put(digest, _Cached(identity, entry.config, keyset, user_value))
            return identity
        raise max(failures, key=lambda e: e.rank)  # first of the furthest

    def check_expiry(self, identity: Identity) -> None:
        """Re-check an identity verified earlier (e.g. on CONNECT) against the clock."""
        entry = self._by_name.get(identity.issuer_name)
        leeway = entry.config.leeway_seconds if entry else 0
        if identity.expires_at is not None:
            now = self._clock()
            if now > identity.expires_at + leeway:
                raise self._expired(identity.expires_at, now)

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    def _expired(exp: float, now: float) -> TokenError:
        return TokenError("expired", f"The token expired at {format_time(exp)} ({_ago(now - exp)} ago). "
                          + HINT_NEW_TOKEN)

    def _cache_get(self, digest: str) -> _Cached | None:
        with self._cache_lock:
            hit = self._cache.get(digest)
            if hit is not None:
                self._cache.move_to_end(digest)
            return hit

    def _cache_pop(self, digest: str) -> None:
        with self._cache_lock:
            self._cache.pop(digest, None)

    def _cache_put(self, digest: str, entry: _Cached) -> None:
        if self._cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[digest] = entry
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _verify_with(self, entry: _IssuerEntry, tok: ParsedToken, digest: str, user: str | None,
                     allow_fetch: bool) -> tuple[Identity, KeySet | None, Any]:
        cfg = entry.config
        alg = tok.alg
        if alg.lower() == "none" or not alg:
            raise TokenError("algorithm", "The token is not signed (alg: none); unsigned tokens are never accepted. "
                             + HINT_NEW_TOKEN)
        if alg not in cfg.algorithms:
            shown = alg if alg in _ALGORITHMS else "an algorithm"  # an unverified header: known names only
            raise TokenError("algorithm", f"The token is signed with {shown}, which issuer {cfg.name!r} does "
                             f"not accept (accepted: {', '.join(cfg.algorithms)}). " + HINT_NEW_TOKEN)

        keyset: KeySet | None = None
        if alg in HMAC_ALGORITHMS:
            assert entry.hmac_secret is not None
            ok = _ALGORITHMS[alg].verify(tok.signing_input, entry.hmac_secret, tok.signature)
            if not ok:
                raise TokenError("signature", f"The token's signature does not verify with the shared secret of "
                                 f"issuer {cfg.name!r}: it was altered or not signed by that issuer. " + HINT_NEW_TOKEN)
        else:
            assert entry.keys is not None
            keyset, candidates = entry.keys.lookup(tok.kid, allow_fetch=allow_fetch)
            fitting = [k for k in candidates if k.fits(alg)]
            if not fitting:
                raise TokenError("signature", f"The token is signed with {alg}, but the key it names (kid) of issuer "
                                 f"{cfg.name!r} is a {candidates[0].kty} key: it was not signed by that issuer. "
                                 + HINT_NEW_TOKEN)
            algo = _ALGORITHMS[alg]
            if not any(_safe_verify(algo, tok.signing_input, k.key, tok.signature) for k in fitting):
                raise TokenError("signature", f"The token's signature does not verify with the key it names (kid) of "
                                 f"issuer {cfg.name!r}: it was altered, or signed by someone else. " + HINT_NEW_TOKEN)

        claims = tok.claims
        now = self._clock()
        # Audience: the token must be meant for this gateway.
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a in cfg.audience for a in auds):
            expected = " or ".join(_show(a) for a in cfg.audience)
            got = f"audience {_show(aud)}" if aud is not None else "no audience (aud)"
            raise TokenError("audience", f"The token has {got}; tokens from issuer {cfg.name!r} must be issued "
                             f"for {expected}. Request a token with that audience.")
        leeway = cfg.leeway_seconds
        exp = _numeric(claims, "exp")
        if exp is None:
            raise TokenError("claims", "The token has no expiry (exp); tokens without one are not accepted. "
                             + HINT_NEW_TOKEN)
        if now > exp + leeway:
            raise self._expired(exp, now)
        nbf = _numeric(claims, "nbf")
        if nbf is not None and now + leeway < nbf:
            raise TokenError("not_yet_valid", f"The token is not valid before {format_time(nbf)} (nbf), "
                             f"{_ago(nbf - now)} from now. Check the clock of the machine that issued it.")
        iat = _numeric(claims, "iat")
        if iat is not None and now + leeway < iat:
            raise TokenError("issued_in_future", f"The token says it was issued at {format_time(iat)} (iat), "
                             f"{_ago(iat - now)} from now. Check the clock of the machine that issued it.")
        for path, expected in cfg.required_claims:
            actual = claim_at(claims, path)
            if actual is None:
                raise TokenError("claims", f"The token has no {path!r} claim, which issuer {cfg.name!r} requires "
                                 f"to be {_show(expected)}.")
            if not claim_matches(actual, expected):
                raise TokenError("claims", f"The token's {path!r} claim is {_show(actual)}, but issuer {cfg.name!r} "
                                 f"requires {_show(expected)}.")
        subject = claim_at(claims, cfg.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise TokenError("claims", f"The token has no subject ({_path_name(cfg.subject_claim)!r} claim).")

        user_value = claim_at(claims, cfg.user_claim) if cfg.user_claim is not None else None
        self._check_user(cfg, user_value, user)

        identity = Identity(
            issuer=cfg.issuer,
            subject=subject,
            issuer_name=cfg.name,
            email=_string_claim(claims, cfg.email_claim),
            name=_string_claim(claims, cfg.name_claim),
            groups=_groups(claim_at(claims, cfg.groups_claim), cfg.static_groups),
            token_id=_token_id(claims, digest),
            expires_at=exp,
        )
        return identity, keyset, user_value

    @staticmethod
    def _check_user(cfg: IssuerConfig, user_value: Any, user: str | None) -> None:
        if cfg.user_claim is None or user is None:
            return
        if not isinstance(user_value, str) or user != user_value:
            claim = _path_name(cfg.user_claim)
            raise TokenError("user", f"The proxy user name does not match the token's {claim!r} claim "
                             f"(issuer {cfg.name!r} requires them to be equal). Use your {claim} as the user "
                             "name: HTTPS_PROXY=http://USER:TOKEN@HOST:PORT.")


def _safe_verify(algo: Any, msg: bytes, key: Any, sig: bytes) -> bool:
    try:
        return bool(algo.verify(msg, key, sig))
    except Exception:  # a malformed signature (wrong length, bad DER) is a failed verification
        return False


def _string_claim(claims: Mapping[str, Any], path: ClaimPath) -> str | None:
    value = claim_at(claims, path)
    return value if isinstance(value, str) and value else None


def _groups(value: Any, static: Iterable[str]) -> tuple[str, ...]:
    found: list[str] = []
    if isinstance(value, str) and value:
        found.append(value)
    elif isinstance(value, list):
        found.extend(v for v in value if isinstance(v, str) and v)
    found.extend(static)
    return tuple(dict.fromkeys(found))


def _token_id(claims: Mapping[str, Any], digest: str) -> str:
    jti = claims.get("jti")
    if isinstance(jti, str) and jti:
        return jti[:128]
    return "sha256:" + digest[:32]
