"""End-to-end harness: a real `mitmdump` running the Gatehouse stack, and real clients.

Only loopback addresses are used. Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.sockets import OpenSockets, accept_until, loopback_listener

REPO = Path(__file__).resolve().parents[2]
GATEWAY_SCRIPT = REPO / "addons" / "gateway.py"
# Put first on every gateway process's PYTHONPATH: its sitecustomize keeps the process on
# loopback (api.anthropic.com resolves to the stand-in below, other names do not resolve).
STANDIN_DIR = Path(__file__).resolve().parent / "standin"
STANDIN_ENV = "GATEHOUSE_TEST_API_STANDIN"
# The key the gateway holds; tests assert the upstream saw this one and never the caller's.
GATEWAY_KEY = "sk-ant-gateway-held-key-0123456789"
CALLER_KEY = "sk-ant-caller-key-should-never-leave"
IN_CI = bool(os.environ.get("CI"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate `proc` and wait for it; killed if still running after `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def mitmdump_bin() -> str:
    sibling = Path(sys.executable).parent / "mitmdump"
    return str(sibling) if sibling.exists() else "mitmdump"


def need(condition: bool, reason: str) -> None:
    """Skip when an optional tool is missing, but fail under CI, where it must be installed."""
    import pytest

    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


def claude_bin() -> str | None:
    path = os.environ.get("GATEHOUSE_CLAUDE_BIN") or str(REPO / ".tools/node/node_modules/.bin/claude")
    return path if Path(path).exists() else None


@dataclass
class Gateway:
    """A running mitmdump with the gateway stack."""

    policy_path: Path
    workdir: Path
    upstream: str | None = None
    upstream_ca: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None
    # "127.0.0.1:PORT" of an `ApiStandin`: where api.anthropic.com resolves inside the gateway
    # process. None: it does not resolve at all.
    api_standin: str | None = None
    # The addon script mitmdump loads: the checkout's by default, an installed copy's in tests
    # of packaging.
    script: Path = GATEWAY_SCRIPT

    @property
    def confdir(self) -> Path:
        return self.workdir / "mitmproxy"

    @property
    def ca_path(self) -> str:
        return str(self.confdir / "mitmproxy-ca-cert.pem")

    @property
    def log_path(self) -> Path:
        return self.workdir / "mitmdump.log"

    def proxy_url(self, token: str | None = None, user: str = "gatehouse") -> str:
        creds = f"{user}:{token}@" if token else ""
        return f"http://{creds}127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            mitmdump_bin(),
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            "--set",
            f"confdir={self.confdir}",
            "-s",
            str(self.script),
            "--set",
            f"gateway_policy={self.policy_path}",
        ]
        if self.upstream:
            cmd += ["--set", f"gateway_upstream={self.upstream}"]
        if self.upstream_ca:
            cmd += ["--set", f"ssl_verify_upstream_trusted_ca={self.upstream_ca}"]
        return cmd + self.extra_args

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != STANDIN_ENV}
        env["ANTHROPIC_API_KEY"] = GATEWAY_KEY
        env.update(self.env)
        # Never leave loopback, even by accident (tests/support/standin/sitecustomize.py).
        env["PYTHONPATH"] = os.pathsep.join([str(STANDIN_DIR), *filter(None, [env.get("PYTHONPATH")])])
        if self.api_standin:
            env[STANDIN_ENV] = self.api_standin
        return env

    def start(self, timeout: float = 30.0) -> Gateway:
        self.port = self.port or free_port()
        self.confdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.process_env(),
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                if Path(self.ca_path).exists():
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"mitmdump did not start in {timeout}s:\n{self.log()}")

    def run_to_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        """Start mitmdump expecting it to refuse to start; returns (exit code, output)."""
        self.port = self.port or free_port()
        self.confdir.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(
            self.command(), capture_output=True, text=True, env=self.process_env(), cwd=self.workdir, timeout=timeout
        )
        return p.returncode, p.stdout + p.stderr

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class ApiStandin:
    """A TCP server on loopback standing in for api.anthropic.com inside gateway processes.

    It answers nothing and records every byte it receives, so a test can assert that nothing
    reached "the real API" (`received == b""`).
    """

    def __init__(self) -> None:
        self._lst = loopback_listener()
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._conns = OpenSockets()
        self.connections = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="api-standin", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._lst.getsockname()[1]}"

    @property
    def received(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    def _accept(self) -> None:
        for conn in accept_until(self._lst, lambda: self._closed):
            conn.settimeout(None)
            with self._lock:
                self.connections += 1
            self._conns.add(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self._lock:
                    self._chunks.append(data)

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=5)
        self._lst.close()
        self._conns.cut()

    def __enter__(self) -> ApiStandin:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_policy(directory: Path, body: str, name: str = "policy.toml") -> Path:
    """Write a test policy; `state_dir` defaults into the test's folder, never the user's home."""
    body = textwrap.dedent(body)
    if "state_dir" not in body:
        if "[gateway]" in body:
            body = body.replace("[gateway]", f'[gateway]\nstate_dir = "{directory / "state"}"', 1)
        else:
            body = f'[gateway]\nstate_dir = "{directory / "state"}"\n' + body
    path = directory / name
    path.write_text(body)
    return path


def sdk_client(gateway: Gateway, token: str | None = None, api_key: str = CALLER_KEY, **kwargs):
    """The real `anthropic` SDK, talking to api.anthropic.com through the gateway."""
    import anthropic

    verify = ssl.create_default_context(cafile=gateway.ca_path)
    http_client = anthropic.DefaultHttpxClient(proxy=gateway.proxy_url(token), verify=verify)
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 60)
    return anthropic.Anthropic(api_key=api_key, http_client=http_client, **kwargs)


def claude_env(gateway: Gateway, home: Path, token: str | None = None, **extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("ANTHROPIC")}
    env.update(
        HOME=str(home),
        HTTPS_PROXY=gateway.proxy_url(token),
        NODE_EXTRA_CA_CERTS=gateway.ca_path,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        ANTHROPIC_API_KEY=CALLER_KEY,
    )
    for k, v in extra.items():
        if v is None:  # None removes a variable, e.g. the API key when apiKeyHelper must be used
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_claude(
    gateway: Gateway,
    workdir: Path,
    prompt: str,
    *,
    token: str | None = None,
    args: list[str] | None = None,
    timeout: float = 120,
    **extra_env: str | None,
) -> subprocess.CompletedProcess:
    binary = claude_bin()
    need(binary is not None, "the Claude Code CLI is not installed (run `make claude-cli`)")
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    cmd = [binary, "-p", prompt, "--output-format", "json"] + (args or [])
    return subprocess.run(
        cmd,
        cwd=workdir,
        env=claude_env(gateway, home, token, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def have_node() -> bool:
    return shutil.which("node") is not None


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response from a raw socket: headers and a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
