"""People, a clock and services over a store for the approvals tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gatehouse.approvals.config import ApprovalsPolicy
from gatehouse.approvals.service import ApprovalService
from gatehouse.approvals.store import ApprovalStore
from gatehouse.exchange import Identity
from gatehouse.recording.stores import LocalStore

ISSUER = "https://idp.example.com"

ALICE = Identity(ISSUER, "alice", email="alice@example.com", groups=("developers",), token_id="jti-alice")
BOB = Identity(ISSUER, "bob", email="bob@example.com", groups=("sre",), token_id="jti-bob")
CAROL = Identity(ISSUER, "carol", email="carol@example.com", groups=("sre", "developers"), token_id="jti-carol")
DAVE = Identity(ISSUER, "dave", email="dave@example.com", groups=("developers",), token_id="jti-dave")
# Another issuer's "bob": a different person.
OTHER_BOB = Identity("https://other.example.com", "bob", email="bob@other.example.com", groups=("sre",))

INPUT = {"command": "rm -rf build"}
DIGEST = "a" * 64


@pytest.fixture
def people() -> SimpleNamespace:
    """alice and dave (developers) ask; bob (sre) and carol (sre, developers) approve."""
    return SimpleNamespace(
        alice=ALICE, bob=BOB, carol=CAROL, dave=DAVE, other_bob=OTHER_BOB, input=INPUT, digest=DIGEST
    )


class Clock:
    def __init__(self, t: float = 1_750_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_service(tmp_path: Path, clock: Clock) -> Callable[..., ApprovalService]:
    """A service over `tmp_path/store` (each call: a new store object on the same folder, as
    another replica would have)."""

    def make(policy: ApprovalsPolicy | None = None, **kwargs: Any) -> ApprovalService:
        kwargs.setdefault("clock", clock)
        store = ApprovalStore(LocalStore(tmp_path / "store"))
        return ApprovalService(store, policy or ApprovalsPolicy(approvers=("sre",)), **kwargs)

    return make


def file_request(service: ApprovalService, **overrides: Any):
    args: dict[str, Any] = dict(
        kind="tool_call",
        requester=ALICE,
        session="sess-1",
        exchange_id="gx_1",
        tool="Bash",
        tool_input=INPUT,
        input_sha256=DIGEST,
        rule="rm-rf",
        message="Deleting folders needs an SRE.",
        approvers=("sre",),
        approvals_required=1,
        mode="hold",
        timeout_seconds=300.0,
        grant_seconds=3600.0,
    )
    args.update(overrides)
    return service.request(**args)


@pytest.fixture
def file() -> Callable[..., Any]:
    return file_request
