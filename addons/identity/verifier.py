"""Turning a token into an `Identity`: the checks a token must pass, in order.

`TokenVerifier.verify` returns the `Identity` a token proves or raises `TokenError(check,
message)`, whose message says which check failed and what to do, and never contains the token.

Order of checks. Everything an attacker controls is looked at only as far as needed to find the
key: the token is size-capped, split, decoded (strict base64url, JSON objects); its ``iss`` picks
the issuer and its header ``alg`` must be one the issuer accepts (``none`` never, HMAC only with a
configured secret, and an asymmetric algorithm only with a key of the matching type, so a public
key can never be used as an HMAC secret). Only after the signature verifies are the claims
judged (audience, exp/nbf/iat, required claims, subject), so a forged token only ever learns
"bad signature".

Keys come from `KeyCache`s (gatehouse.identity.keys); with ``allow_fetch=False`` (the event-loop
fast path) `verify` never touches the network and raises `FetchRequired` when it would have to
wait for keys; the caller then runs ``verify`` again in a worker thread.

Verified tokens are cached by their sha256 (bounded), so the token a client resends on every
request costs a hash and an expiry check, not a signature verification; an entry is only used
while the key set that verified it is still the current one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jwt.algorithms import get_default_algorithms

from gatehouse.common.lru import Lru
from gatehouse.exchange import Identity
from gatehouse.identity.claims import (
    claim_at,
    claim_matches,
    format_time,
    group_names,
    numeric_claim,
    path_name,
    show_value,
    string_claim,
)
from gatehouse.identity.config import HMAC_ALGORITHMS, IssuerConfig
from gatehouse.identity.errors import HINT_NEW_TOKEN, TokenError
from gatehouse.identity.jws import MAX_TOKEN_BYTES, ParsedToken, parse_token, token_hash
from gatehouse.identity.keys import KeyCache, KeySet, fetch_url

_ALGORITHMS = get_default_algorithms()


class TokenConfigError(ValueError):
    """The issuers cannot be used as configured (e.g. an HMAC secret variable is not set)."""


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

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        fetch: Callable[[str], bytes] = fetch_url,
        clock: Callable[[], float] = time.time,
        min_refetch_seconds: float = 30.0,
        cache_size: int = 4096,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self._clock = clock
        self._cache: Lru[str, _Cached] = Lru(cache_size)
        self._caches: dict[tuple[str, str, int], KeyCache] = {}
        self._by_iss: dict[str, list[_IssuerEntry]] = {}
        self._by_name: dict[str, _IssuerEntry] = {}
        for cfg in issuers:
            keys = None
            if cfg.key_source != "hmac":
                location = {"discovery": cfg.discovery_url, "jwks_uri": cfg.jwks_uri, "jwks_file": str(cfg.jwks_file)}[
                    cfg.key_source
                ]
                assert location is not None
                # Entries sharing one key source (same issuer, different required claims) share its cache.
                ck = (cfg.key_source, location, cfg.jwks_cache_seconds)
                keys = self._caches.get(ck)
                if keys is None:
                    keys = self._caches[ck] = KeyCache(
                        cfg.key_source,
                        location,
                        cfg.issuer,
                        cfg.jwks_cache_seconds,
                        fetch=fetch,
                        clock=clock,
                        min_refetch=min_refetch_seconds,
                    )
            secret = None
            if cfg.hmac_secret_env:
                value = environ.get(cfg.hmac_secret_env)
                if not value:
                    raise TokenConfigError(
                        f"issuer {cfg.name!r}: environment variable {cfg.hmac_secret_env} (hmac_secret_env) is not set"
                    )
                secret = value.encode()
                shortest = max(HMAC_ALGORITHMS[a] for a in cfg.algorithms if a in HMAC_ALGORITHMS)
                if len(secret) < shortest:
                    raise TokenConfigError(
                        f"issuer {cfg.name!r}: the secret in {cfg.hmac_secret_env} is "
                        f"{len(secret)} bytes; the HMAC algorithms configured need at least {shortest}"
                    )
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
            out.append(
                {
                    "name": e.config.name,
                    "issuer": e.config.issuer,
                    "source": e.config.key_source,
                    "location": e.keys.location if e.keys else e.config.hmac_secret_env,
                    "keys": len(ks.keys) if ks else (1 if e.hmac_secret else 0),
                    "loaded_at": ks.loaded_at if ks else None,
                    "last_error": e.keys.last_error if e.keys else None,
                }
            )
        return out

    # -- start-up --------------------------------------------------------------------------
    def prefetch(self) -> list[str]:
        """Load every issuer's keys now (blocking). Returns warnings; never raises."""
        warnings = []
        for cache in self._caches.values():
            cache.refresh(force=True)
            if cache.keys is None:
                names = ", ".join(repr(e.config.name) for e in self._by_name.values() if e.keys is cache)
                warnings.append(
                    f"issuer {names}: could not load signing keys from {cache.describe()} "
                    f"({cache.last_error}); its tokens are refused until the keys can be loaded "
                    "(retried on demand)"
                )
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
            raise TokenError(
                "too_large", f"The token is {len(token)} bytes long; at most {MAX_TOKEN_BYTES} are accepted."
            )
        digest = token_hash(token)
        hit = self._cache.get(digest)
        if hit is not None:
            keys = self._by_name[hit.config.name].keys
            if keys is None or keys.keys is hit.keyset:
                self.check_expiry(hit.identity)
                self._check_user(hit.config, hit.user_value, user)
                return hit.identity
            # The key set changed since (refresh or rotation): verify again, the key may be gone.
            self._cache.pop(digest)

        parsed = parse_token(token)
        iss = parsed.claims.get("iss")
        entries = self._by_iss.get(iss) if isinstance(iss, str) else None
        if not entries:
            # The token's own `iss` is not echoed: nothing in an unverified token is trusted
            # enough to be shown, logged or recorded (it may carry anything).
            trusted = ", ".join(sorted(show_value(i) for i in self._by_iss)) or "none"
            what = "an issuer (iss)" if iss is not None else "no issuer (iss)"
            raise TokenError(
                "issuer",
                f"The token names {what} that this gateway does not trust (trusted: {trusted}). " + HINT_NEW_TOKEN,
            )
        failures: list[TokenError] = []
        for entry in entries:
            try:
                identity, keyset, user_value = self._verify_with(entry, parsed, digest, user, allow_fetch)
            except TokenError as e:
                failures.append(e)
                continue
            self._cache.put(digest, _Cached(identity, entry.config, keyset, user_value))
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
        return TokenError(
            "expired", f"The token expired at {format_time(exp)} ({_ago(now - exp)} ago). " + HINT_NEW_TOKEN
        )

    def _verify_with(
        self, entry: _IssuerEntry, tok: ParsedToken, digest: str, user: str | None, allow_fetch: bool
    ) -> tuple[Identity, KeySet | None, Any]:
        cfg = entry.config
        alg = tok.alg
        if alg.lower() == "none" or not alg:
            raise TokenError(
                "algorithm",
                "The token is not signed (alg: none); unsigned tokens are never accepted. " + HINT_NEW_TOKEN,
            )
        if alg not in cfg.algorithms:
            shown = alg if alg in _ALGORITHMS else "an algorithm"  # an unverified header: known names only
            raise TokenError(
                "algorithm",
                f"The token is signed with {shown}, which issuer {cfg.name!r} does "
                f"not accept (accepted: {', '.join(cfg.algorithms)}). " + HINT_NEW_TOKEN,
            )

        keyset: KeySet | None = None
        if alg in HMAC_ALGORITHMS:
            assert entry.hmac_secret is not None
            ok = _ALGORITHMS[alg].verify(tok.signing_input, entry.hmac_secret, tok.signature)
            if not ok:
                raise TokenError(
                    "signature",
                    f"The token's signature does not verify with the shared secret of "
                    f"issuer {cfg.name!r}: it was altered or not signed by that issuer. " + HINT_NEW_TOKEN,
                )
        else:
            assert entry.keys is not None
            keyset, candidates = entry.keys.lookup(tok.kid, allow_fetch=allow_fetch)
            fitting = [k for k in candidates if k.fits(alg)]
            if not fitting:
                raise TokenError(
                    "signature",
                    f"The token is signed with {alg}, but the key it names (kid) of issuer "
                    f"{cfg.name!r} is a {candidates[0].kty} key: it was not signed by that issuer. " + HINT_NEW_TOKEN,
                )
            algo = _ALGORITHMS[alg]
            if not any(_safe_verify(algo, tok.signing_input, k.key, tok.signature) for k in fitting):
                raise TokenError(
                    "signature",
                    f"The token's signature does not verify with the key it names (kid) of "
                    f"issuer {cfg.name!r}: it was altered, or signed by someone else. " + HINT_NEW_TOKEN,
                )

        claims = tok.claims
        now = self._clock()
        # Audience: the token must be meant for this gateway.
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a in cfg.audience for a in auds):
            expected = " or ".join(show_value(a) for a in cfg.audience)
            got = f"audience {show_value(aud)}" if aud is not None else "no audience (aud)"
            raise TokenError(
                "audience",
                f"The token has {got}; tokens from issuer {cfg.name!r} must be issued "
                f"for {expected}. Request a token with that audience.",
            )
        leeway = cfg.leeway_seconds
        exp = numeric_claim(claims, "exp")
        if exp is None:
            raise TokenError(
                "claims", "The token has no expiry (exp); tokens without one are not accepted. " + HINT_NEW_TOKEN
            )
        if now > exp + leeway:
            raise self._expired(exp, now)
        _check_not_ahead(claims, "nbf", "not_yet_valid", "is not valid before", now, leeway)
        _check_not_ahead(claims, "iat", "issued_in_future", "says it was issued at", now, leeway)
        for path, expected in cfg.required_claims:
            actual = claim_at(claims, path)
            if actual is None:
                raise TokenError(
                    "claims",
                    f"The token has no {path!r} claim, which issuer {cfg.name!r} requires "
                    f"to be {show_value(expected)}.",
                )
            if not claim_matches(actual, expected):
                raise TokenError(
                    "claims",
                    f"The token's {path!r} claim is {show_value(actual)}, but issuer "
                    f"{cfg.name!r} requires {show_value(expected)}.",
                )
        subject = claim_at(claims, cfg.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise TokenError("claims", f"The token has no subject ({path_name(cfg.subject_claim)!r} claim).")

        user_value = claim_at(claims, cfg.user_claim) if cfg.user_claim is not None else None
        self._check_user(cfg, user_value, user)

        identity = Identity(
            issuer=cfg.issuer,
            subject=subject,
            issuer_name=cfg.name,
            email=string_claim(claims, cfg.email_claim),
            name=string_claim(claims, cfg.name_claim),
            groups=group_names(claim_at(claims, cfg.groups_claim), cfg.static_groups),
            token_id=_token_id(claims, digest),
            expires_at=exp,
        )
        return identity, keyset, user_value

    @staticmethod
    def _check_user(cfg: IssuerConfig, user_value: Any, user: str | None) -> None:
        if cfg.user_claim is None or user is None:
            return
        if not isinstance(user_value, str) or user != user_value:
            claim = path_name(cfg.user_claim)
            raise TokenError(
                "user",
                f"The proxy user name does not match the token's {claim!r} claim "
                f"(issuer {cfg.name!r} requires them to be equal). Use your {claim} as the user "
                "name: HTTPS_PROXY=http://USER:TOKEN@HOST:PORT.",
            )


def _check_not_ahead(claims: Mapping[str, Any], claim: str, check: str, says: str, now: float, leeway: float) -> None:
    """A time the token says it starts from (nbf, iat) must not lie ahead, beyond the leeway:
    raises TokenError(`check`) that blames the issuer's clock."""
    t = numeric_claim(claims, claim)
    if t is not None and now + leeway < t:
        raise TokenError(
            check,
            f"The token {says} {format_time(t)} ({claim}), "
            f"{_ago(t - now)} from now. Check the clock of the machine that issued it.",
        )


def _safe_verify(algo: Any, msg: bytes, key: Any, sig: bytes) -> bool:
    try:
        return bool(algo.verify(msg, key, sig))
    except Exception:  # a malformed signature (wrong length, bad DER) is a failed verification
        return False


def _token_id(claims: Mapping[str, Any], digest: str) -> str:
    jti = claims.get("jti")
    if isinstance(jti, str) and jti:
        return jti[:128]
    return "sha256:" + digest[:32]


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
