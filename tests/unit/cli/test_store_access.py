"""How `gatehouse verify`, `report` and `prune` choose their trusted keys and open their store
(gatehouse.cli.store_access): the order of the key sources, and what a missing store says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gatehouse.cli.store_access import open_recording_store, recording_policy_of, trusted_keys_for
from gatehouse.recording.config import RecordingPolicy
from gatehouse.recording.signing import STATE_KEY_FILE, SigningKey
from gatehouse.recording.stores import LocalStore, S3Store, StoreError


def key_file(path: Path) -> SigningKey:
    key = SigningKey.generate()
    path.write_bytes(key.private_pem())
    os.chmod(path, 0o600)
    return key


def pub_file(path: Path) -> SigningKey:
    key = SigningKey.generate()
    path.write_bytes(key.public_pem())
    return key


def test_no_policy_file_is_no_policy() -> None:
    assert recording_policy_of(None) == (None, None)


def test_trusted_keys_come_from_the_first_source_that_names_any(tmp_path: Path) -> None:
    given = pub_file(tmp_path / "given.pub")
    listed = pub_file(tmp_path / "listed.pub")
    signing = key_file(tmp_path / "signing.pem")
    state = tmp_path / "state"
    state.mkdir()
    generated = key_file(state / STATE_KEY_FILE)
    policy_file = tmp_path / "policy.toml"

    def policy(recording: str) -> tuple[RecordingPolicy | None, Path | None]:
        policy_file.write_text(f'[gateway]\nstate_dir = "{state}"\n[recording]\n{recording}')
        return recording_policy_of(policy_file)

    both = policy('public_keys = ["listed.pub"]\nsigning_key_file = "signing.pem"\n')
    assert trusted_keys_for([tmp_path / "given.pub"], *both) == (
        {given.key_id: given.public_key},
        "1 from --public-key",
    )
    assert trusted_keys_for([], *both) == (
        {listed.key_id: listed.public_key},
        "1 from the policy's [recording] public_keys",
    )
    keys, desc = trusted_keys_for([], *policy('signing_key_file = "signing.pem"\n'))
    assert keys == {signing.key_id: signing.public_key}
    assert desc == f"the policy's signing key (signing key file {tmp_path / 'signing.pem'})"
    keys, desc = trusted_keys_for([], *policy(""))
    assert keys == {generated.key_id: generated.public_key}
    assert desc.startswith("the gateway's generated signing key (")


def test_without_any_key_the_store_is_trusted_and_no_key_is_created(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[recording]\n')
    assert trusted_keys_for([], *recording_policy_of(policy_file)) == (None, "none given")
    assert trusted_keys_for([], None, None) == (None, "none given")
    assert not (tmp_path / "state" / STATE_KEY_FILE).exists()


def test_a_store_directory_must_exist(tmp_path: Path) -> None:
    assert isinstance(open_recording_store(str(tmp_path), None, endpoint_url=None), LocalStore)
    with pytest.raises(StoreError, match=r"nope: no such directory$"):
        open_recording_store(str(tmp_path / "nope"), None, endpoint_url=None)
    assert not (tmp_path / "nope").exists()


def test_only_a_command_that_writes_opens_the_bucket_with_the_policys_lock_and_key(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        '[recording]\nstore = "s3://b/p"\ns3_endpoint_url = "http://127.0.0.1:9"\n'
        'object_lock_mode = "COMPLIANCE"\nretention_days = 1\nkms_key_id = "k"\n'
    )
    policy, _ = recording_policy_of(policy_file)
    read = open_recording_store("s3://b/p", policy, endpoint_url=None)
    assert isinstance(read, S3Store) and read.endpoint == "http://127.0.0.1:9"
    assert (read.object_lock_mode, read.kms_key_id) == (None, None)
    overridden = open_recording_store("s3://b/p", policy, endpoint_url="http://127.0.0.1:8")
    assert isinstance(overridden, S3Store) and overridden.endpoint == "http://127.0.0.1:8"  # the option wins
    written = open_recording_store("s3://b/p", policy, endpoint_url=None, writes=True)
    assert isinstance(written, S3Store) and (written.object_lock_mode, written.kms_key_id) == ("COMPLIANCE", "k")
