"""Signing keys of the trusted issuers: fetched, parsed, cached per key source, refreshed in threads.

Keys come from OIDC discovery (the default), an explicit ``jwks_uri`` or a ``jwks_file``. A
`KeyCache` holds one source's keys for its TTL, refetches on an unknown ``kid`` at most once per
``min_refetch`` seconds, and keeps its keys when a refetch fails (cached keys keep working while
the IdP is down). A network fetch blocks, so `KeyCache.lookup` takes ``allow_fetch``: without
it (the event-loop fast path) it never touches the network and raises `FetchRequired` when only
a fetch could answer; keys past their TTL are then refreshed in a background thread while the
stale keys go on verifying. A ``jwks_file`` is read inline (small, local).

Only public signing keys of an asymmetric algorithm are ever taken from a JWKS, each with the
key type its algorithm needs, so a public key can never be used as an HMAC secret.
"""

from __future__ import annotations

import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwt.algorithms import get_default_algorithms

from gatehouse.common.urls import is_loopback
from gatehouse.identity.claims import show_value
from gatehouse.identity.config import ASYMMETRIC_ALGORITHMS, fetchable_url
from gatehouse.identity.errors import HINT_NEW_TOKEN, TokenError
from gatehouse.identity.jws import json_object

#: Largest JWKS or discovery document fetched.
MAX_DOCUMENT_BYTES = 1024 * 1024
#: Most keys kept from one JWKS.
MAX_KEYS = 64
FETCH_TIMEOUT_SECONDS = 5.0

_ALGORITHMS = get_default_algorithms()


class FetchRequired(Exception):
    """`verify(..., allow_fetch=False)` would have had to fetch keys: call it again off the event loop."""


def fetch_url(url: str, timeout: float = FETCH_TIMEOUT_SECONDS, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """GET a discovery or JWKS document (blocking; never call it on the event loop)."""
    handlers: list[urllib.request.BaseHandler] = []
    if is_loopback(urllib.parse.urlsplit(url).hostname):
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
    by_type = {
        "RSA": "RS256",
        "EC": {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"},
        "OKP": {"Ed25519": "EdDSA"},
    }
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


def parse_jwks(data: bytes, loaded_at: float) -> KeySet:
    doc = json_object(data)
    raw = doc.get("keys")
    if not isinstance(raw, list):
        raise ValueError("not a JWKS (no keys array)")
    keys = [k for k in (_jwk_to_key(j) for j in raw[:MAX_KEYS]) if k is not None]
    if not keys:
        raise ValueError("the JWKS holds no usable public signing key")
    return KeySet(tuple(keys), loaded_at)


class KeyCache:
    """The signing keys of one key source (discovery URL, jwks_uri or jwks_file), cached.

    Thread-safe: the event loop reads it; worker threads refresh it.
    """

    def __init__(
        self,
        kind: str,
        location: str,
        issuer: str,
        ttl: float,
        *,
        fetch: Callable[[str], bytes],
        clock: Callable[[], float],
        min_refetch: float,
    ) -> None:
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
        return {
            "discovery": f"OIDC discovery at {self.location}",
            "jwks_uri": f"the JWKS at {self.location}",
            "jwks_file": f"the JWKS file {self.location}",
        }[self.kind]

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> KeySet:
        now = self._clock()
        if self.kind == "jwks_file":
            return parse_jwks(Path(self.location).read_bytes(), now)
        jwks_uri = self.location
        if self.kind == "discovery":
            doc = json_object(self._fetch(self.location))
            if doc.get("issuer") != self.issuer:
                raise ValueError(
                    f"the discovery document names issuer {show_value(doc.get('issuer'))}, "
                    f"not {show_value(self.issuer)}"
                )
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str) or (why := fetchable_url(jwks_uri)):
                raise ValueError(
                    f"the discovery document's jwks_uri {show_value(jwks_uri)} "
                    f"{why if isinstance(jwks_uri, str) else 'is missing'}"
                )
        return parse_jwks(self._fetch(jwks_uri), now)

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
            return TokenError(
                "no_keys",
                f"The gateway has no signing keys for this token's issuer: loading them "
                f"from {self.describe()} failed{why}. Try again in a minute; if it persists, tell "
                "the gateway operator.",
            )
        return TokenError(
            "unknown_key",
            "The token names a signing key (kid) that its issuer does not "
            f"publish ({self.describe()}). It was not signed by that issuer, or the issuer rotated "
            "its keys: try again in a minute. " + HINT_NEW_TOKEN,
        )
