"""What identity costs per flow and per tunnel, against a typical exchange.

    .venv/bin/python benchmarks/token_verify.py [--quick]

Measured in this run, on this machine:
- per tunnel: the CONNECT's Proxy-Authorization parsed and its token fully verified (cached keys);
- per flow in a tunnel: the tunnel identity's expiry re-check; and the whole addon hook;
- per flow with an in-request token (apiKeyHelper resends the same token each request):
  the verified-token cache hit, and a full verification (first sight of a token) per algorithm;
- the baselines: parsing and re-serialising a ~75 KB Claude Code request body (work the gateway
  does on every exchange anyway), and a nominal 1 s model exchange (the fastest realistic turn;
  Claude Code turns usually take several seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gatehouse.identity import devissuer
from gatehouse.identity.config import parse_issuers
from gatehouse.identity.proxyauth import parse_proxy_authorization
from gatehouse.identity.verifier import TokenVerifier
from gatehouse.policy.reader import Section

NOMINAL_EXCHANGE_S = 1.0


def per_call(fn: Callable[[], Any], number: int, repeat: int = 5) -> float:
    """Median seconds per call over `repeat` runs of `number` calls."""
    fn()
    return statistics.median(t / number for t in timeit.repeat(fn, number=number, repeat=repeat))


def jwk(key: Any, kid: str) -> dict[str, Any]:
    pub = key.public_key()
    algo = {rsa.RSAPrivateKey: jwt.algorithms.RSAAlgorithm, ec.EllipticCurvePrivateKey: jwt.algorithms.ECAlgorithm}
    for cls, a in algo.items():
        if isinstance(key, cls):
            return json.loads(a.to_jwk(pub)) | {"kid": kid, "use": "sig"}
    return json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(pub)) | {"kid": kid, "use": "sig"}


def claude_code_body() -> bytes:
    """A synthetic request shaped like Claude Code's: a long system prompt, ~20 tools, a few turns."""
    tool = {
        "name": "Bash",
        "description": "Run a shell command. " * 60,
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
        },
    }
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code. " * 2000}],
        "tools": [dict(tool, name=f"Tool{i}") for i in range(20)],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "fix the failing test " * 40}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "pytest -x"}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "FAILED test_x.py::test_y " * 100}],
            },
        ],
        "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "session_id": "s" * 36})},
    }
    return json.dumps(body).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = ap.parse_args()
    n = 200 if args.quick else 2000

    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as d:
        return run(Path(d), n)


def run(tmp: Path, n: int) -> int:
    keys = {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk(k, alg) for alg, k in keys.items()]}))
    iss, aud = "https://idp.example.com", "gatehouse"
    cfgs = parse_issuers(
        [
            Section(
                {
                    "name": "corp",
                    "issuer": iss,
                    "audience": aud,
                    "jwks_file": str(tmp / "jwks.json"),
                    "groups_claim": "https://example.com/groups",
                },
                "bench.toml",
                "issuers[0]",
            )
        ]
    )
    cached = TokenVerifier(cfgs)
    uncached = TokenVerifier(cfgs, cache_size=0)
    now = int(time.time())
    claims = {
        "iss": iss,
        "aud": aud,
        "sub": "alice",
        "email": "alice@example.com",
        "iat": now,
        "exp": now + 3600,
        "jti": "j" * 22,
        "https://example.com/groups": ["developers", "sre", "payments-oncall"],
    }
    tokens = {alg: jwt.encode(claims, k, algorithm=alg, headers={"kid": alg}) for alg, k in keys.items()}

    rows: list[tuple[str, float]] = []
    for alg, tok in tokens.items():
        uncached.verify(tok)  # load keys
        rows.append(
            (
                f"full verification, cached keys, {alg} ({len(tok)} B)",
                per_call(lambda t=tok: uncached.verify(t, allow_fetch=False), n),
            )
        )
    tok = tokens["RS256"]
    cached.verify(tok)
    rows.append(
        (
            "in-request token seen before (verified-token cache hit)",
            per_call(lambda: cached.verify(tok, allow_fetch=False), n * 10),
        )
    )
    header = "Basic " + base64.b64encode(f"gatehouse:{tok}".encode()).decode()

    def connect() -> None:
        t, user = parse_proxy_authorization(header)
        uncached.verify(t, user=user, allow_fetch=False)

    rows.append(("per tunnel: CONNECT Proxy-Authorization parse + full RS256 verification", per_call(connect, n)))
    ident = cached.verify(tok)
    rows.append(("per flow in a tunnel: expiry re-check", per_call(lambda: cached.check_expiry(ident), n * 10)))

    # The whole addon hook, as mitmproxy calls it, for a flow in an authenticated tunnel and for
    # a flow carrying its token in x-api-key (apiKeyHelper).
    from mitmproxy import http
    from mitmproxy.test import tflow, tutils

    from gatehouse.mitm.identity import IdentityAddon

    state = tmp / "state"
    devissuer.ensure_dev_issuer(state, tmp / "dev.jwks.json")
    addon = IdentityAddon()
    addon.configure_verifier(cached, api_hosts={"api.anthropic.com"}, passthrough_hosts=set())
    conn = tflow.tflow(
        req=tutils.treq(
            method=b"CONNECT",
            host="api.anthropic.com",
            port=443,
            scheme=b"",
            authority=b"api.anthropic.com:443",
            path=b"",
            content=b"",
            headers=http.Headers(proxy_authorization=header),
        )
    )

    def flows(headers: dict[str, str], count: int) -> list[http.HTTPFlow]:
        return [
            tflow.tflow(
                client_conn=conn.client_conn,
                req=tutils.treq(
                    method=b"POST",
                    host="api.anthropic.com",
                    port=443,
                    scheme=b"https",
                    path=b"/v1/messages",
                    headers=http.Headers(**headers),
                    content=b"{}",
                ),
            )
            for _ in range(count)
        ]

    async def hook_cost(batch: list[http.HTTPFlow]) -> float:
        t0 = time.perf_counter()
        for f in batch:
            await addon.requestheaders(f)
        return (time.perf_counter() - t0) / len(batch)

    async def run_hooks() -> tuple[float, float]:
        await addon.http_connect(conn)
        tunnel = statistics.median([await hook_cost(flows({}, n)) for _ in range(5)])
        helper = statistics.median(
            [await hook_cost(flows({"x_api_key": tok, "authorization": f"Bearer {tok}"}, n)) for _ in range(5)]
        )
        return tunnel, helper

    tunnel_hook, helper_hook = asyncio.run(run_hooks())
    rows.append(("addon hook per flow, tunnel identity", tunnel_hook))
    rows.append(("addon hook per flow, apiKeyHelper token (cache hit, headers stripped)", helper_hook))

    body = claude_code_body()
    baseline = per_call(lambda: json.dumps(json.loads(body)), max(20, n // 20))

    print(f"Token verification cost (Python {sys.version.split()[0]}, {n} iterations per row, median of 5)")
    print(
        f"baseline A: parse + serialise a {len(body) // 1024} KB Claude Code request body = "
        f"{baseline * 1e6:,.0f} us (measured now)"
    )
    print(f"baseline B: a model exchange, nominal {NOMINAL_EXCHANGE_S:.0f} s (the fastest realistic turn)")
    print()
    print(f"{'what':<76} {'us':>9} {'% of A':>8} {'% of B':>9}")
    for label, secs in rows:
        print(f"{label:<76} {secs * 1e6:>9.1f} {secs / baseline * 100:>7.1f}% {secs / NOMINAL_EXCHANGE_S * 100:>8.4f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
