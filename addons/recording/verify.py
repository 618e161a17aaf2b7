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
                            which is present with that hash (catches a deleted chain); a run
                            that followed one on another store says so (``previous_store``),
                            which is a note, checked only if that chain is in this store too
  blob                      every blob's content hashes to its name; every referenced blob exists
  key                       a published key file holds the key its name says
  versions, retention       on S3: one version per object, and Object Lock retention on each,
                            no blob retained for less time than a record that references it
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gatehouse.recording.canonical import RecordError, canonical_json, parse_json, ref_hex
from gatehouse.recording.chain import CHECKPOINT_SCHEMA, RECORD_KINDS, SCHEMA
from gatehouse.recording.layout import APPROVALS_PREFIX, blob_key, parse_key, record_key
from gatehouse.recording.reader import blob_refs
from gatehouse.recording.signing import check_signature, key_id_of, load_public_key
from gatehouse.recording.stores import LOCK_MODES, NotFound, S3Store, Store, StoreError


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

    def summary(self) -> str:
        parts = [
            f"{self.chains} chain(s)",
            f"{self.records} record(s)",
            f"{self.checkpoints} checkpoint(s)",
            f"{self.blobs} blob(s)",
            f"{self.keys} published key(s)",
        ]
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
        key = load_public_key(data, f"public key file {p}")
        keys[key_id_of(key)] = key
    return keys


class _Chain:
    """What verify keeps of one chain: per listed seq, whether the record could be read and its
    hash (32 bytes), plus the few fields later checks need. Never a record's document: a store
    holds far more records than memory (10,000 sessions of 20 exchanges, 4 GB as documents).
    """

    __slots__ = ("id", "seqs", "hashes", "read", "newest", "previous", "previous_store", "refs", "until")

    def __init__(self, chain_id: str, seqs: Iterable[int]) -> None:
        self.id = chain_id
        self.seqs = array("q", sorted(seqs))  # every seq the listing had, read or not
        self.hashes = bytearray(32 * len(self.seqs))
        self.read = bytearray(len(self.seqs))  # 1 where the record was read (and hashed)
        self.newest: int | None = None  # the highest seq read
        self.previous: dict[str, Any] | None = None  # a signed start record's previous-run link
        self.previous_store: dict[str, Any] | None = None  # ... or where the previous run recorded
        # Only when retention is checked: seq -> (the record's own chain id and seq, indexes of
        # the listed blobs it references), and per listed seq its retain-until date.
        self.refs: dict[int, tuple[Any, Any, array[int]]] = {}
        self.until: list[datetime | None] = []

    def hash(self, seq: int) -> str | None:
        """The ``sha256:`` hash of record `seq`, None unless it was read."""
        i = bisect_left(self.seqs, seq)
        if i == len(self.seqs) or self.seqs[i] != seq or not self.read[i]:
            return None
        return "sha256:" + self.hashes[32 * i : 32 * i + 32].hex()


def _gaps(read_seqs: Iterable[int], base: int) -> Iterator[tuple[int, int]]:
    """The ranges of seqs after `base` and before the last of `read_seqs` (ascending) not in it."""
    prev = base
    for s in read_seqs:
        if s <= base:
            continue
        if s > prev + 1:
            yield prev + 1, s - 1
        prev = s


