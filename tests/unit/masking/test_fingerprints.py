"""Fingerprints: the key (generated once 0600, or from the environment for replicas) and the
keyed HMAC that names a masked secret."""

from __future__ import annotations

import os
import random
import stat

import pytest

from gatehouse.masking.config import parse_masking
from gatehouse.masking.fingerprints import FINGERPRINT_KEY_FILE, FingerprintKeyError, fingerprint_key_for
from gatehouse.masking.masker import Masker
from support.secrets import FINGERPRINT_KEY, fake_secret, masking_section


def aws(rng: random.Random | None = None) -> str:
    return fake_secret("aws-access-key-id", rng or random.Random(1))


def test_fingerprint_depends_on_key_and_secret(masker):
    other = Masker(masker.policy, b"another-key-another-key-another")
    a, b = aws(random.Random(1)), aws(random.Random(2))
    assert masker.fingerprint(a) != masker.fingerprint(b)
    assert masker.fingerprint(a) != other.fingerprint(a)
    assert "key" not in repr(masker).lower() or FINGERPRINT_KEY.decode() not in repr(masker)


def test_fingerprint_key_generated_once_with_mode_0600(tmp_path):
    pol = parse_masking(None)
    k1 = fingerprint_key_for(pol, tmp_path / "state")
    k2 = fingerprint_key_for(pol, tmp_path / "state")
    path = tmp_path / "state" / FINGERPRINT_KEY_FILE
    assert k1 == k2 and len(k1) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_fingerprint_key_refuses_a_readable_file(tmp_path):
    pol = parse_masking(None)
    fingerprint_key_for(pol, tmp_path)
    os.chmod(tmp_path / FINGERPRINT_KEY_FILE, 0o644)
    with pytest.raises(PermissionError):
        fingerprint_key_for(pol, tmp_path)


def test_fingerprint_key_from_environment_for_replicas(tmp_path, monkeypatch):
    pol = masking_section('[masking]\nfingerprint_secret_env = "GH_TEST_FP"\n')
    monkeypatch.delenv("GH_TEST_FP", raising=False)
    with pytest.raises(FingerprintKeyError, match="GH_TEST_FP, which is not set"):
        fingerprint_key_for(pol, tmp_path)
    monkeypatch.setenv("GH_TEST_FP", "short")
    with pytest.raises(FingerprintKeyError, match="too short"):
        fingerprint_key_for(pol, tmp_path)
    monkeypatch.setenv("GH_TEST_FP", "s3cret-shared-by-all-replicas")
    key = fingerprint_key_for(pol, tmp_path)
    assert key == b"s3cret-shared-by-all-replicas"
    assert not (tmp_path / FINGERPRINT_KEY_FILE).exists()
    # Two replicas with the same secret give the same fingerprints.
    assert Masker(pol, key).fingerprint("x") == Masker(pol, fingerprint_key_for(pol, tmp_path / "b")).fingerprint("x")
