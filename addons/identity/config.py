"""Trusted token issuers as the policy's ``[[issuers]]`` tables describe them.

`parse_issuers` reads the tables into `IssuerConfig`s, refusing (with `PolicyError`, naming the
file and key) anything the verifier could not enforce: unsigned or unknown algorithms, HMAC
without a secret, keys that would never be used, key URLs that may not be fetched. This module
is all the policy loader needs from identity: it holds no keys, fetches nothing and starts no
thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gatehouse.common.urls import http_url_problem
from gatehouse.policy.reader import Section

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

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# A claim named as a string (dots for nesting) or as exact path segments; see `claims.claim_at`.
ClaimPath = str | tuple[str, ...]
ClaimScalar = str | int | float | bool
ClaimValue = ClaimScalar | tuple[ClaimScalar, ...]


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


def fetchable_url(url: str) -> str | None:
    """Why keys may not be fetched from `url`, or None. https only; http for loopback (tests)."""
    return http_url_problem(url, https_unless_loopback=True)


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
        raise sec.error(
            "audience", "expected a non-empty string or array of strings: the audience tokens must be issued for"
        )

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
        raise sec.error(
            "algorithms",
            "HMAC algorithms (HS256/384/512) need hmac_secret_env: the name of the "
            "environment variable that holds the shared secret",
        )
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
        raise sec.error(
            "jwks_uri" if jwks_uri else "jwks_file",
            "algorithms lists only HMAC algorithms, so these keys would never be used",
        )
    if jwks_uri and (why := fetchable_url(jwks_uri)):
        raise sec.error("jwks_uri", why)
    if asymmetric and not jwks_uri and not jwks_file and (why := fetchable_url(issuer)):
        raise sec.error("issuer", f"{why}, so its keys cannot be found by OIDC discovery: set jwks_uri or jwks_file")

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
        name=name,
        issuer=issuer,
        audience=audience,
        algorithms=algorithms,
        jwks_uri=jwks_uri,
        jwks_file=jwks_file,
        hmac_secret_env=hmac_secret_env,
        leeway_seconds=leeway,
        jwks_cache_seconds=cache,
        required_claims=tuple(required),
        subject_claim=subject_claim,
        email_claim=email_claim,
        name_claim=name_claim,
        groups_claim=groups_claim,
        static_groups=static_groups,
        user_claim=user_claim,
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
