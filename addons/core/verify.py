"""Verification of a recording store: what `gatehouse verify` runs, and the report's integrity column.

Checks, each reported with the store key and the check's name:
  json, canonical, schema   every record, checkpoint and blob parses and is in canonical form
  signature                 every record and checkpoint verifies with a trusted Ed25519 key
  sequence                  a record's own chain id and seq match where it is stored
  link                      each record names the hash of the record before it
  missing                   no seq is absent from a chain (after any signed prune point)
  checkpoint                every signed checkpoint's record is present and has the signed hash
                            (catches a deleted tail)
  previous-run              each chain's start record names the previous run's last record,
                            which is present with that hash (catches a deleted chain)
  blob                      every blob's content hashes to its name; every referenced blob exists
  key                       a published key file holds the key its name says
  versions, retention       on S3: one version per object, and Object Lock retention on each,
                            no blob retained for less time than a record that references it
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.core import records
from addons.core.records import RecordError, parse_key
from addons.core.stores import LOCK_MODES, NotFound, StoreError


@dataclass(frozen=True)
class Problem:
    key: str  # the store key concerned ("" for the store as a whole)
    check: str
    message: str
    chain: str | None = None
    seq: int | None = None
    exchange_id: str | None = None

    def __str__(self) -> str:
        return f"{self.key or '(store)'}: {self.check}: {self.message}"


@dataclass
class VerifyResult:
    store_url: str
    trust: str  # "policy", "file" or "store" (keys published in the store: consistency only)
    trusted_key_ids: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chains: int = 0
    records: int = 0
    checkpoints: int = 0
    blobs: int = 0
    keys: int = 0
    retention_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def problems_for_chain(self, chain: str) -> list[Problem]:
        return [p for p in self.problems if p.chain == chain]

    def problems_for_exchange(self, exchange_id: str) -> list[Problem]:
        return [p for p in self.problems if p.exchange_id == exchange_id]

    def summary(self) -> str:
        parts = [f"{self.chains} chain(s)", f"{self.records} record(s)", f"{self.checkpoints} checkpoint(s)",
                 f"{self.blobs} blob(s)", f"{self.keys} published key(s)"]
        if self.retention_checked:
            parts.append(f"Object Lock retention on {self.retention_checked} object(s)")
        return ", ".join(parts)


def load_trusted_keys(paths: Iterable[str | Path]) -> dict[str, Ed25519PublicKey]:
    """Trusted public keys from files (PEM, or base64 raw keys); RecordError names a bad file."""
    keys: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError as e:
            raise RecordError(f"public key file {p}: {e.strerror or e}") from None
        key = records.load_public_key(data, f"public key file {p}")
        keys[records.key_id_of(key)] = key
    return keys


def _fmt_range(seqs: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


@dataclass
class _Rec:
    key: str
    hash: str
    doc: dict[str, Any] | None  # None when unreadable
    valid_sig: bool


class _Verifier:
    def __init__(self, store: Any, trusted: Mapping[str, Ed25519PublicKey] | None, trust: str,
                 check_retention: bool, now: datetime) -> None:
        self.store = store
        self.trusted = trusted
        self.check_retention = check_retention
        self.now = now
        self.result = VerifyResult(store.url, trust)

    def problem(self, key: str, check: str, message: str, *, chain: str | None = None, seq: int | None = None,
                exchange_id: str | None = None) -> None:
        self.result.problems.append(Problem(key, check, message, chain, seq, exchange_id))

    def _get(self, key: str) -> bytes | None:
        try:
            return self.store.get(key)
        except NotFound:
            self.problem(key, "missing", "listed by the store but cannot be read (deleted during verify?)")
            return None

    def _parse(self, key: str, data: bytes, *, chain: str | None = None, seq: int | None = None) -> dict[str, Any] | None:
        try:
            doc = records.parse_json(data)
        except (ValueError, UnicodeDecodeError) as e:
            self.problem(key, "json", f"not valid JSON ({e}): the object was modified", chain=chain, seq=seq)
            return None
        if not isinstance(doc, dict):
            self.problem(key, "json", "not a JSON object", chain=chain, seq=seq)
            return None
        if records.canonical_json(doc) != data:
            self.problem(key, "canonical", "not in canonical JSON form: the object was modified or rewritten",
                         chain=chain, seq=seq, exchange_id=_str(doc.get("exchange_id")))
        return doc

    def run(self) -> VerifyResult:
        res = self.result
        keys = list(self.store.list(""))
        groups: dict[str, list[tuple[str, Any]]] = {"record": [], "checkpoint": [], "prune": [], "blob": [], "key": []}
        for k in keys:
            p = parse_key(k)
            if p is None:
                if not k.endswith("/") and not k.split("/")[-1].startswith("."):
                    res.notes.append(f"{k}: not part of the recording layout (ignored)")
                continue
            groups[p.kind].append((k, p))

        self._keys(groups["key"])
        blob_hashes = self._blobs(groups["blob"])
        prunes = self._prunes(groups["prune"])
        chains = self._records(groups["record"], prunes, blob_hashes)
        self._checkpoints(groups["checkpoint"], chains, prunes)
        self._previous_runs(chains, prunes)
        if self.check_retention:
            self._retention(keys, chains, prunes)
        res.chains = len(chains)
        return res

    # -- keys ----------------------------------------------------------------------------------
    def _keys(self, items: list[tuple[str, Any]]) -> None:
        published: dict[str, Ed25519PublicKey] = {}
        for k, p in items:
            data = self._get(k)
            if data is None:
                continue
            try:
                key = records.load_public_key(data, k)
            except RecordError as e:
                self.problem(k, "key", str(e))
                continue
            actual = records.key_id_of(key)
            if actual != p.key_id:
                self.problem(k, "key", f"holds key {actual}, not the key {p.key_id} its name says")
                continue
            published[actual] = key
        self.result.keys = len(published)
        if self.trusted is None:
            self.trusted = published
        else:
            extra = sorted(set(published) - set(self.trusted))
            if extra:
                self.result.notes.append(f"keys published in the store but not trusted: {', '.join(extra)}")
        self.result.trusted_key_ids = sorted(self.trusted)

    # -- blobs ---------------------------------------------------------------------------------
    def _blobs(self, items: list[tuple[str, Any]]) -> set[str]:
        good: set[str] = set()
        for k, p in items:
            data = self._get(k)
            if data is None:
                continue
            self.result.blobs += 1
            actual = hashlib.sha256(data).hexdigest()
            if actual != p.hex:
                self.problem(k, "blob", f"content hashes to sha256:{actual}, not to its name (the blob was modified)")
                continue
            good.add(p.hex)
        return good

    # -- prune points --------------------------------------------------------------------------
    def _checkpoint_doc(self, k: str, p: Any, kind: str) -> dict[str, Any] | None:
        data = self._get(k)
        if data is None:
            return None
        doc = self._parse(k, data, chain=p.chain, seq=p.seq)
        if doc is None:
            return None
        if doc.get("schema") != records.CHECKPOINT_SCHEMA:
            self.problem(k, "schema", f"unknown checkpoint schema {doc.get('schema')!r}", chain=p.chain, seq=p.seq)
            return None
        err = records.check_signature(doc, self.trusted or {})
        if err:
            self.problem(k, "signature", err, chain=p.chain, seq=p.seq)
            return None
        if doc.get("chain") != p.chain or doc.get("seq") != p.seq or doc.get("kind") != kind:
            self.problem(k, "sequence", f"is a {doc.get('kind')} checkpoint of seq {doc.get('seq')} of chain "
                         f"{doc.get('chain')}, but is stored as a {kind} checkpoint of seq {p.seq} of chain {p.chain}",
                         chain=p.chain, seq=p.seq)
            return None
        return doc

    def _prunes(self, items: list[tuple[str, Any]]) -> dict[str, tuple[int, str]]:
        """chain -> (last pruned seq, hash of that record), from valid signed prune checkpoints."""
        prunes: dict[str, tuple[int, str]] = {}
        for k, p in items:
            doc = self._checkpoint_doc(k, p, "prune")
            if doc is None:
                continue
            self.result.checkpoints += 1
            if p.chain not in prunes or prunes[p.chain][0] < p.seq:
                prunes[p.chain] = (p.seq, str(doc.get("head")))
        return prunes

    # -- records -------------------------------------------------------------------------------
    def _records(self, items: list[tuple[str, Any]], prunes: dict[str, tuple[int, str]],
                 blob_hashes: set[str]) -> dict[str, dict[int, _Rec]]:
        chains: dict[str, dict[int, _Rec]] = {}
        for k, p in sorted(items, key=lambda kp: (kp[1].chain, kp[1].seq)):
            data = self._get(k)
            if data is None:
                continue
            self.result.records += 1
            digest = records.sha256_ref(data)
            doc = self._parse(k, data, chain=p.chain, seq=p.seq)
            rec = _Rec(k, digest, doc, False)
            chains.setdefault(p.chain, {})[p.seq] = rec
            if doc is None:
                continue
            xid = _str(doc.get("exchange_id"))
            where = {"chain": p.chain, "seq": p.seq, "exchange_id": xid}
            if doc.get("schema") != records.SCHEMA:
                self.problem(k, "schema", f"unknown record schema {doc.get('schema')!r}", **where)
            if doc.get("kind") not in records.RECORD_KINDS:
                self.problem(k, "schema", f"unknown record kind {doc.get('kind')!r}", **where)
            err = records.check_signature(doc, self.trusted or {})
            if err:
                self.problem(k, "signature", err, **where)
            else:
                rec.valid_sig = True
            chain = doc.get("chain") if isinstance(doc.get("chain"), dict) else {}
            if chain.get("id") != p.chain or chain.get("seq") != p.seq:
                self.problem(k, "sequence", f"the record says it is seq {chain.get('seq')} of chain {chain.get('id')}, "
                             f"but it is stored as seq {p.seq} of chain {p.chain} (records were moved, swapped or "
                             "inserted)", **where)
            if (doc.get("kind") == "start") != (p.seq == 0):
                self.problem(k, "sequence", "a chain's seq 0, and only seq 0, is its start record"
                             if p.seq == 0 else f"a start record stored as seq {p.seq}", **where)
            try:
                refs = records.blob_refs(doc)
                for ref in refs:
                    if records.ref_hex(ref) not in blob_hashes:
                        self.problem(k, "blob", f"references blob {ref}, which is missing or damaged", **where)
            except (RecordError, AttributeError, TypeError):
                self.problem(k, "schema", "malformed blob references", **where)

        for chain_id, recs in chains.items():
            base = prunes.get(chain_id, (-1, ""))[0]
            for seq, rec in sorted(recs.items()):
                if rec.doc is None:
                    continue
                chain = rec.doc.get("chain") if isinstance(rec.doc.get("chain"), dict) else {}
                prev = chain.get("prev")
                where = {"chain": chain_id, "seq": seq, "exchange_id": _str(rec.doc.get("exchange_id"))}
                if seq == 0:
                    if prev is not None:
                        self.problem(rec.key, "link", f"seq 0 names a previous record ({prev})", **where)
                elif seq - 1 in recs:
                    expected = recs[seq - 1].hash
                    if prev != expected:
                        self.problem(rec.key, "link", f"names {prev} as the previous record, but record {seq - 1} "
                                     f"hashes to {expected} (a record was changed, replaced or reordered)", **where)
                elif seq - 1 == base:
                    expected = prunes[chain_id][1]
                    if prev != expected:
                        self.problem(rec.key, "link", f"names {prev} as the previous record, but the signed prune "
                                     f"checkpoint says record {base} hashed to {expected}", **where)
            # Gaps: every seq after the prune point up to the newest record must be present.
            if recs:
                top = max(recs)
                missing = [s for s in range(base + 1, top) if s not in recs]
                for lo, hi in _fmt_range(missing):
                    what = f"record {lo} is missing" if lo == hi else f"records {lo}..{hi} are missing"
                    self.problem(records.record_key(chain_id, lo), "missing",
                                 f"{what} from chain {chain_id} (deleted; the chain has records up to {top})",
                                 chain=chain_id, seq=lo)
        return chains

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoints(self, items: list[tuple[str, Any]], chains: dict[str, dict[int, _Rec]],
                     prunes: dict[str, tuple[int, str]]) -> None:
        for k, p in items:
            doc = self._checkpoint_doc(k, p, "head")
            if doc is None:
                continue
            self.result.checkpoints += 1
            base = prunes.get(p.chain, (-1, ""))[0]
            if p.seq <= base:
                continue
            recs = chains.get(p.chain, {})
            rec = recs.get(p.seq)
            if rec is None:
                newest = max(recs) if recs else None
                if newest is None or newest < p.seq:
                    have = f"the newest record present is seq {newest}" if newest is not None else "no record of it is present"
                    lo = (newest + 1) if newest is not None else base + 1
                    self.problem(k, "checkpoint", f"chain {p.chain} was checkpointed at seq {p.seq}, but {have}: "
                                 f"records {lo}..{p.seq} were deleted (truncated tail)", chain=p.chain, seq=p.seq)
                # else: the gap is already reported as missing records
            elif rec.hash != doc.get("head"):
                self.problem(k, "checkpoint", f"record {p.seq} of chain {p.chain} hashes to {rec.hash}, but the signed "
                             f"checkpoint says {doc.get('head')} (the record was replaced)", chain=p.chain, seq=p.seq)

    # -- links between runs --------------------------------------------------------------------
    def _previous_runs(self, chains: dict[str, dict[int, _Rec]], prunes: dict[str, tuple[int, str]]) -> None:
        for chain_id, recs in chains.items():
            start = recs.get(0)
            if start is None or start.doc is None or not start.valid_sig:
                continue
            prev = start.doc.get("previous")
            if not isinstance(prev, dict):
                continue
            pc, ps, ph = prev.get("chain"), prev.get("seq"), prev.get("hash")
            if not isinstance(pc, str) or not isinstance(ps, int):
                self.problem(start.key, "previous-run", f"malformed previous-run link {prev!r}", chain=chain_id, seq=0)
                continue
            target = chains.get(pc, {}).get(ps)
            base, base_hash = prunes.get(pc, (-1, ""))
            if target is not None:
                if target.hash != ph:
                    self.problem(start.key, "previous-run", f"names record {ps} of chain {pc} with hash {ph}, but that "
                                 f"record hashes to {target.hash}", chain=chain_id, seq=0)
                newest = max(chains[pc])
                if newest > ps:
                    self.problem(start.key, "previous-run", f"names record {ps} as the last of the previous run's "
                                 f"chain {pc}, but that chain has records up to {newest}", chain=chain_id, seq=0)
            elif ps == base:
                if base_hash != ph:
                    self.problem(start.key, "previous-run", f"names record {ps} of chain {pc} with hash {ph}, but the "
                                 f"signed prune checkpoint says {base_hash}", chain=chain_id, seq=0)
            elif ps > base:
                what = "the whole chain is missing" if pc not in chains else f"its newest record is seq {max(chains[pc])}"
                self.problem(start.key, "previous-run", f"names record {ps} of chain {pc} as the previous run's last "
                             f"record, which is missing ({what}): records were deleted", chain=chain_id, seq=0)

    # -- S3 ------------------------------------------------------------------------------------
    def _retention(self, keys: list[str], chains: dict[str, dict[int, _Rec]],
                   prunes: dict[str, tuple[int, str]]) -> None:
        store = self.store
        if hasattr(store, "object_lock_enabled") and not store.object_lock_enabled():
            self.problem("", "retention", f"bucket of {store.url} does not have Object Lock enabled: objects can be "
                         "overwritten or deleted")
            return
        if hasattr(store, "versions"):
            referenced = {records.ref_hex(ref) for recs in chains.values() for rec in recs.values() if rec.doc
                          for ref in _refs(rec.doc)}
            for k, info in sorted(store.versions("").items()):
                p = parse_key(k)
                if p is None:
                    continue
                if info.versions > 1:
                    self.problem(k, "versions", f"{info.versions} versions exist: the object was overwritten "
                                 "(the current version is what verify checked)")
                if not info.delete_markers:
                    continue
                # `gatehouse prune` puts delete markers on what a signed prune checkpoint covers
                # and on blobs no remaining record references; anywhere else one is an attack.
                pruned = (p.kind in ("record", "checkpoint") and p.seq <= prunes.get(p.chain, (-1, ""))[0]) or \
                         (p.kind == "blob" and p.hex not in referenced)
                if not pruned:
                    state = "hides it (it reads as deleted)" if info.latest_is_delete_marker else "exists"
                    self.problem(k, "versions", f"a delete marker {state}: someone tried to delete the object",
                                 chain=p.chain or None, seq=p.seq if p.seq >= 0 else None)
        until: dict[str, datetime | None] = {}
        for k in keys:
            if parse_key(k) is None:
                continue
            try:
                r = store.retention(k)
            except (NotFound, StoreError) as e:
                self.problem(k, "retention", f"cannot read retention: {e}")
                continue
            self.result.retention_checked += 1
            if r is None or r.mode is None or r.until is None:
                self.problem(k, "retention", "no Object Lock retention")
                until[k] = None
                continue
            if r.mode not in LOCK_MODES:
                self.problem(k, "retention", f"unknown Object Lock mode {r.mode!r}")
            until[k] = r.until
        expired = sum(1 for u in until.values() if u is not None and u < self.now)
        if expired:
            self.result.notes.append(f"{expired} object(s) are past their retain-until date (no longer locked)")
        # A blob must stay at least as long as every record that references it.
        for recs in chains.values():
            for rec in recs.values():
                ru = until.get(rec.key)
                if rec.doc is None or ru is None:
                    continue
                for ref in _refs(rec.doc):
                    bk = records.blob_key(ref)
                    bu = until.get(bk)
                    if bu is not None and bu < ru:
                        self.problem(bk, "retention", f"retained until {bu.isoformat()}, before record {rec.key} "
                                     f"(retained until {ru.isoformat()}) which references it",
                                     chain=rec.doc.get("chain", {}).get("id"), seq=rec.doc.get("chain", {}).get("seq"))


def _refs(doc: dict[str, Any]) -> list[str]:
    try:
        refs = records.blob_refs(doc)
        for r in refs:
            records.ref_hex(r)
        return refs
    except (RecordError, AttributeError, TypeError):
        return []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def verify_store(store: Any, *, trusted_keys: Mapping[str, Ed25519PublicKey] | None = None, trust: str | None = None,
                 check_retention: bool | None = None, now: datetime | None = None) -> VerifyResult:
    """Verify everything in `store`. Without `trusted_keys`, the keys published in the store
    are used: that proves the store is consistent, not who wrote it (`trust` is "store").
    Retention is checked on stores whose objects carry it (S3) unless `check_retention` says."""
    if check_retention is None:
        check_retention = hasattr(store, "versions")
    trust = trust or ("store" if trusted_keys is None else "file")
    v = _Verifier(store, dict(trusted_keys) if trusted_keys is not None else None, trust, check_retention,
                  now or datetime.now(UTC))
    return v.run()
