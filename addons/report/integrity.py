"""What verification found, indexed the way the report attributes it: `verify.verify_store` is the
one verification (as `gatehouse verify` runs it); its problems are looked up here by store key
and by exchange id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gatehouse.recording.stores import Store
from gatehouse.recording.verify import Problem, verify_store


@dataclass
class Integrity:
    checked: bool
    trust: str  # policy | file | store | none
    summary: str = ""
    trusted_key_ids: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_key: dict[str, list[Problem]] = {}
        self.by_exchange: dict[str, list[Problem]] = {}
        for p in self.problems:
            self.by_key.setdefault(p.key, []).append(p)
            if p.exchange_id:
                self.by_exchange.setdefault(p.exchange_id, []).append(p)


def check_integrity(
    store: Store, *, trusted_keys: Mapping[str, Any] | None = None, trust: str | None = None
) -> Integrity:
    res = verify_store(store, trusted_keys=trusted_keys, trust=trust)
    return Integrity(True, res.trust, res.summary(), list(res.trusted_key_ids), list(res.problems), list(res.notes))


def problem_json(p: Problem) -> dict[str, Any]:
    """A problem as the transcript writes it: key, check, message, chain, seq, exchange_id."""
    return asdict(p)
