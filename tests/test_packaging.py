"""Packaging and the `gatehouse run` entry point, as a new user meets them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from harness import GATEWAY_KEY, REPO, free_port, sdk_client, Gateway


def test_wheel_carries_package_data(tmp_path):
    """A non-editable install must find the addon script, policies, rule packs and templates."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
                   check=True, timeout=300, capture_output=True)
    [wheel] = tmp_path.glob("gatehouse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"addons/gateway.py", "addons/core/policy.py", "scripts/cli.py",
                "policies/quickstart.toml", "policies/reference.toml"}
    expected |= {str(p.relative_to(REPO)) for p in (REPO / "policies" / "rules").glob("*.toml")}
    expected |= {str(p.relative_to(REPO)) for p in (REPO / "addons" / "templates").rglob("*") if p.is_file()}
    expected |= {str(p.relative_to(REPO)) for p in (REPO / "addons" / "schemas").glob("*.json")}
    assert expected <= names, sorted(expected - names)


@pytest.mark.e2e
def test_gatehouse_run_starts_the_gateway(tmp_path, upstream):
    """What `make run` does: `gatehouse run` validates, prints client lines, and serves."""
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(ANTHROPIC_API_KEY=GATEWAY_KEY, HOME=str(tmp_path))
    gatehouse = Path(sys.executable).parent / "gatehouse"
    proc = subprocess.Popen(
        [str(gatehouse), "run", "--policy", str(policy), "--listen", f"127.0.0.1:{port}",
         "--upstream", upstream.base_url, "--", "--set", f"ssl_verify_upstream_trusted_ca={upstream.ca_cert_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True, text=True,
    )
    try:
        first = proc.stdout.readline() + proc.stdout.readline() + proc.stdout.readline()
        assert f"127.0.0.1:{port}" in first and "gatehouse env" in first
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        gw = Gateway(policy_path=policy, workdir=tmp_path / "state", port=port)
        msg = sdk_client(gw).messages.create(model="claude-sonnet-4-6", max_tokens=5,
                                             messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text
        assert upstream.requests.messages()[-1].headers["x-api-key"] == GATEWAY_KEY
        # `gatehouse env` finds the CA that `run` created and prints usable lines.
        out = subprocess.run([str(gatehouse), "env", "--policy", str(policy), "--gateway", f"127.0.0.1:{port}"],
                             capture_output=True, text=True, env=env, timeout=30)
        assert out.returncode == 0, out.stderr
        assert f"export HTTPS_PROXY=http://127.0.0.1:{port}" in out.stdout
        assert "NODE_EXTRA_CA_CERTS=" in out.stdout and "SSL_CERT_FILE=" in out.stdout
        bundle = tmp_path / "state" / "ca-bundle.pem"
        assert (tmp_path / "state" / "mitmproxy" / "mitmproxy-ca-cert.pem").read_text() in bundle.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def test_gatehouse_run_refuses_bad_policy(tmp_path):
    policy = tmp_path / "bad.toml"
    policy.write_text('[gateway]\nother_hosts = "open"\n')
    gatehouse = Path(sys.executable).parent / "gatehouse"
    r = subprocess.run([str(gatehouse), "run", "--policy", str(policy)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"{policy}: gateway.other_hosts: must be one of" in r.stderr