class _Verifier:
    def __init__(
        self,
        store: Store,
        trusted: Mapping[str, Ed25519PublicKey] | None,
        trust: str,
        check_retention: bool,
        now: datetime,
    ) -> None:
        self.store = store
        self.trusted = trusted
        self.check_retention = check_retention
        self.now = now
        self.result = VerifyResult(store.url, trust)
        # Retention only: listed blobs (32-byte digests, listing order) and their indexes, and
        # every blob some record references (listed or not).
        self.blobs: list[bytes] = []
        self.blob_index: dict[bytes, int] = {}
        self.referenced: set[bytes] = set()

    def problem(
        self,
        key: str,
        check: str,
        message: str,
        *,
        chain: str | None = None,
        seq: int | None = None,
        exchange_id: str | None = None,
    ) -> None:
        self.result.problems.append(Problem(key, check, message, chain, seq, exchange_id))

    def _get(self, key: str) -> bytes | None:
        try:
            return self.store.get(key)
        except NotFound:
            self.problem(key, "missing", "listed by the store but cannot be read (deleted during verify?)")
            return None

    def _parse(
        self, key: str, data: bytes, *, chain: str | None = None, seq: int | None = None
    ) -> dict[str, Any] | None:
        try:
            doc = parse_json(data)
        except (ValueError, UnicodeDecodeError) as e:
            self.problem(key, "json", f"not valid JSON ({e}): the object was modified", chain=chain, seq=seq)
            return None
        if not isinstance(doc, dict):
            self.problem(key, "json", "not a JSON object", chain=chain, seq=seq)
            return None
        if canonical_json(doc) != data:
            self.problem(
                key,
                "canonical",
                "not in canonical JSON form: the object was modified or rewritten",
                chain=chain,
                seq=seq,
                exchange_id=_str(doc.get("exchange_id")),
            )
        return doc

    def run(self) -> VerifyResult:
        res = self.result
        # One pass over the listing, keeping keys compactly: records as seqs per chain, blobs as
        # digests; checkpoints and keys (a few per chain) as they are.
        groups: dict[str, list[tuple[str, Any]]] = {"checkpoint": [], "prune": [], "key": []}
        record_seqs: dict[str, array[int]] = {}
        blobs: list[bytes] = []
        for k in self.store.list(""):
            if k.startswith(APPROVALS_PREFIX):
                continue  # the approvals store (write-once too, but not part of the chain)
            p = parse_key(k)
            if p is None:
                if not k.endswith("/") and not k.split("/")[-1].startswith("."):
                    res.notes.append(f"{k}: not part of the recording layout (ignored)")
                continue
            if p.kind == "record":
                seqs = record_seqs.get(p.chain)
                if seqs is None:
                    seqs = record_seqs[p.chain] = array("q")
                seqs.append(p.seq)
            elif p.kind == "blob":
                blobs.append(bytes.fromhex(p.hex))
            else:
                groups[p.kind].append((k, p))

        self._keys(groups["key"])
        blob_hashes = self._blobs(blobs)
        if self.check_retention:
            self.blobs = blobs
            self.blob_index = {d: i for i, d in enumerate(blobs)}
        del blobs
        prunes = self._prunes(groups["prune"])
        all_chains = self._records(record_seqs, prunes, blob_hashes)
        del blob_hashes
        # As verify always counted chains: those with at least one readable record.
        chains = {cid: c for cid, c in all_chains.items() if c.newest is not None}
        self._checkpoints(groups["checkpoint"], chains, prunes)
        self._previous_runs(chains, prunes)
        if self.check_retention:
            self._retention(groups, all_chains, chains, prunes)
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
                key = load_public_key(data, k)
            except RecordError as e:
                self.problem(k, "key", str(e))
                continue
            actual = key_id_of(key)
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
    def _blobs(self, digests: list[bytes]) -> set[bytes]:
        """The digests of the listed blobs whose content hashes to their name."""
        good: set[bytes] = set()
        for digest in digests:
            k = blob_key(digest.hex())
            data = self._get(k)
            if data is None:
                continue
            self.result.blobs += 1
            actual = hashlib.sha256(data).digest()
            if actual != digest:
                self.problem(
                    k, "blob", f"content hashes to sha256:{actual.hex()}, not to its name (the blob was modified)"
                )
                continue
            good.add(digest)
        return good

    # -- prune points --------------------------------------------------------------------------
    def _checkpoint_doc(self, k: str, p: Any, kind: str) -> dict[str, Any] | None:
        data = self._get(k)
        if data is None:
            return None
        doc = self._parse(k, data, chain=p.chain, seq=p.seq)
        if doc is None:
            return None
        if doc.get("schema") != CHECKPOINT_SCHEMA:
            self.problem(k, "schema", f"unknown checkpoint schema {doc.get('schema')!r}", chain=p.chain, seq=p.seq)
            return None
        err = check_signature(doc, self.trusted or {})
        if err:
            self.problem(k, "signature", err, chain=p.chain, seq=p.seq)
            return None
        if doc.get("chain") != p.chain or doc.get("seq") != p.seq or doc.get("kind") != kind:
            self.problem(
                k,
                "sequence",
                f"is a {doc.get('kind')} checkpoint of seq {doc.get('seq')} of chain "
                f"{doc.get('chain')}, but is stored as a {kind} checkpoint of seq {p.seq} of chain {p.chain}",
                chain=p.chain,
                seq=p.seq,
            )
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
    def _records(
        self, record_seqs: dict[str, array[int]], prunes: dict[str, tuple[int, str]], blob_hashes: set[bytes]
    ) -> dict[str, _Chain]:
        """Read every record once, in (chain, seq) order, checking it and its link as it goes;
        nothing of a record but its hash (and what later checks name) outlives its turn."""
        chains: dict[str, _Chain] = {}
        # Link and gap problems: reported after every record's own problems, chain by chain.
        deferred: list[Problem] = []
        for chain_id in sorted(record_seqs):
            c = chains[chain_id] = _Chain(chain_id, record_seqs.pop(chain_id))
            if self.check_retention:
                c.until = [None] * len(c.seqs)
            base, base_hash = prunes.get(chain_id, (-1, ""))
            last_seq, last_hash = -1, ""  # the record before this one, when it was read
            for i, seq in enumerate(c.seqs):
                k = record_key(chain_id, seq)
                data = self._get(k)
                if data is None:
                    continue
                self.result.records += 1
                digest = hashlib.sha256(data).digest()
                c.hashes[32 * i : 32 * i + 32] = digest
                c.read[i] = 1
                c.newest = seq
                before_seq, before_hash = last_seq, last_hash
                last_seq, last_hash = seq, "sha256:" + digest.hex()
                doc = self._parse(k, data, chain=chain_id, seq=seq)
                del data
                if doc is None:
                    continue
                xid = _str(doc.get("exchange_id"))
                where = {"chain": chain_id, "seq": seq, "exchange_id": xid}
                if doc.get("schema") != SCHEMA:
                    self.problem(k, "schema", f"unknown record schema {doc.get('schema')!r}", **where)
                if doc.get("kind") not in RECORD_KINDS:
                    self.problem(k, "schema", f"unknown record kind {doc.get('kind')!r}", **where)
                err = check_signature(doc, self.trusted or {})
                if err:
                    self.problem(k, "signature", err, **where)
                chain = doc.get("chain") if isinstance(doc.get("chain"), dict) else {}
                if chain.get("id") != chain_id or chain.get("seq") != seq:
                    self.problem(
                        k,
                        "sequence",
                        f"the record says it is seq {chain.get('seq')} of chain "
                        f"{chain.get('id')}, but it is stored as seq {seq} of chain {chain_id} (records were "
                        "moved, swapped or inserted)",
                        **where,
                    )
                if (doc.get("kind") == "start") != (seq == 0):
                    self.problem(
                        k,
                        "sequence",
                        "a chain's seq 0, and only seq 0, is its start record"
                        if seq == 0
                        else f"a start record stored as seq {seq}",
                        **where,
                    )
                try:
                    refs = blob_refs(doc)
                    for ref in refs:
                        if bytes.fromhex(ref_hex(ref)) not in blob_hashes:
                            self.problem(k, "blob", f"references blob {ref}, which is missing or damaged", **where)
                except (RecordError, AttributeError, TypeError):
                    self.problem(k, "schema", "malformed blob references", **where)

                # The link to the record before, from the chain's hashes (not its document).
                prev = chain.get("prev")
                if seq == 0:
                    if prev is not None:
                        deferred.append(Problem(k, "link", f"seq 0 names a previous record ({prev})", **where))
                elif before_seq == seq - 1:
                    if prev != before_hash:
                        deferred.append(
                            Problem(
                                k,
                                "link",
                                f"names {prev} as the previous record, but record "
                                f"{seq - 1} hashes to {before_hash} (a record was changed, replaced "
                                "or reordered)",
                                **where,
                            )
                        )
                elif seq - 1 == base:
                    if prev != base_hash:
                        deferred.append(
                            Problem(
                                k,
                                "link",
                                f"names {prev} as the previous record, but the signed "
                                f"prune checkpoint says record {base} hashed to {base_hash}",
                                **where,
                            )
                        )
                if seq == 0 and not err and isinstance(doc.get("previous"), dict):
                    c.previous = doc["previous"]
                if seq == 0 and not err and isinstance(doc.get("previous_store"), dict):
                    c.previous_store = doc["previous_store"]
                if self.check_retention:
                    self._note_refs(c, seq, doc)
            # Gaps: every seq after the prune point up to the newest record must be present.
            if c.newest is not None:
                top = c.newest
                for lo, hi in _gaps((s for s, r in zip(c.seqs, c.read, strict=True) if r), base):
                    what = f"record {lo} is missing" if lo == hi else f"records {lo}..{hi} are missing"
                    deferred.append(
                        Problem(
                            record_key(chain_id, lo),
                            "missing",
                            f"{what} from chain {chain_id} (deleted; the chain has records up to {top})",
                            chain_id,
                            lo,
                        )
                    )
        self.result.problems.extend(deferred)
        return chains

    def _note_refs(self, c: _Chain, seq: int, doc: dict[str, Any]) -> None:
        """What the retention checks need of a record's blob references (retention only)."""
        digests = [bytes.fromhex(ref_hex(ref)) for ref in _refs(doc)]
        if not digests:
            return
        self.referenced.update(digests)
        listed = array("I", (self.blob_index[d] for d in digests if d in self.blob_index))
        if listed:
            chain = doc.get("chain") if isinstance(doc.get("chain"), dict) else {}
            cid, cseq = chain.get("id"), chain.get("seq")
            c.refs[seq] = (c.id if cid == c.id else cid, seq if cseq == seq else cseq, listed)

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoints(
        self, items: list[tuple[str, Any]], chains: dict[str, _Chain], prunes: dict[str, tuple[int, str]]
    ) -> None:
        for k, p in items:
            doc = self._checkpoint_doc(k, p, "head")
            if doc is None:
                continue
            self.result.checkpoints += 1
            base = prunes.get(p.chain, (-1, ""))[0]
            if p.seq <= base:
                continue
            c = chains.get(p.chain)
            rec_hash = c.hash(p.seq) if c is not None else None
            if rec_hash is None:
                newest = c.newest if c is not None else None
                if newest is None or newest < p.seq:
                    have = (
                        f"the newest record present is seq {newest}"
                        if newest is not None
                        else "no record of it is present"
                    )
                    lo = (newest + 1) if newest is not None else base + 1
                    self.problem(
                        k,
                        "checkpoint",
                        f"chain {p.chain} was checkpointed at seq {p.seq}, but {have}: "
                        f"records {lo}..{p.seq} were deleted (truncated tail)",
                        chain=p.chain,
                        seq=p.seq,
                    )
                # else: the gap is already reported as missing records
            elif rec_hash != doc.get("head"):
                self.problem(
                    k,
                    "checkpoint",
                    f"record {p.seq} of chain {p.chain} hashes to {rec_hash}, but the signed "
                    f"checkpoint says {doc.get('head')} (the record was replaced)",
                    chain=p.chain,
                    seq=p.seq,
                )

    # -- links between runs --------------------------------------------------------------------
    def _previous_runs(self, chains: dict[str, _Chain], prunes: dict[str, tuple[int, str]]) -> None:
        for chain_id, c in chains.items():
            # Set only for a readable, signed start record whose link is an object.
            if c.previous is not None:
                self._previous_run(chain_id, c.previous, chains, prunes)
            if c.previous_store is not None:
                self._previous_run(chain_id, c.previous_store, chains, prunes, elsewhere=True)

    def _previous_run(
        self,
        chain_id: str,
        prev: dict[str, Any],
        chains: dict[str, _Chain],
        prunes: dict[str, tuple[int, str]],
        *,
        elsewhere: bool = False,
    ) -> None:
        """Check one start record's link to the previous run's last record. `elsewhere`: the
        link is ``previous_store``, the previous run recorded to another store (`url`): a note,
        unless that chain is in this store after all (the store was renamed), when it is checked."""
        start_key = record_key(chain_id, 0)
        pc, ps, ph = prev.get("chain"), prev.get("seq"), prev.get("hash")
        url = prev.get("url")
        if not isinstance(pc, str) or not isinstance(ps, int) or (elsewhere and not isinstance(url, str)):
            self.problem(start_key, "previous-run", f"malformed previous-run link {prev!r}", chain=chain_id, seq=0)
            return
        if elsewhere and pc not in chains and pc not in prunes:
            self.result.notes.append(
                f"{start_key}: chain {chain_id} follows a run that recorded to another store, {url} "
                f"(its last record: seq {ps} of chain {pc}); verify that store for it"
            )
            return
        other = chains.get(pc)
        target_hash = other.hash(ps) if other is not None else None
        base, base_hash = prunes.get(pc, (-1, ""))
        if other is not None and target_hash is not None:
            if target_hash != ph:
                self.problem(
                    start_key,
                    "previous-run",
                    f"names record {ps} of chain {pc} with hash {ph}, but that record hashes to {target_hash}",
                    chain=chain_id,
                    seq=0,
                )
            newest = other.newest
            assert newest is not None
            if newest > ps:
                self.problem(
                    start_key,
                    "previous-run",
                    f"names record {ps} as the last of the previous run's "
                    f"chain {pc}, but that chain has records up to {newest}",
                    chain=chain_id,
                    seq=0,
                )
        elif ps == base:
            if base_hash != ph:
                self.problem(
                    start_key,
                    "previous-run",
                    f"names record {ps} of chain {pc} with hash {ph}, but the signed prune checkpoint says {base_hash}",
                    chain=chain_id,
                    seq=0,
                )
        elif ps > base:
            what = "the whole chain is missing" if other is None else f"its newest record is seq {other.newest}"
            self.problem(
                start_key,
                "previous-run",
                f"names record {ps} of chain {pc} as the previous run's last "
                f"record, which is missing ({what}): records were deleted",
                chain=chain_id,
                seq=0,
            )

    # -- S3 ------------------------------------------------------------------------------------
    def _layout_keys(
        self, groups: dict[str, list[tuple[str, Any]]], chains: dict[str, _Chain]
    ) -> Iterator[tuple[str, _Chain | None, int]]:
        """Every layout key the listing had, in the listing's (sorted) order, rebuilt from what
        verify kept: (key, its chain and index for a record, or None and the blob's index)."""
        for i in sorted(range(len(self.blobs)), key=self.blobs.__getitem__):
            yield blob_key(self.blobs[i].hex()), None, i
        for k in sorted(k for kind in ("checkpoint", "prune") for k, _ in groups[kind]):
            yield k, None, -1
        for k in sorted(k for k, _ in groups["key"]):
            yield k, None, -1
        for chain_id in sorted(chains, key=lambda cid: cid + "/"):  # as records/<chain>/... sort
            c = chains[chain_id]
            for i, seq in enumerate(c.seqs):
                yield record_key(chain_id, seq), c, i

    def _retention(
        self,
        groups: dict[str, list[tuple[str, Any]]],
        all_chains: dict[str, _Chain],
        chains: dict[str, _Chain],
        prunes: dict[str, tuple[int, str]],
    ) -> None:
        store = self.store
        if isinstance(store, S3Store):  # the bucket's own checks: its Object Lock configuration, versions
            if not store.object_lock_enabled():
                self.problem(
                    "",
                    "retention",
                    f"bucket of {store.url} does not have Object Lock enabled: objects can be overwritten or deleted",
                )
                return
            referenced = self.referenced
            for k, info in sorted(store.versions("").items()):
                p = parse_key(k)
                if p is None:
                    continue
                if info.versions > 1:
                    self.problem(
                        k,
                        "versions",
                        f"{info.versions} versions exist: the object was overwritten "
                        "(the current version is what verify checked)",
                    )
                if not info.delete_markers:
                    continue
                # `gatehouse prune` puts delete markers on what a signed prune checkpoint covers
                # and on blobs no remaining record references; anywhere else one is an attack.
                pruned = (p.kind in ("record", "checkpoint") and p.seq <= prunes.get(p.chain, (-1, ""))[0]) or (
                    p.kind == "blob" and bytes.fromhex(p.hex) not in referenced
                )
                if not pruned:
                    state = "hides it (it reads as deleted)" if info.latest_is_delete_marker else "exists"
                    self.problem(
                        k,
                        "versions",
                        f"a delete marker {state}: someone tried to delete the object",
                        chain=p.chain or None,
                        seq=p.seq if p.seq >= 0 else None,
                    )
        blob_until: list[datetime | None] = [None] * len(self.blobs)
        expired = 0
        for k, c, i in self._layout_keys(groups, all_chains):
            try:
                r = store.retention(k)
            except (NotFound, StoreError) as e:
                self.problem(k, "retention", f"cannot read retention: {e}")
                continue
            self.result.retention_checked += 1
            u: datetime | None = None
            if r is None or r.mode is None or r.until is None:
                self.problem(k, "retention", "no Object Lock retention")
            else:
                if r.mode not in LOCK_MODES:
                    self.problem(k, "retention", f"unknown Object Lock mode {r.mode!r}")
                u = r.until
                if u < self.now:
                    expired += 1
            if c is not None:
                c.until[i] = u
            elif i >= 0:
                blob_until[i] = u
        if expired:
            self.result.notes.append(f"{expired} object(s) are past their retain-until date (no longer locked)")
        # A blob must stay at least as long as every record that references it.
        for chain_id, c in chains.items():
            for i, seq in enumerate(c.seqs):
                ru = c.until[i]
                entry = c.refs.get(seq)
                if ru is None or entry is None or not c.read[i]:
                    continue
                cid, cseq, listed = entry
                for b in listed:
                    bu = blob_until[b]
                    if bu is not None and bu < ru:
                        self.problem(
                            blob_key(self.blobs[b].hex()),
                            "retention",
                            f"retained until {bu.isoformat()}, before record "
                            f"{record_key(chain_id, seq)} (retained until {ru.isoformat()}) which "
                            "references it",
                            chain=cid,
                            seq=cseq,
                        )


def _refs(doc: dict[str, Any]) -> list[str]:
    try:
        refs = blob_refs(doc)
        for r in refs:
            ref_hex(r)
        return refs
    except (RecordError, AttributeError, TypeError):
        return []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def verify_store(
    store: Store,
    *,
    trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
    trust: str | None = None,
    check_retention: bool | None = None,
    now: datetime | None = None,
) -> VerifyResult:
    """Verify everything in `store`. Without `trusted_keys`, the keys published in the store
    are used: that proves the store is consistent, not who wrote it (`trust` is "store").
    Retention is checked on stores whose objects carry it (S3) unless `check_retention` says."""
    if check_retention is None:
        check_retention = isinstance(store, S3Store)
    trust = trust or ("store" if trusted_keys is None else "file")
    v = _Verifier(
        store,
        dict(trusted_keys) if trusted_keys is not None else None,
        trust,
        check_retention,
        now or datetime.now(UTC),
    )
    return v.run()
