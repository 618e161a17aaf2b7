"""The recording's Ed25519 keys: the gateway's signing key, trusted public keys, signatures.

A record or checkpoint is signed over its canonical JSON without its ``signature`` member.
`load_signing_key` reads the key from the file or environment variable the policy names, or
from (creating it on first run) the gateway's state directory; everything else is pure.
The private key is never written into a record, a flow or a log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatehouse.common.statefiles import check_private, load_or_create
from gatehouse.recording.canonical import RecordError, canonical_json

SIGNATURE_ALG = "ed25519"
# The generated key's file in the state directory (the single-node default).
STATE_KEY_FILE = "recording-signing-key.pem"


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(data: bytes, source: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or a base64 raw 32-byte key."""
    return _load_key(
        data, source, "public", serialization.load_pem_public_key, Ed25519PublicKey.from_public_bytes, Ed25519PublicKey
    )


def _load_key[K: (Ed25519PublicKey, Ed25519PrivateKey)](
    data: bytes,
    source: str,
    kind: str,
    from_pem: Callable[[bytes], object],
    from_raw: Callable[[bytes], object],
    cls: type[K],
) -> K:
    """An Ed25519 key of class `cls` from PEM or a base64/hex raw 32 bytes; RecordError names
    `source` and the `kind` of key (public, private), never the key material: the message of a
    PEM parse error contains none."""
    text = data.strip()
    try:
        key = from_pem(text) if text.startswith(b"-----BEGIN") else from_raw(_decode_raw_key(text))
    except (ValueError, TypeError, binascii.Error) as e:
        raise RecordError(f"{source}: not an Ed25519 {kind} key ({e})") from None
    if not isinstance(key, cls):
        raise RecordError(f"{source}: not an Ed25519 {kind} key ({type(key).__name__})")
    return key


def _decode_raw_key(text: bytes) -> bytes:
    raw = base64.b64decode(text, validate=True) if len(text) != 64 else bytes.fromhex(text.decode())
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


class SigningKey:
    """The gateway's Ed25519 key. Never written into a record, a flow or a log."""

    def __init__(self, private_key: Ed25519PrivateKey, source: str = "") -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)
        self.source = source

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate(), "generated")

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> SigningKey:
        """PEM (PKCS#8, as `openssl genpkey -algorithm ed25519` writes) or a base64/hex 32-byte seed."""
        key = _load_key(
            data,
            source,
            "private",
            lambda pem: serialization.load_pem_private_key(pem, password=None),
            Ed25519PrivateKey.from_private_bytes,
            Ed25519PrivateKey,
        )
        return cls(key, source)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_pem(self) -> bytes:
        return public_key_pem(self.public_key)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._private.sign(data)).decode("ascii")

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, source={self.source!r})"


def load_signing_key(
    *,
    key_file: Path | None = None,
    key_env: str | None = None,
    state_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> SigningKey:
    """The recording key: the configured file or environment variable (replicas share it),
    else one generated on first run in the state directory (mode 0600, single node)."""
    environ = os.environ if environ is None else environ
    if key_file is not None:
        try:
            check_private(key_file)
            data = Path(key_file).read_bytes()
        except OSError as e:  # includes check_private's refusal of a group/world-readable file
            raise RecordError(f"signing key file {key_file}: {e.strerror or e}") from None
        return SigningKey.from_bytes(data, f"signing key file {key_file}")
    if key_env is not None:
        value = environ.get(key_env)
        if not value:
            raise RecordError(f"environment variable {key_env} (the recording signing key) is not set")
        return SigningKey.from_bytes(value.encode(), f"environment variable {key_env}")
    if state_dir is None:
        raise RecordError("no signing key configured and no state directory to keep a generated one")
    path = Path(state_dir) / STATE_KEY_FILE
    data = load_or_create(path, lambda: SigningKey.generate().private_pem())
    return SigningKey.from_bytes(data, f"state file {path}")


def signed_payload(doc: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the canonical document without its `signature`."""
    return canonical_json({k: v for k, v in doc.items() if k != "signature"})


def seal(doc: dict[str, Any], key: SigningKey) -> bytes:
    """Sign `doc` (in place) and return its canonical bytes.

    The document is encoded once: as the members sorted before ``signature`` and those after
    it, which joined are the signed payload and, with the signature between them, the sealed
    bytes (encoding the whole document twice was half the cost of sealing a record)."""
    doc.pop("signature", None)
    before = canonical_json({k: v for k, v in doc.items() if k < "signature"})[1:-1]
    after = canonical_json({k: v for k, v in doc.items() if k > "signature"})[1:-1]
    signature = {"alg": SIGNATURE_ALG, "key_id": key.key_id, "value": key.sign(_object(before, after))}
    doc["signature"] = signature
    return _object(before, b'"signature":' + canonical_json(signature), after)


def _object(*members: bytes) -> bytes:
    """A canonical JSON object from runs of encoded members (empty runs left out)."""
    return b"{" + b",".join(m for m in members if m) + b"}"


def check_signature(doc: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """None when the signature verifies with one of `keys`, else what is wrong."""
    sig = doc.get("signature")
    if not isinstance(sig, dict):
        return "no signature"
    if sig.get("alg") != SIGNATURE_ALG:
        return f"unsupported signature algorithm {sig.get('alg')!r}"
    key_id = sig.get("key_id")
    key = keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        return f"signed by key {key_id!r}, which is not a trusted key"
    try:
        key.verify(base64.b64decode(sig.get("value", ""), validate=True), signed_payload(doc))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return f"signature does not verify with key {key_id} (the content was changed after signing)"
    return None
