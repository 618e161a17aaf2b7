"""A real OpenID discovery + JWKS endpoint on loopback, for token tests (unit and end to end)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def jwk_of(key: Any, kid: str, **extra: str) -> dict[str, Any]:
    pub = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(pub))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(pub))
    else:
        d = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(pub))
    d.update(kid=kid, use="sig", **extra)
    return d


def jwks_of(*pairs: tuple[Any, str]) -> dict[str, Any]:
    return {"keys": [jwk_of(k, kid) for k, kid in pairs]}


class IdP:
    """An OpenID Provider's key endpoints: /.well-known/openid-configuration and /jwks."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.hits: list[str] = []
        idp = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                idp.hits.append(self.path)
                if self.path.endswith("/.well-known/openid-configuration"):
                    body = json.dumps({"issuer": idp.issuer, "jwks_uri": idp.issuer + "/jwks"}).encode()
                elif self.path == "/jwks":
                    body = json.dumps(idp.jwks).encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.up = True

    def down(self) -> None:
        """Stop serving: later fetches get connection refused."""
        if self.up:
            self.server.shutdown()
            self.server.server_close()
            self.up = False

    @property
    def jwks_fetches(self) -> int:
        return self.hits.count("/jwks")
