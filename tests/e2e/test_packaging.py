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

from support.harness import GATEWAY_KEY, REPO, Gateway, free_port, sdk_client

# Folder in the checkout -> where the wheel puts it (pyproject.toml's package-dir).
PACKAGE_ROOTS = {"addons": "gatehouse", "scripts": "gatehouse/cli", "policies": "gatehouse/policies"}
# In scripts/ but not part of the command: run from a checkout only.
CHECKOUT_ONLY = {"scripts/find_python.sh"}


def packaged_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    return f"{PACKAGE_ROOTS[rel.parts[0]]}/{Path(*rel.parts[1:]).as_posix()}"


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    [wheel] = out.glob("gatehouse-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel installed (not editable) into a folder of its own, for PYTHONPATH."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return site


def test_wheel_installs_one_package_named_gatehouse(wheel):
    """Everything under the product's import name: no generic top-level `addons`, `scripts` or
    `policies` in site-packages, and every file of the three folders is in the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"gatehouse"}, top
    expected = set()
    for folder in PACKAGE_ROOTS:
        for path in (REPO / folder).rglob("*"):
            rel = str(path.relative_to(REPO))
            if path.is_file() and "__pycache__" not in path.parts and rel not in CHECKOUT_ONLY:
                expected.add(packaged_name(path))
    assert expected <= names, sorted(expected - names)
    assert "gatehouse/gateway.py" in names and "gatehouse/cli/main.py" in names
    assert "gatehouse/report/templates/index.html" in names and "gatehouse/policies/rules/secrets.toml" in names
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "gatehouse = gatehouse.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_importing_the_installed_modules_leaves_sys_path_alone(site, tmp_path):
    """No module of the wheel edits sys.path when imported: the demo (which needs the checkout's
    tests/support) once put site-packages/gatehouse on it, making `wire`, `policy` top-level names."""
    probe = (
        "import importlib, pkgutil, sys\n"
        "import gatehouse.cli\n"
        "before = list(sys.path)\n"
        "for m in pkgutil.iter_modules(gatehouse.cli.__path__):\n"
        "    importlib.import_module('gatehouse.cli.' + m.name)\n"
        "    assert sys.path == before, (m.name, sys.path[:3])\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
    )
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


@pytest.mark.e2e
def test_gateway_script_runs_from_a_non_editable_install(site, tmp_path, gateway_factory):
    """`mitmdump -s <site-packages>/gatehouse/gateway.py` (what `gatehouse run` does once installed
    from the wheel) serves, importing the installed copy and not the checkout."""
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gatehouse, gatehouse.cli, gatehouse.policies as p; "
            "print(gatehouse.__file__); print(gatehouse.cli.__file__); print(p.__file__)",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    script = site / "gatehouse" / "gateway.py"
    gw = gateway_factory("", env={"PYTHONPATH": str(site)}, script=script)
    msg = sdk_client(gw).messages.create(
        model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text


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
        [
            str(gatehouse),
            "run",
            "--policy",
            str(policy),
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            upstream.base_url,
            "--",
            "--set",
            f"ssl_verify_upstream_trusted_ca={upstream.ca_cert_path}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        text=True,
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
        msg = sdk_client(gw).messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].text
        assert upstream.requests.messages()[-1].headers["x-api-key"] == GATEWAY_KEY
        # `gatehouse env` finds the CA that `run` created and prints usable lines.
        out = subprocess.run(
            [str(gatehouse), "env", "--policy", str(policy), "--gateway", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
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
