"""The gateway's Claude API key (gatehouse.credentials.keys): which source applies to a caller, and
reading it; a missing key is named by its source, never by a value."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gatehouse.credentials import keys
from gatehouse.credentials.config import KeySource
from gatehouse.credentials.keys import MissingKey, key_source_for, read_key
from gatehouse.exchange import Identity
from gatehouse.policy.loader import parse_policy

POLICY = parse_policy(
    {
        "credentials": {
            "api_key_env": "DEFAULT_KEY",
            "groups": {"sre": {"api_key_env": "SRE_KEY"}, "ci": {"api_key_env": "CI_KEY"}},
        }
    },
    Path("p.toml"),
)


def caller(*groups: str) -> Identity:
    return Identity(issuer="https://login.example.com", subject="alice", groups=groups)


def test_first_override_in_policy_order_wins():
    assert key_source_for(POLICY, caller("ci", "sre")) == (KeySource(env="SRE_KEY"), "sre")
    assert key_source_for(POLICY, caller("developers", "ci")) == (KeySource(env="CI_KEY"), "ci")


def test_default_without_an_override():
    assert key_source_for(POLICY, caller("developers")) == (KeySource(env="DEFAULT_KEY"), None)
    assert key_source_for(POLICY, None) == (KeySource(env="DEFAULT_KEY"), None)


def test_read_key_from_environment_and_file(tmp_path):
    assert read_key(KeySource(env="K"), {"K": "  sk-ant-value \n"}) == "sk-ant-value"
    f = tmp_path / "claude.key"
    f.write_text("sk-ant-file\n")
    assert read_key(KeySource(file=f)) == "sk-ant-file"


def test_missing_key_names_the_source(tmp_path):
    with pytest.raises(MissingKey, match="environment variable K is not set"):
        read_key(KeySource(env="K"), {"K": "  "})
    with pytest.raises(MissingKey, match="cannot read"):
        read_key(KeySource(file=tmp_path / "absent.key"))
    (tmp_path / "empty.key").write_text("\n")
    with pytest.raises(MissingKey, match="is empty"):
        read_key(KeySource(file=tmp_path / "empty.key"))


def age(path: Path, seconds: float = 10) -> None:
    """Make `path` look written `seconds` ago (a file written just now is never cached)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every time a key file's content is actually read."""
    done: list[Path] = []
    real = keys._read

    def counting(path: Path) -> str:
        done.append(path)
        return real(path)

    monkeypatch.setattr(keys, "_read", counting)
    return done


def test_unchanged_key_file_is_not_read_again(tmp_path: Path, reads: list[Path]) -> None:
    f = tmp_path / "claude.key"
    f.write_text("sk-ant-first\n")
    age(f)
    assert [read_key(KeySource(file=f)) for _ in range(5)] == ["sk-ant-first"] * 5
    assert reads == [f]


def test_changed_key_file_is_picked_up(tmp_path: Path, reads: list[Path]) -> None:
    f = tmp_path / "claude.key"
    f.write_text("sk-ant-first\n")
    age(f, 20)
    assert read_key(KeySource(file=f)) == "sk-ant-first"
    # Edited in place, same size.
    f.write_text("sk-ant-other\n")
    age(f, 10)
    assert read_key(KeySource(file=f)) == "sk-ant-other"
    # Rotated by rename (a new inode), and again just now: a file this new is read every time.
    new = tmp_path / "claude.key.new"
    new.write_text("sk-ant-rotated\n")
    new.rename(f)
    assert read_key(KeySource(file=f)) == "sk-ant-rotated"
    assert read_key(KeySource(file=f)) == "sk-ant-rotated"
    assert len(reads) == 4


def test_removed_key_file_is_refused(tmp_path: Path, reads: list[Path]) -> None:
    f = tmp_path / "claude.key"
    f.write_text("sk-ant-first\n")
    age(f)
    assert read_key(KeySource(file=f)) == "sk-ant-first"
    f.unlink()
    with pytest.raises(MissingKey, match=f"cannot read {f} \\(No such file or directory\\)"):
        read_key(KeySource(file=f))
    # Back again, with another key: read afresh, not the old value.
    f.write_text("sk-ant-back\n")
    age(f)
    assert read_key(KeySource(file=f)) == "sk-ant-back"
