"""Protocols: only HTTP(S) that the gateway parsed is carried. Everything else is refused.

mitmproxy relays what it cannot classify: after a CONNECT, a first write of fewer than three
bytes is "probably not HTTP" (too short for the TLS record check), so with ``rawtcp`` on it
becomes a raw TCP relay to the CONNECT target, with no token check, masking or record; a
WebSocket upgrade is followed by unparsed frames; ``--ignore-hosts`` / ``--tcp-hosts``, DNS
on port 53, QUIC and non-HTTP reverse modes all relay bytes no addon sees. Closed here, at
the root:

- switches: ``rawtcp``, ``websocket`` and ``http3`` are forced off; options and modes that
  relay uninspected (ignore/allow/tcp/udp hosts; socks5, transparent, dns, wireguard, raw
  reverse modes...) stop the gateway at start-up;
- the layer hook: `next_layer` runs mitmproxy's own decision (the built-in NextLayer addon)
  and vets it. Only HTTP and TLS layers are accepted; any other layer (TCP, UDP, DNS, QUIC)
  is replaced by one that closes the connection. When too few bytes arrived to tell TLS
  apart (the first bytes of a TLS record, ``16 03``), no decision is made: mitmproxy waits
  for more data instead of guessing;
- the policy's passthrough hosts stay the only exception: addons/mitm/access.py marks them in
  `tls_clienthello` (``ignore_connection``), after identity verified the CONNECT. That relay
  is created by mitmproxy's TLS layer, not by `next_layer`;
- requests asking to switch protocols (``Upgrade``: WebSocket) are refused with an
  Anthropic-style 400 before anything goes upstream; a 101 from an upstream is replaced by a
  502; HTTP trailers (fields after the body, which no check sees) are refused on requests
  and dropped from responses;
- backstops that should never fire: a TCP/UDP flow never connects and relays nothing, a DNS
  query is answered REFUSED, a WebSocket message is dropped.

It also installs `gatehouse.mitm.patches` (Anthropic-style error pages, HTTP/1 trailers).
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, dns, exceptions, http, tcp, udp
from mitmproxy.proxy import commands, layer, mode_specs
from mitmproxy.proxy.layers import ClientTLSLayer, HttpLayer, ServerTLSLayer

from gatehouse.mitm import patches
from gatehouse.mitm.flowutil import fail_closed, refuse
from gatehouse.wire import apierrors
from gatehouse.wire.apierrors import ApiError

log = logging.getLogger(__name__)

# mitmproxy switches that would carry bytes no addon inspects.
FORCED_OFF = ("rawtcp", "websocket", "http3")
# Options that write whole flows (headers with the injected key, unmasked bodies) to a file
# or to stdout (`hardump = "-"`), past every redaction.
FLOW_DUMP_OPTIONS = ("save_stream_file", "hardump")
# Options that make mitmproxy relay matching connections uninspected.
FORBIDDEN_HOST_OPTIONS = ("ignore_hosts", "allow_hosts", "tcp_hosts", "udp_hosts")
# The only layers `next_layer` may choose: HTTP, and TLS around it (a NextLayer is a decision
# still to be made, vetted when it is).
ALLOWED_LAYERS = (HttpLayer, ClientTLSLayer, ServerTLSLayer, layer.NextLayer)
# The start of every TLS record that opens a handshake (content type 22, major version 3).
TLS_RECORD_START = b"\x16\x03"

UPGRADE_REFUSAL = (
    "Gatehouse carries HTTP requests only: protocol upgrades (WebSocket and others) are not "
    "allowed through the gateway."
)
TRAILERS_REFUSAL = "Gatehouse does not accept HTTP trailers (fields after the body); send the request without them."
# Removed from a request refused here, before identity has stripped them: it goes nowhere.
CREDENTIAL_HEADERS = ("proxy-authorization", "x-gatehouse-token", "authorization", "x-api-key", "cookie")


def allowed_mode(spec: str) -> str | None:
    """None when the proxy mode only carries HTTP(S); else why not."""
    try:
        mode = mode_specs.ProxyMode.parse(spec)
    except ValueError:
        return None  # mitmproxy reports a bad mode itself
    if isinstance(mode, (mode_specs.RegularMode, mode_specs.UpstreamMode)):
        return None
    if isinstance(mode, mode_specs.ReverseMode) and mode.scheme in ("http", "https"):
        return None
    return f"mode {spec!r} can carry connections that are not HTTP(S)"


def needs_more_data(transport: str, data: bytes) -> bool:
    """True when `data` could still be the start of a TLS record but is too short to tell
    (mitmproxy's check needs 3 bytes and treats fewer as "not TLS")."""
    return transport == "tcp" and 0 < len(data) < 3 and TLS_RECORD_START.startswith(data)


def disallowed_layer(chosen: Any) -> Any:
    """The first layer of `chosen`'s stack that is not HTTP or TLS, or None."""
    current = chosen
    while current is not None:
        if not isinstance(current, ALLOWED_LAYERS):
            return current
        if isinstance(current, layer.NextLayer):
            return None
        current = getattr(current, "child_layer", None)
    return None


class RefusedConnection(layer.Layer):
    """Stands where mitmproxy would have relayed bytes it did not parse as HTTP: closes the
    client connection (and the server one, if any) at its first event, and ignores the rest."""

    def __init__(self, context: Any, what: str) -> None:
        super().__init__(context)
        self.what = what
        self._closed = False

    def _handle_event(self, event: Any) -> layer.CommandGenerator[None]:
        if self._closed:
            return
        self._closed = True
        address = self.context.server.address
        target = f"{address[0]}:{address[1]}" if address else "an unknown destination"
        yield commands.Log(
            f"gatehouse: closed a connection to {target}: its content is {self.what}, and "
            "the gateway carries only HTTP(S) it inspects",
            logging.INFO,
        )
        if self.context.server.connected:
            yield commands.CloseConnection(self.context.server)
        yield commands.CloseConnection(self.context.client)


def _discard(chosen: Any) -> None:
    """Remove a rejected layer stack from its context's layer list (layers add themselves)."""
    current = chosen
    while current is not None:
        layers = current.context.layers
        if current in layers:
            layers.remove(current)
        current = getattr(current, "child_layer", None)


class ProtocolGuard:
    """The first addon of the stack: protocol-level refusals before any feature addon."""

    # -- options ---------------------------------------------------------------------------
    def load(self, loader: Any) -> None:
        patches.install()

    def done(self) -> None:
        # The patches stay for the life of the process. `done` outside a shutdown means the
        # gateway script was unloaded (mitmproxy reloads a script whose file changed): if the
        # new load failed, the proxy would go on without identity, masking or these guards.
        try:
            exiting = ctx.master.should_exit.is_set()
        except AttributeError:
            exiting = True
        if not exiting:
            log.error(
                "gatehouse: the gateway script was unloaded or reloaded while running; shutting down "
                "rather than serving without its checks. Restart the gateway to apply a new version."
            )
            ctx.master.shutdown()

    def configure(self, updated: set[str]) -> None:
        for name in FORCED_OFF:
            if name in updated and getattr(ctx.options, name, False):
                ctx.options.update(**{name: False})
        for name in FLOW_DUMP_OPTIONS:
            if name in updated and getattr(ctx.options, name, None):
                raise exceptions.OptionsError(
                    f"Gatehouse never writes flow dumps: mitmproxy's {name} would store the injected API key "
                    "and content as it crossed the wire. The recorder keeps the (masked) audit trail."
                )
        for name in FORBIDDEN_HOST_OPTIONS:
            if name in updated and getattr(ctx.options, name, None):
                raise exceptions.OptionsError(
                    f"Gatehouse inspects every connection: mitmproxy's {name} would relay matching "
                    "connections uninspected. Use [gateway] passthrough_hosts in the policy instead."
                )
        if "mode" in updated:
            for spec in ctx.options.mode:
                if why := allowed_mode(spec):
                    raise exceptions.OptionsError(
                        f"Gatehouse carries only HTTP(S): {why}. Use the regular "
                        "mode (HTTPS_PROXY) or reverse:https://..."
                    )

    # -- layers ----------------------------------------------------------------------------
    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        try:
            self._decide(nextlayer)
        except exceptions.AddonHalt:
            raise
        except Exception as e:
            # Fail closed: a connection whose layer could not be vetted is not carried.
            log.error(
                f"gatehouse: internal error choosing a protocol layer ({type(e).__name__}); the connection is closed"
            )
            nextlayer.layer = RefusedConnection(nextlayer.context, "unknown (internal error)")
        # Nobody after us (mitmproxy's own NextLayer included) may change or make the decision.
        raise exceptions.AddonHalt()

    def _decide(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        if nextlayer.layer is None:
            if needs_more_data(context.client.transport_protocol, nextlayer.data_client()):
                return  # undecided: mitmproxy asks again when more bytes arrive
            builtin = ctx.master.addons.get("nextlayer")
            if builtin is None:
                raise RuntimeError("mitmproxy's NextLayer addon is not loaded")
            builtin.next_layer(nextlayer)
        chosen = nextlayer.layer
        if chosen is None:
            return
        bad = disallowed_layer(chosen)
        if bad is not None:
            _discard(chosen)
            nextlayer.layer = RefusedConnection(context, f"not HTTP ({type(bad).__name__})")

    # -- HTTP ------------------------------------------------------------------------------
    @fail_closed("protocols")
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        req = flow.request
        if req.headers.get_all("upgrade"):
            for name in CREDENTIAL_HEADERS:
                req.headers.pop(name, None)
            log.info(f"gatehouse: refused a protocol upgrade ({req.headers.get('upgrade', '')[:40]!r}) to {req.host}")
            refuse(flow, apierrors.invalid_request(UPGRADE_REFUSAL), "protocols", rule="protocol.upgrade")

    @fail_closed("protocols")
    def request(self, flow: http.HTTPFlow) -> None:
        if not flow.request.trailers:
            return
        # Never forwarded, whatever else happens to the flow.
        flow.request.trailers = None
        if flow.response is None:
            refuse(flow, apierrors.invalid_request(TRAILERS_REFUSAL), "protocols", rule="protocol.trailers")

    @fail_closed("protocols")
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is not None and 100 <= resp.status_code < 200 and resp.status_code != 101:
            # mitmproxy takes an interim response (100 Continue, 103 Early Hints) for the final
            # one: the client would get the interim one and then wait for ever. The Claude API
            # sends none; answer with an error the client can act on.
            refuse(
                flow,
                ApiError(
                    "api_error",
                    f"The upstream sent an interim response ({resp.status_code}); "
                    "Gatehouse cannot relay it. Try again.",
                    status=502,
                    should_retry=True,
                ),
                "protocols",
                rule="protocol.interim",
            )

    @fail_closed("protocols")
    def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None:
            return
        if resp.trailers:
            log.info(f"gatehouse: dropped {len(resp.trailers)} trailer field(s) from a response of {flow.request.host}")
            resp.trailers = None
        if resp.status_code == 101:
            refuse(
                flow,
                ApiError(
                    "api_error", "The upstream tried to switch protocols; Gatehouse carries HTTP only.", status=502
                ),
                "protocols",
                rule="protocol.switch",
            )

    # -- backstops: never reached while next_layer vets every layer ------------------------
    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        log.error("gatehouse: a raw TCP relay was started; it is not connected")
        flow.server_conn.error = "Gatehouse carries only HTTP(S)"

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        flow.messages[-1].content = b""

    def udp_start(self, flow: udp.UDPFlow) -> None:
        log.error("gatehouse: a UDP relay was started; it is not connected")
        flow.server_conn.error = "Gatehouse carries only HTTP(S)"

    def udp_message(self, flow: udp.UDPFlow) -> None:
        flow.messages[-1].content = b""

    def dns_request(self, flow: dns.DNSFlow) -> None:
        flow.response = flow.request.fail(dns.response_codes.REFUSED)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is not None and flow.websocket.messages:
            flow.websocket.messages[-1].drop()
