"""Approvers in end-to-end tests: the real `gatehouse approvals` CLI, run against a gateway, and
policies with command rules on the local dev issuer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support.harness import Gateway

GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")


def approvals_cli(gateway: Gateway, token: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`gatehouse approvals ARGS` as an approver would run it: through the gateway, with a token."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HTTPS_PROXY=gateway.proxy_url(), GATEHOUSE_TOKEN=token, SSL_CERT_FILE=gateway.ca_path)
    return subprocess.run(
        [GATEHOUSE, "approvals", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def pending(gateway: Gateway, token: str) -> list[dict[str, Any]]:
    r = approvals_cli(gateway, token, "list", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def wait_for_pending(gateway: Gateway, token: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    """The pending approvals once there are at least `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        items = pending(gateway, token)
        if len(items) >= count:
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} pending approval(s) within {timeout} s: {items}")
        time.sleep(0.3)


def recorded_decisions(store: str | Path, stage: str, *, until=None, timeout: float = 30) -> list[dict[str, Any]]:
    """The decisions of `stage` in the store's exchange and refusal records, waiting (the uploader
    ships records shortly after the exchange) until `until(decisions)` holds, if given."""
    from gatehouse.recording.reader import iter_records
    from gatehouse.recording.stores import open_store

    deadline = time.monotonic() + timeout
    while True:
        try:
            recs = list(iter_records(open_store(str(store)), kinds=["exchange", "refusal"]))
        except Exception:  # the store folder may not exist before the first upload
            recs = []
        found = [d for r in recs for d in r.get("decisions", []) if d.get("stage") == stage]
        if until is None or until(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def internal_request(gateway: Gateway, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One raw request to the approvals API (https://gatehouse.internal) through the gateway, for
    what the CLI never sends (another input hash, a made-up id)."""
    import http.client
    import ssl

    conn = http.client.HTTPSConnection(
        "127.0.0.1", gateway.port, timeout=30, context=ssl.create_default_context(cafile=gateway.ca_path)
    )
    conn.set_tunnel("gatehouse.internal", 443)
    data = None if body is None else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()
