"""The recording's keys: where the signing key comes from, and signatures."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.recording.canonical import RecordError, canonical_json
from gatehouse.recording.signing import (
    STATE_KEY_FILE,
    SigningKey,
    check_signature,
    key_id_of,
    load_public_key,
    load_signing_key,
    seal,
    signed_payload,
)


def test_seal_and_check_signature() -> None:
    key = SigningKey.generate()
    doc = {"kind": "x", "n": 1}
    data = seal(doc, key)
    parsed = json.loads(data)
    trusted = {key.key_id: key.public_key}
    assert check_signature(parsed, trusted) is None
    parsed["n"] = 2
    assert "does not verify" in check_signature(parsed, trusted)
    assert "not a trusted key" in check_signature(json.loads(data), {})
    assert check_signature({"n": 1}, trusted) == "no signature"


_KEY = SigningKey.generate()
# Member names on both sides of "signature" (seal encodes the two runs apart), and the name
# itself: a document that already has a signature is signed again.
_NAMES = st.one_of(
    st.sampled_from(
        ["chain", "schema", "session", "sig", "signatur", "signature", "signature0", "signaturea", "status", "z", ""]
        + ["é", "\U0001f600"]
    ),
    st.text(max_size=12),
)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_NAMES, _VALUES, max_size=8))
def test_seal_is_the_canonical_encoding_of_the_signed_document(doc: dict) -> None:
    # The sealed bytes are what verify re-encodes and compares: exactly canonical_json of the
    # document with its signature, and the signature covers exactly the rest.
    data = seal(doc, _KEY)
    assert data == canonical_json(doc)
    assert json.loads(data) == doc
    assert check_signature(json.loads(data), {_KEY.key_id: _KEY.public_key}) is None
    assert base64.b64decode(doc["signature"]["value"]) == _KEY._private.sign(signed_payload(doc))


def test_signing_key_sources(tmp_path: Path) -> None:
    generated = load_signing_key(state_dir=tmp_path / "state")
    path = tmp_path / "state" / STATE_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(state_dir=tmp_path / "state").key_id == generated.key_id  # stable

    pem = tmp_path / "k.pem"
    pem.write_bytes(generated.private_pem())
    os.chmod(pem, 0o600)
    assert load_signing_key(key_file=pem).key_id == generated.key_id
    os.chmod(pem, 0o644)
    with pytest.raises(RecordError, match="readable by group or others"):
        load_signing_key(key_file=pem)

    seed = generated._private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    env = {"REC_KEY": base64.b64encode(seed).decode()}
    assert load_signing_key(key_env="REC_KEY", environ=env).key_id == generated.key_id
    with pytest.raises(RecordError, match="REC_KEY .* is not set"):
        load_signing_key(key_env="REC_KEY", environ={})
    with pytest.raises(RecordError, match="not an Ed25519 private key"):
        load_signing_key(key_env="REC_KEY", environ={"REC_KEY": "not a key"})
    assert "REC_KEY" in repr(load_signing_key(key_env="REC_KEY", environ=env))
    assert base64.b64encode(seed).decode() not in repr(generated)
    assert re.fullmatch(r"[0-9a-f]{16}", generated.key_id)
    assert key_id_of(load_public_key(generated.public_pem())) == generated.key_id
