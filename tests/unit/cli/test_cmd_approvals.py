"""`gatehouse approvals`: the real command against a loopback stand-in for the gateway that
accepts CONNECT, terminates TLS for gatehouse.internal with a test CA, knows people by their
tokens and answers with the real approvals API (gatehouse.approvals.api) over a local store.
(The end-to-end tests run it through a real mitmdump.)"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest

from gatehouse.approvals import api
from gatehouse.approvals.config import ApprovalsPolicy
from gatehouse.approvals.service import ApprovalService
from gatehouse.approvals.store import ApprovalStore
from gatehouse.cli.main import main
from gatehouse.exchange import Identity
from gatehouse.recording.stores import LocalStore
from support.harness import free_port
from support.tls_certs import server_ssl_context, write_tls_files

ALICE = Identity("https://idp", "alice", email="alice@example.com", groups=("developers",))
BOB = Identity("https://idp", "bob", email="bob@example.com", groups=("sre",))
CAROL = Identity("https://idp", "carol", email="carol@example.com", groups=("sre",))
TOKENS = {"alice-token": ALICE, "bob-token": BOB, "carol-token": CAROL}
DIGEST = "d" * 64


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}


class StandIn:
    """CONNECT, then TLS as gatehouse.internal, then one HTTP request answered by `api.handle`."""

    def __init__(self, tmp: Path, service: ApprovalService) -> None:
        self.files = write_tls_files(tmp / "tls", hostnames=("gatehouse.internal",), ips=())
        self.ctx = server_ssl_context(self.files)
        self.service = service
        self.connects: list[tuple[str, dict[str, str]]] = []
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.refuse_connect: str | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _identity(self, headers: dict[str, str], tunnel: dict[str, str]) -> Identity | None:
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return TOKENS.get(auth[7:])
        proxy = tunnel.get("proxy-authorization", "")
        if proxy.startswith("Basic "):
            _, _, token = base64.b64decode(proxy[6:]).decode().partition(":")
            return TOKENS.get(token)
        return None

    def _serve(self, conn: socket.socket) -> None:
        try:
            head, _ = _read_head(conn)
            line, tunnel = _headers(head)
            self.connects.append((line, tunnel))
            if self.refuse_connect:
                conn.sendall(f"HTTP/1.1 {self.refuse_connect}\r\ncontent-length: 0\r\n\r\n".encode())
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            tls = self.ctx.wrap_socket(conn, server_side=True)
            head, body = _read_head(tls)
            line, headers = _headers(head)
            while len(body) < int(headers.get("content-length", 0)):
                body += tls.recv(65536)
            method, path, _ = line.split(" ", 2)
            self.requests.append((method, path, headers, body))
            status, doc = api.handle(self.service, method, path, body, self._identity(headers, tunnel))
            payload = json.dumps(doc).encode()
            tls.sendall(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
                f"connection: close\r\n\r\n".encode()
                + payload
            )
            tls.close()
        except (OSError, ssl.SSLError, ConnectionError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def service(tmp_path: Path) -> ApprovalService:
    return ApprovalService(ApprovalStore(LocalStore(tmp_path / "store")), ApprovalsPolicy(approvers=("sre",)))


@pytest.fixture
def gateway(tmp_path: Path, service: ApprovalService, monkeypatch: pytest.MonkeyPatch):
    for k in ("HTTPS_PROXY", "https_proxy", "GATEHOUSE_TOKEN", "SSL_CERT_FILE"):
        monkeypatch.delenv(k, raising=False)
    g = StandIn(tmp_path, service)
    monkeypatch.setenv("HTTPS_PROXY", g.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(g.files.ca_cert))
    yield g
    g.close()


def file(service: ApprovalService, required: int = 1, digest: str = DIGEST):
    return service.request(
        kind="tool_call",
        requester=ALICE,
        session=None,
        exchange_id="gx_1",
        tool="Bash",
        tool_input={"command": "rm -rf build"},
        input_sha256=digest,
        rule="rm-rf",
        message="Deleting folders needs an SRE.",
        approvers=("sre",),
        approvals_required=required,
        mode="retry",
        timeout_seconds=None,
        grant_seconds=3600,
    )


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["approvals", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_through_the_tunnel(gateway: StandIn, service, capsys, monkeypatch):
    req = file(service)
    monkeypatch.setenv("GATEHOUSE_TOKEN", "bob-token")
    code, out, err = cli(capsys, "list", "--json")
    assert code == 0, err
    items = json.loads(out)
    assert [i["id"] for i in items] == [req.id]
    for key in ("id", "requester", "tool", "input", "rule", "created", "expires"):
        assert key in items[0]
    line, tunnel = gateway.connects[0]
    assert line == "CONNECT gatehouse.internal:443 HTTP/1.1"
    method, path, headers, _ = gateway.requests[0]
    assert (method, path) == ("GET", "/v1/approvals")
    assert headers["authorization"] == "Bearer bob-token" and headers["host"] == "gatehouse.internal"


def test_list_as_a_table(gateway: StandIn, service, capsys):
    req = file(service)
    code, out, _ = cli(capsys, "list", "--token", "bob-token")
    assert code == 0
    assert req.id in out and "alice@example.com" in out and "Bash: rm -rf build" in out and "rm-rf" in out
    service.decide(req.id, BOB, "approve", reason="", input_sha256=DIGEST)
    assert "No open approval requests" in cli(capsys, "list", "--token", "bob-token")[1]
    assert req.id in cli(capsys, "list", "--all", "--token", "bob-token")[1]


def test_show(gateway: StandIn, service, capsys):
    req = file(service)
    code, out, _ = cli(capsys, "show", req.id, "--token", "alice-token")
    assert code == 0
    assert req.id in out and "pending" in out and DIGEST in out and "Deleting folders needs an SRE." in out
    code, out, _ = cli(capsys, "show", req.id, "--json", "--token", "alice-token")
    assert json.loads(out)["id"] == req.id


def test_approve_sends_the_hash_it_read(gateway: StandIn, service, capsys):
    req = file(service)
    code, out, err = cli(capsys, "approve", req.id, "--reason", "build folder only", "--token", "bob-token")
    assert code == 0, err
    assert f"Approved {req.id}" in out
    (m1, p1, _, _), (m2, p2, h2, b2) = gateway.requests
    assert (m1, p1) == ("GET", f"/v1/approvals/{req.id}")
    assert (m2, p2) == ("POST", f"/v1/approvals/{req.id}/approve")
    assert h2["content-type"] == "application/json"
    assert json.loads(b2) == {"input_sha256": DIGEST, "reason": "build folder only"}
    st = service.status(req.id)
    assert st.state == "approved" and st.reason == "build folder only"


def test_a_quorum_vote_and_a_deny(gateway: StandIn, service, capsys):
    req = file(service, required=2)
    code, out, _ = cli(capsys, "approve", req.id, "--token", "bob-token")
    assert code == 0 and "recorded: 1 of 2 approvals" in out
    code, out, _ = cli(capsys, "deny", req.id, "--reason", "not now", "--token", "carol-token")
    assert code == 0 and f"Denied {req.id}" in out
    assert service.status(req.id).state == "denied"


def test_refusals_exit_1_with_the_gateways_reason(gateway: StandIn, service, capsys):
    req = file(service)
    code, out, err = cli(capsys, "approve", req.id, "--token", "alice-token")
    assert code == 1 and out == ""
    assert "refused by the gateway" in err and "cannot be decided by its requester" in err
    code, _, err = cli(capsys, "show", "ga_" + "0" * 28, "--token", "bob-token")
    assert code == 1 and "no approval" in err.lower()
    cli(capsys, "deny", req.id, "--token", "bob-token")
    code, _, err = cli(capsys, "approve", req.id, "--token", "carol-token")
    assert code == 1 and "already denied by bob@example.com" in err
    code, _, err = cli(capsys, "list", "--token", "unknown-token")
    assert code == 1 and "needs your token" in err


def test_the_token_in_the_proxy_url(gateway: StandIn, service, capsys):
    req = file(service)
    code, out, err = cli(
        capsys, "list", "--json", "--gateway", f"http://gatehouse:bob%2Dtoken@127.0.0.1:{gateway.port}"
    )
    assert code == 0, err
    assert [i["id"] for i in json.loads(out)] == [req.id]
    _, tunnel = gateway.connects[0]
    assert tunnel["proxy-authorization"] == "Basic " + base64.b64encode(b"gatehouse:bob-token").decode()
    assert "authorization" not in gateway.requests[0][2]


def test_a_refused_tunnel_exits_1(gateway: StandIn, capsys):
    gateway.refuse_connect = "407 Proxy Authentication Required"
    code, _, err = cli(capsys, "list", "--token", "bob-token")
    assert code == 1 and "407" in err and "token" in err


def test_an_untrusted_gateway_certificate_exits_2(gateway: StandIn, capsys, monkeypatch, tmp_path):
    other = write_tls_files(tmp_path / "other")
    code, _, err = cli(capsys, "list", "--token", "bob-token", "--ca", str(other.ca_cert))
    assert code == 2 and "not trusted" in err and "--ca" in err


def test_no_gateway_listening_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    code, _, err = cli(capsys, "list", "--token", "t", "--gateway", f"127.0.0.1:{free_port()}")
    assert code == 2 and "cannot reach the gateway" in err


@pytest.mark.parametrize(
    "args, says",
    [
        (["list", "--token", "t"], "no gateway"),
        (["list", "--gateway", "http://127.0.0.1:1"], "no token"),
        (["list", "--token", "t", "--gateway", "https://127.0.0.1:1"], "must be http://"),
        (["list", "--token", "t", "--gateway", "http://127.0.0.1"], "a host and a port"),
        (["list", "--token", "t", "--gateway", "http://127.0.0.1:1", "--ca", "/no/such.pem"], "CA certificate"),
    ],
)
def test_usage_problems_exit_2(capsys, monkeypatch, args, says):
    for k in ("HTTPS_PROXY", "https_proxy", "GATEHOUSE_TOKEN", "SSL_CERT_FILE"):
        monkeypatch.delenv(k, raising=False)
    code, _, err = cli(capsys, *args)
    assert code == 2 and says in err


def test_an_action_is_required(capsys):
    with pytest.raises(SystemExit) as e:
        main(["approvals"])
    assert e.value.code == 2
    capsys.readouterr()
