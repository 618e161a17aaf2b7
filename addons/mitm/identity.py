"""Identity: every flow through the gateway carries a verified identity, or is refused.

Where the token comes from, per request, first found wins:

1. the request's own token: ``x-gatehouse-token``; else ``x-api-key`` or ``Authorization:
   Bearer`` when its value is a JWT from a trusted issuer (Claude Code's apiKeyHelper sends
   both; the SDKs send ``ANTHROPIC_AUTH_TOKEN`` as ``Authorization``); else the request's own
   ``Proxy-Authorization`` (plain proxied HTTP);
2. the proxy credentials of the CONNECT that opened the tunnel (``HTTPS_PROXY=http://user:TOKEN@...``),
   verified once, whose expiry is re-checked on every flow.

A request's own token beats the tunnel's, so a client refreshing its token (apiKeyHelper)
never has to reconnect; a request token that fails is refused, not silently replaced by the
tunnel's.

Refusals. Clients show a proxy's 407 without its body, so a CONNECT to an API host is never
refused: its requests get a 401 ``authentication_error`` that says what failed and what to
do. CONNECTs to any other host (passthrough or not) need valid proxy credentials, else 407.

Nothing secret stays on the flow: the token headers are removed (``x-gatehouse-token``,
``proxy-authorization`` always; ``x-api-key`` / ``authorization`` when they hold a JWT, so a
real API key is left for the Credentials addon to deal with), and the Exchange gets an
`Identity` (no token). Tokens are held only in local variables while verified.

Event loop. Verification with cached keys runs inline (tens of microseconds, or a hash lookup
for a token seen before); when keys must be fetched, the verifier raises `FetchRequired` and
the verification is repeated in a worker thread (`asyncio.to_thread`), which stalls only that
flow.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from mitmproxy import connection, http

from gatehouse.common.hosts import host_matches
from gatehouse.exchange import Identity
from gatehouse.identity.errors import HINT_NEW_TOKEN, TokenError
from gatehouse.identity.jws import looks_like_jwt, unverified_issuer
from gatehouse.identity.keys import FetchRequired
from gatehouse.identity.proxyauth import MAX_HEADER_BYTES, parse_proxy_authorization
from gatehouse.identity.verifier import TokenVerifier
from gatehouse.mitm.flowutil import exchange_of, fail_closed, refuse
from gatehouse.wire import apierrors
from gatehouse.wire.apierrors import ApiError

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-gatehouse-token"
PROXY_AUTH_REALM = "gatehouse"

# Human names of token sources, used in refusal messages and decisions.
SOURCE_NAMES = {
    TOKEN_HEADER: "the x-gatehouse-token header",
    # No "x-api-key" or "API key" in messages: Claude Code replaces any error message that
    # mentions them with its own "Invalid API key" line, hiding the explanation.
    "x-api-key": "the request's key header (Claude Code's apiKeyHelper)",
    "authorization": "the Authorization header (ANTHROPIC_AUTH_TOKEN)",
    "proxy-authorization": "the proxy credentials",
    "connect": "the proxy credentials (HTTPS_PROXY)",
}


@dataclass
class _Tunnel:
    """What the CONNECT of one client connection proved. Never holds the token."""

    host: str
    identity: Identity | None
    error: TokenError | None  # both None: the CONNECT carried no credentials


@dataclass(frozen=True)
class _Found:
    source: str
    token: str
    user: str | None = None


def _single(headers: http.Headers, name: str) -> str | None:
    """A header that may carry a token: at most one value, size-capped before anything else."""
    values = headers.get_all(name)
    if not values:
        return None
    for v in values:
        if len(v) > MAX_HEADER_BYTES:
            raise TokenError(
                "too_large", f"The {name} header is {len(v)} bytes long; at most {MAX_HEADER_BYTES} are accepted."
            )
    if len(set(values)) > 1:
        raise TokenError(
            "malformed", f"The {name} header was sent {len(values)} times with different values; send one token."
        )
    return values[0]


def _bearer(value: str) -> str | None:
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest.strip() else None


class IdentityAddon:
    """mitmproxy addon: verifies tokens and puts the caller's `Identity` on each flow's Exchange."""

    def __init__(self) -> None:
        self._verifier: TokenVerifier | None = None
        self._api_hosts: frozenset[str] = frozenset()
        self._passthrough_hosts: frozenset[str] = frozenset()
        self._tunnels: dict[str, _Tunnel] = {}
        self._running = False
        self._prefetch_task: asyncio.Task[None] | None = None

    # -- configuration ---------------------------------------------------------------------
    def configure_verifier(
        self, verifier: TokenVerifier | None, *, api_hosts: set[str], passthrough_hosts: set[str]
    ) -> None:
        """Install the policy's verifier (None: the policy has no issuers, identity not required)."""
        old = self._verifier
        self._verifier = verifier
        self._api_hosts = frozenset(api_hosts)
        self._passthrough_hosts = frozenset(passthrough_hosts)
        if old is not None and verifier is not old:
            self._forget_stale_tunnels(old, verifier)
        if self._running:
            self._start_prefetch()

    def _forget_stale_tunnels(self, old_verifier: TokenVerifier, verifier: TokenVerifier | None) -> None:
        # A policy reload may drop or change an issuer: a tunnel verified under the old one no
        # longer proves anything. The token is not kept, so it cannot be re-verified.
        current = {c.name: c for c in verifier.issuers} if verifier else {}
        old = {c.name: c for c in old_verifier.issuers}
        for t in self._tunnels.values():
            ident = t.identity
            if ident is not None and (
                ident.issuer_name not in current or current[ident.issuer_name] != old.get(ident.issuer_name)
            ):
                t.identity = None
                t.error = TokenError(
                    "issuer",
                    "The gateway's trusted issuers changed since this connection was "
                    "opened. Reconnect (restart the client), or send the token with each request.",
                )

    def running(self) -> None:
        self._running = True
        self._start_prefetch()

    def _start_prefetch(self) -> None:
        verifier = self._verifier
        if verifier is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._prefetch_task = loop.create_task(self._prefetch(verifier))

    @staticmethod
    async def _prefetch(verifier: TokenVerifier) -> None:
        # Best effort: an IdP unreachable at start-up is a warning; keys are fetched on demand later.
        for warning in await asyncio.to_thread(verifier.prefetch):
            log.warning("identity: %s", warning)

    # -- hooks -----------------------------------------------------------------------------
    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnels.pop(client.id, None)

    @fail_closed("identity")
    async def http_connect(self, flow: http.HTTPFlow) -> None:
        headers = flow.request.headers
        try:
            raw = _single(headers, "proxy-authorization")
            err: TokenError | None = None
        except TokenError as e:
            raw, err = None, e
        headers.pop("proxy-authorization", None)
        verifier = self._verifier
        if verifier is None:
            return
        host = flow.request.host
        identity: Identity | None = None
        if raw is not None:
            try:
                token, user = parse_proxy_authorization(raw)
                identity = await self._verify(verifier, token, user)
            except TokenError as e:
                err = e
        self._tunnels[flow.client_conn.id] = _Tunnel(host, identity, err)

        if identity is not None:
            exchange_of(flow).identity = identity
            log.debug("identity: CONNECT %s by %s (%s)", host, identity.subject, identity.issuer_name)
            return
        if host_matches(host, self._api_hosts):
            # Never a 407 here: clients would show a bare status. Each request in the tunnel
            # gets a 401 that explains the problem instead.
            if err is not None:
                log.info(
                    "identity: CONNECT %s from %s: proxy credentials refused, so its requests need their "
                    "own token: %s: %s",
                    host,
                    _peer(flow),
                    err.check,
                    err.message,
                )
            return
        kind = "passthrough host" if host_matches(host, self._passthrough_hosts) else "host"
        if err is None:
            err = TokenError(
                "missing",
                f"Connections to {kind} {host} need a Gatehouse token as the proxy password. " + HINT_NEW_TOKEN,
            )
        self._refuse(flow, err, "connect", status=407)

    @fail_closed("identity")
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        headers = flow.request.headers
        verifier = self._verifier
        if verifier is None:
            headers.pop(TOKEN_HEADER, None)
            headers.pop("proxy-authorization", None)
            return
        if flow.response is not None:
            return  # already answered (e.g. by a replay or another addon)
        found: _Found | None = None
        source = "request"  # a header that could not be read names itself in the message
        try:
            try:
                found, note = self._find_request_token(headers, verifier)
            finally:
                self._strip(headers, found.token if found else None)
            source = "connect"
            if found is not None:
                source = found.source
                identity = await self._verify(verifier, found.token, found.user)
            else:
                tunnel = self._tunnels.get(flow.client_conn.id)
                if tunnel is not None and tunnel.identity is not None:
                    identity = tunnel.identity
                    verifier.check_expiry(identity)
                elif tunnel is not None and tunnel.error is not None:
                    raise tunnel.error
                else:
                    raise TokenError("missing", "No Gatehouse token was sent. " + note + HINT_NEW_TOKEN)
        except TokenError as err:
            self._refuse(flow, err, source)
            return
        ex = exchange_of(flow)
        ex.identity = identity
        ex.decide("identity", "allow", f"token verified ({identity.issuer_name})", source=source, check="ok")

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    async def _verify(verifier: TokenVerifier, token: str, user: str | None) -> Identity:
        try:
            return verifier.verify(token, user=user, allow_fetch=False)
        except FetchRequired:
            return await asyncio.to_thread(verifier.verify, token, user=user)

    @staticmethod
    def _find_request_token(headers: http.Headers, verifier: TokenVerifier) -> tuple[_Found | None, str]:
        """The request's own token, first found wins; else None and a hint for the refusal message."""
        value = _single(headers, TOKEN_HEADER)
        if value is not None:
            return _Found(TOKEN_HEADER, value), ""
        note = ""
        for name in ("x-api-key", "authorization"):
            value = _single(headers, name)
            if value is None:
                continue
            candidate = value.strip() if name == "x-api-key" else _bearer(value)
            if candidate is None or not looks_like_jwt(candidate):
                if name == "x-api-key" and not note:
                    # Worded without "x-api-key" or "API key" (see SOURCE_NAMES).
                    note = (
                        "(The client's own key is not a Gatehouse token; the gateway holds the Claude "
                        "credentials itself.) "
                    )
                continue
            iss = unverified_issuer(candidate)
            if verifier.trusts(iss):
                return _Found(name, candidate), ""
            # The unverified issuer is not echoed (see TokenVerifier.verify).
            what = "an issuer" if iss else "no issuer"
            note = f"(The {name} header holds a JWT from {what} that this gateway does not trust.) "
        value = _single(headers, "proxy-authorization")
        if value is not None:
            token, user = parse_proxy_authorization(value)
            return _Found("proxy-authorization", token, user), ""
        return None, note

    @staticmethod
    def _strip(headers: http.Headers, token: str | None) -> None:
        """Remove every header that carried a token; `token` is the one found (known to be a JWT)."""
        headers.pop(TOKEN_HEADER, None)
        headers.pop("proxy-authorization", None)

        def is_jwt(v: str | None) -> bool:
            return v is not None and (v == token or looks_like_jwt(v))

        # A JWT is never an Anthropic API key: don't forward it. A real key is left for Credentials.
        if any(is_jwt(v.strip()) for v in headers.get_all("x-api-key")):
            headers.pop("x-api-key", None)
        if any(is_jwt(_bearer(v)) for v in headers.get_all("authorization")):
            headers.pop("authorization", None)

    def _refuse(self, flow: http.HTTPFlow, err: TokenError, source: str, *, status: int | None = None) -> None:
        where = SOURCE_NAMES.get(source)
        if err.check == "missing":
            text = f"Gatehouse: {err.message}"
        elif where:
            text = f"Gatehouse refused the token from {where} ({err.check}): {err.message}"
        else:
            text = f"Gatehouse refused the token ({err.check}): {err.message}"
        if status == 407:
            api_err = ApiError(
                "authentication_error",
                text,
                status=407,
                extra_headers={"Proxy-Authenticate": f'Basic realm="{PROXY_AUTH_REALM}"'},
            )
        else:
            api_err = apierrors.authentication(text)
        refuse(flow, api_err, "identity", rule=f"identity.{err.check}")
        req = flow.request
        target = req.host if req.method == "CONNECT" else f"{req.host}{req.path.split('?', 1)[0]}"
        log.info(
            "identity: refused %s %s from %s with %d: %s: %s",
            req.method,
            target,
            _peer(flow),
            api_err.status,
            err.check,
            err.message,
        )


def _peer(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return f"{peer[0]}:{peer[1]}" if peer else "?"
