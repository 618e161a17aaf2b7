"""The local development issuer (gatehouse.identity.devissuer) and `gatehouse token` (gatehouse.cli.cmd_token)."""

from __future__ import annotations

import argparse
import base64
import json
import stat
import time
from pathlib import Path

import pytest

from gatehouse.cli import cmd_token
from gatehouse.identity import devissuer
from gatehouse.identity.config import parse_issuers
from gatehouse.identity.errors import TokenError
from gatehouse.identity.verifier import TokenVerifier
from gatehouse.policy.reader import Section


def dev_verifier(jwks: Path, clock=time.time) -> TokenVerifier:
    cfg = parse_issuers(
        [
            Section(
                {
                    "name": "dev",
                    "issuer": devissuer.DEV_ISSUER,
                    "audience": devissuer.DEV_AUDIENCE,
                    "algorithms": ["EdDSA"],
                    "jwks_file": str(jwks),
                },
                "p.toml",
                "issuers[0]",
            )
        ]
    )
    return TokenVerifier(cfg, clock=clock)


def claims_of(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def test_ensure_creates_key_and_jwks(tmp_path: Path) -> None:
    state, jwks = tmp_path / "state", tmp_path / "pub" / "dev.jwks.json"
    devissuer.ensure_dev_issuer(state, jwks)
    key = devissuer.key_path(state)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    doc = json.loads(jwks.read_text())
    (jwk,) = doc["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and "d" not in jwk and jwk["alg"] == "EdDSA"
    # Idempotent: the key is not replaced, and a tampered JWKS is rewritten from it.
    before = key.read_bytes()
    jwks.write_text('{"keys": []}')
    devissuer.ensure_dev_issuer(state, jwks)
    assert key.read_bytes() == before
    assert json.loads(jwks.read_text()) == doc


def test_refuses_a_readable_private_key(tmp_path: Path) -> None:
    devissuer.ensure_dev_issuer(tmp_path, tmp_path / "j.json")
    devissuer.key_path(tmp_path).chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        devissuer.mint_token(tmp_path, subject="alice")


def test_minted_token_verifies(tmp_path: Path) -> None:
    jwks = tmp_path / "j.json"
    devissuer.ensure_dev_issuer(tmp_path, jwks)
    token = devissuer.mint_token(
        tmp_path,
        subject="alice",
        groups=["developers", "sre", "developers", " "],
        ttl_seconds=3600,
        email="alice@example.com",
        name="Alice",
    )
    ident = dev_verifier(jwks).verify(token)
    assert (ident.subject, ident.groups, ident.email, ident.name) == (
        "alice",
        ("developers", "sre"),
        "alice@example.com",
        "Alice",
    )
    c = claims_of(token)
    assert c["exp"] - c["iat"] == 3600 and c["iss"] == devissuer.DEV_ISSUER and len(c["jti"]) == 24
    assert ident.token_id == c["jti"]


def test_minted_token_expires(tmp_path: Path) -> None:
    jwks = tmp_path / "j.json"
    devissuer.ensure_dev_issuer(tmp_path, jwks)
    now = [time.time()]
    token = devissuer.mint_token(tmp_path, subject="alice", ttl_seconds=60, clock=lambda: now[0])
    v = dev_verifier(jwks, clock=lambda: now[0])
    assert v.verify(token).subject == "alice"
    now[0] += 120
    with pytest.raises(TokenError) as info:
        v.verify(token)
    assert info.value.check == "expired"


def test_key_created_after_the_gateway_started(tmp_path: Path) -> None:
    """The gateway starts before `gatehouse token` first runs: the JWKS file is read on demand."""
    jwks = tmp_path / "j.json"
    v = dev_verifier(jwks)
    assert v.prefetch()  # a warning: no file yet
    devissuer.ensure_dev_issuer(tmp_path, jwks)
    token = devissuer.mint_token(tmp_path, subject="alice")
    with pytest.raises(TokenError):
        v.verify(token)  # within the refetch rate limit of the failed start-up load
    v2 = TokenVerifier(v.issuers, min_refetch_seconds=0)
    assert v2.prefetch() == [] and v2.verify(token).subject == "alice"


def test_mint_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        devissuer.mint_token(tmp_path, subject=" ")
    with pytest.raises(ValueError):
        devissuer.mint_token(tmp_path, subject="a", ttl_seconds=0)
    with pytest.raises(ValueError):
        devissuer.mint_token(tmp_path, subject="a", ttl_seconds=devissuer.MAX_TTL_SECONDS + 1)


@pytest.mark.parametrize(
    "text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), (" 8H ", 28800)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert devissuer.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1w", "-1h", "1.5h"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(ValueError):
        devissuer.parse_duration(text)


# -- gatehouse token ------------------------------------------------------------------------------

POLICY = """\
[gateway]
state_dir = "state"

[[issuers]]
name = "dev"
issuer = "gatehouse-dev"
audience = ["gatehouse", "other"]
algorithms = ["EdDSA"]
jwks_file = "public/dev-issuer.jwks.json"
"""


def run_token(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    cmd_token.register(sub)
    args = parser.parse_args(["token", *argv])
    return args.func(args)


def test_cli_prints_only_the_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    assert run_token(["--policy", str(policy), "--sub", "alice", "--groups", "developers,sre", "--ttl", "2h"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert out == token + "\n" and token.count(".") == 2
    assert "sub=alice" in err and token not in err
    # The JWKS went where the policy points, the key into its state_dir.
    jwks = tmp_path / "public" / "dev-issuer.jwks.json"
    assert stat.S_IMODE(devissuer.key_path(tmp_path / "state").stat().st_mode) == 0o600
    ident = dev_verifier(jwks).verify(token)
    assert ident.groups == ("developers", "sre")
    c = claims_of(token)
    assert c["aud"] == "gatehouse" and c["exp"] - c["iat"] == 7200

    assert run_token(["--policy", str(policy), "--sub", "bob", "--print"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and dev_verifier(jwks).verify(out.strip()).subject == "bob"


def test_cli_whole_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gatehouse.cli.main import main

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    assert main(["token", "--policy", str(policy), "--sub", "carol", "--print"]) == 0
    assert claims_of(capsys.readouterr().out.strip())["sub"] == "carol"


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[gateway]\nstate_dir = 'state'\n")
    assert run_token(["--policy", str(policy), "--sub", "alice"]) == 1
    err = capsys.readouterr().err
    assert "no local development issuer" in err and "[[issuers]]" in err and 'jwks_file = "' in err
    policy.write_text(POLICY)
    assert run_token(["--policy", str(policy), "--sub", "alice", "--ttl", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert run_token(["--policy", str(policy), "--issuer", "nope"]) == 1
    assert "no issuer named 'nope'" in capsys.readouterr().err


def test_pick_dev_issuer() -> None:
    def cfgs(*tables: dict) -> tuple:
        return parse_issuers([Section(t, "p", f"issuers[{i}]") for i, t in enumerate(tables)])

    corp = {"name": "corp", "issuer": "https://login.example.com", "audience": "g"}
    local = {"name": "mine", "issuer": "my-dev", "audience": "g", "jwks_file": "/x.json"}
    dev = {"name": "dev", "issuer": devissuer.DEV_ISSUER, "audience": "g", "jwks_file": "/y.json"}
    assert cmd_token.pick_dev_issuer(cfgs(corp, local), None).name == "mine"
    assert cmd_token.pick_dev_issuer(cfgs(corp, local, dev), None).name == "dev"
    assert cmd_token.pick_dev_issuer(cfgs(corp, local, dev), "mine").name == "mine"
    with pytest.raises(ValueError, match="not a local issuer"):
        cmd_token.pick_dev_issuer(cfgs(corp), "corp")
    with pytest.raises(ValueError, match="several"):
        cmd_token.pick_dev_issuer(cfgs(local, {**local, "name": "mine2"}), None)
