"""The policy's [recording] section: defaults, paths, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gatehouse.policy.reader import PolicyError, Section
from gatehouse.recording.config import RecordingPolicy, parse_recording


def parse(toml: str, tmp_path: Path) -> RecordingPolicy:
    path = tmp_path / "policy.toml"
    path.write_text(toml)
    root = Section(tomllib.loads(toml), path)
    return parse_recording(root.section("recording"), base_dir=tmp_path)


def test_recording_policy_defaults_and_paths(tmp_path: Path) -> None:
    default = parse("", tmp_path)
    assert default == RecordingPolicy(store=str(tmp_path / "recordings"))
    assert default.on_record_failure == "refuse" and default.refuse_on_failure and not default.is_s3
    assert default.spool_path(tmp_path / "state") == tmp_path / "state" / "spool"
    assert parse_recording(None).store.endswith("/recordings")

    p = parse(
        '[recording]\nstore = "rec"\nspool_dir = "sp"\nsigning_key_file = "k.pem"\npublic_keys = ["a.pub"]\n'
        'on_record_failure = "continue"\ncheckpoint_interval_seconds = 5\nretention_days = 30\n'
        "upload_concurrency = 4\ndrain_seconds = 0\n",
        tmp_path,
    )
    assert p.store == str(tmp_path / "rec") and p.spool_dir == tmp_path / "sp"
    assert p.signing_key_file == tmp_path / "k.pem" and p.public_keys == (tmp_path / "a.pub",)
    assert (p.on_record_failure, p.checkpoint_interval_seconds, p.retention_days) == ("continue", 5, 30)
    assert (p.upload_concurrency, p.drain_seconds) == (4, 0)
    assert (default.upload_concurrency, default.drain_seconds) == (16, 60)

    s3 = parse(
        '[recording]\nstore = "s3://bucket/pre/fix/"\nobject_lock_mode = "GOVERNANCE"\nretention_days = 7\n'
        's3_endpoint_url = "http://127.0.0.1:9000"\nkms_key_id = "alias/x"\nsigning_key_env = "K"\n',
        tmp_path,
    )
    assert s3.store == "s3://bucket/pre/fix" and s3.is_s3 and s3.object_lock_mode == "GOVERNANCE"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('store = "s3://"', "recording.store: an S3 store is s3://bucket"),
        ('store = "gs://bucket"', "recording.store: must be a directory or s3://bucket/prefix"),
        (
            'object_lock_mode = "COMPLIANCE"\nretention_days = 3',
            "recording.object_lock_mode: applies to an S3 store only",
        ),
        ('store = "s3://b"\nobject_lock_mode = "COMPLIANCE"', "recording.object_lock_mode: needs retention_days"),
        (
            'store = "s3://b"\nobject_lock_mode = "STRICT"\nretention_days = 3',
            "must be one of 'COMPLIANCE', 'GOVERNANCE'",
        ),
        ('kms_key_id = "k"', "recording.kms_key_id: applies to an S3 store only"),
        (
            'store = "s3://b"\ns3_endpoint_url = "localhost:9000"',
            "recording.s3_endpoint_url: must be an http:// or https:// URL; got 'localhost:9000'",
        ),
        ('signing_key_file = "a"\nsigning_key_env = "B"', "set either signing_key_file or signing_key_env"),
        ('on_record_failure = "ignore"', "recording.on_record_failure: must be one of 'refuse', 'continue'"),
        ("retention_days = 0", "recording.retention_days: must be at least 1"),
        ("checkpoint_interval_seconds = 0", "must be at least 1"),
        ("upload_concurrency = 0", "recording.upload_concurrency: must be at least 1; got 0"),
        ("upload_concurrency = 65", "recording.upload_concurrency: must be at most 64; got 65"),
        ("drain_seconds = -1", "recording.drain_seconds: must be at least 0; got -1"),
        ('drain_seconds = "1m"', "recording.drain_seconds"),
        ('stroe = "x"', "recording.stroe: unknown key"),
    ],
)
def test_recording_policy_errors_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse("[recording]\n" + toml + "\n", tmp_path)
    assert message in str(e.value) and str(e.value).startswith(str(tmp_path / "policy.toml"))
