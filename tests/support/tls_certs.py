"""Throw-away X.509 material for tests: a CA and server certificates signed by it.

Used by the fake Anthropic upstream (`tests/support/fake_upstream/`) and by any test that needs a TLS
server or a CA for mitmproxy. Keys are EC P-256 by default (generation takes microseconds; RSA
2048 takes tens of milliseconds), RSA on request.

The extensions are the ones strict verifiers insist on: Python 3.13's default context sets
`VERIFY_X509_STRICT`, which rejects a CA without a critical `keyUsage` with `keyCertSign`, and a
leaf without an `authorityKeyIdentifier`; Node and Go reject a leaf whose names are only in the
subject CN, so names always go into `subjectAltName`.

    files = write_tls_files(tmp_path)                   # CA + cert for localhost / 127.0.0.1
    ctx = server_ssl_context(files)                     # for a server
    anthropic.DefaultHttpxClient(verify=str(files.ca_cert))   # for a client (or client_ssl_context)
    write_mitmproxy_ca(confdir, ca)                     # mitmproxy-ca.pem in its confdir format
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

__all__ = [
    "CertKey",
    "TLSFiles",
    "make_ca",
    "make_server_cert",
    "write_tls_files",
    "write_mitmproxy_ca",
    "server_ssl_context",
    "client_ssl_context",
]


@dataclass(frozen=True)
class CertKey:
    """A certificate with its private key, in memory."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class TLSFiles:
    """PEM files written by `write_tls_files`.

    `server_chain` is the server certificate followed by the CA certificate (what a server
    that sends its full chain loads); `server_cert` alone is enough for clients that trust the
    CA.
    """

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    server_chain: Path


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}")


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    # Back-dated a day so that a machine whose clock is slightly behind still accepts the cert.
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=days)


def make_ca(
    common_name: str = "Gatehouse Test CA",
    *,
    key_type: KeyType = "ec",
    days: int = 30,
) -> CertKey:
    """A self-signed CA that may sign leaf certificates (and, for mitmproxy, nothing deeper)."""
    key = _new_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gatehouse tests"),
        ]
    )
    not_before, not_after = _validity(days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert, key)


def make_server_cert(
    ca: CertKey,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    *,
    key_type: KeyType = "ec",
    days: int = 30,
) -> CertKey:
    """A TLS server (leaf) certificate for `hostnames` and `ips`, signed by `ca`."""
    if not hostnames and not ips:
        raise ValueError("a server certificate needs at least one name")
    key = _new_key(key_type)
    common_name = hostnames[0] if hostnames else ips[0]
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    not_before, not_after = _validity(days)
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key exchange needs keyEncipherment; an EC key must not claim it.
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return CertKey(cert, key)


def _write(path: Path, data: bytes, *, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def write_tls_files(
    directory: str | Path,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    *,
    ca: CertKey | None = None,
    key_type: KeyType = "ec",
) -> TLSFiles:
    """Write `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`, `server-chain.pem` into
    `directory` (created if needed). A new CA is made unless `ca` is given."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca = ca or make_ca(key_type=key_type)
    server = make_server_cert(ca, hostnames, ips, key_type=key_type)
    return TLSFiles(
        directory=d,
        ca_cert=_write(d / "ca.pem", ca.cert_pem),
        ca_key=_write(d / "ca-key.pem", ca.key_pem, private=True),
        server_cert=_write(d / "server.pem", server.cert_pem),
        server_key=_write(d / "server-key.pem", server.key_pem, private=True),
        server_chain=_write(d / "server-chain.pem", server.cert_pem + ca.cert_pem),
    )


def write_mitmproxy_ca(confdir: str | Path, ca: CertKey | None = None) -> Path:
    """Write a CA in the layout mitmproxy looks for in its `confdir`, and return the path of the
    public certificate (`mitmproxy-ca-cert.pem`, what clients must trust).

    `mitmproxy-ca.pem` holds key and certificate together; mitmproxy only generates its own CA
    when that file is missing, so writing it first pins the CA a test knows about.
    """
    d = Path(confdir)
    d.mkdir(parents=True, exist_ok=True)
    ca = ca or make_ca("Gatehouse Test Gateway CA")
    _write(d / "mitmproxy-ca.pem", ca.key_pem + ca.cert_pem, private=True)
    return _write(d / "mitmproxy-ca-cert.pem", ca.cert_pem)


def server_ssl_context(files: TLSFiles, alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
    """A server-side context presenting the chain in `files`, offering only `alpn` protocols
    (HTTP/1.1 by default, so that clients never try HTTP/2 on a server that cannot speak it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.server_chain), str(files.server_key))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def client_ssl_context(ca_cert: str | Path) -> ssl.SSLContext:
    """A verifying client context that trusts only `ca_cert`."""
    return ssl.create_default_context(cafile=str(ca_cert))
