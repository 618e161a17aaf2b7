"""A real OpenID Provider for tests: the npm package `oidc-provider` (9.x) on loopback.

It serves discovery and JWKS and issues JWT access tokens through the client-credentials
grant with a resource indicator (the token's audience). Installed into the git-ignored
``.tools/node`` folder (``npm install oidc-provider@^9`` there); `missing_reason()` says
why it cannot run.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from support.harness import stop_process

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = Path(os.environ.get("GATEHOUSE_NODE_MODULES", REPO / ".tools" / "node" / "node_modules"))
PACKAGE_DIR = NODE_MODULES / "oidc-provider"

# Loaded by absolute file URL: the package is ESM-only, and ESM ignores NODE_PATH.
SERVER_JS = r"""
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const pkg = process.env.OIDC_PROVIDER_DIR;
const { default: Provider } = await import(pathToFileURL(path.join(pkg, 'lib', 'index.js')).href);
const jwks = JSON.parse(fs.readFileSync(process.env.OP_JWKS, 'utf8'));
const resource = process.env.OP_RESOURCE;

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    jwks,
    clients: [{
      client_id: process.env.OP_CLIENT_ID,
      client_secret: process.env.OP_CLIENT_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    }],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, indicator) => ({
          scope: 'gatehouse',
          audience: indicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 600,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims: () => ({ groups: JSON.parse(process.env.OP_GROUPS || '[]') }),
  });
  server.on('request', provider.callback());
  process.stdout.write(JSON.stringify({ issuer }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"""


def missing_reason() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (PACKAGE_DIR / "package.json").is_file():
        return (
            f"the npm package oidc-provider is not installed in {NODE_MODULES} "
            "(cd .tools/node && npm install oidc-provider@^9)"
        )
    return None


class OidcProvider:
    """``with OidcProvider(resource=...) as op: op.issuer, op.client_credentials_token()``."""

    def __init__(self, *, resource: str, groups: list[str] | None = None, kid: str = "op-key-1") -> None:
        self.resource = resource
        self.groups = groups or []
        self.kid = kid
        self.client_id = "ci-runner"
        self.client_secret = secrets.token_urlsafe(32)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issuer = ""
        self._proc: subprocess.Popen[str] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.stderr = ""

    def __enter__(self) -> OidcProvider:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        self._dir = tempfile.TemporaryDirectory(prefix="gatehouse-op-")
        d = Path(self._dir.name)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key))
        jwk.pop("key_ops", None)
        jwk.update(kid=self.kid, alg="RS256", use="sig")
        (d / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
        (d / "server.mjs").write_text(SERVER_JS)
        env = {
            **os.environ,
            "OIDC_PROVIDER_DIR": str(PACKAGE_DIR),
            "OP_JWKS": str(d / "jwks.json"),
            "OP_RESOURCE": self.resource,
            "OP_CLIENT_ID": self.client_id,
            "OP_CLIENT_SECRET": self.client_secret,
            "OP_GROUPS": json.dumps(self.groups),
            "NODE_ENV": "test",
        }
        self._proc = subprocess.Popen(
            ["node", str(d / "server.mjs")],
            cwd=d,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        errs: list[str] = []
        threading.Thread(target=lambda: errs.extend(self._proc.stderr), daemon=True).start()  # type: ignore[union-attr]
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not line or not line[0].strip():
            self.stop()
            raise RuntimeError(f"oidc-provider did not start within {timeout}s: {''.join(errs)[-2000:]}")
        self.issuer = json.loads(line[0])["issuer"]
        self.stderr = "".join(errs)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, 10)
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream is not None:
                    stream.close()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def discovery(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.issuer + "/.well-known/openid-configuration", timeout=10) as r:
            return json.loads(r.read())

    def client_credentials_token(self, resource: str | None = None) -> str:
        """An access token (JWT) for `resource` (default: the configured audience)."""
        body = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "scope": "gatehouse", "resource": resource or self.resource}
        ).encode()
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        req = urllib.request.Request(
            self.discovery()["token_endpoint"],
            data=body,
            method="POST",
            headers={"authorization": f"Basic {basic}", "content-type": "application/x-www-form-urlencoded"},
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return json.loads(r.read())["access_token"]
            except urllib.error.URLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
