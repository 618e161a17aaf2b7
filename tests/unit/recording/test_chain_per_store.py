"""A chain belongs to its store: one spool (state dir) recording to one store, then another."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gatehouse.recording.layout import record_key
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.spool import SpoolForOtherStore
from gatehouse.recording.stores import LocalStore, StoreError
from gatehouse.recording.verify import verify_store
from support.records import numbered_record, open_recording


def trusted(key: SigningKey) -> dict:
    return {key.key_id: key.public_key}


def run(spool: Path, store: LocalStore, key: SigningKey, ids: range, opened: list[Path]) -> str:
    """One gateway run on `spool` recording to `store`, shut down cleanly; its chain id."""
    rec = open_recording(spool, store, key, opened)
    rec.start()
    for i in ids:
        rec.append(numbered_record(i))
    assert rec.shutdown()
    chain = rec.journal.chain_id
    Recording.forget(spool)
    assert chain is not None
    return chain


def test_second_store_verifies_on_its_own_and_names_where_the_previous_run_lives(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    spool = tmp_path / "state/spool"
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    chain_a = run(spool, a, key, range(3), recordings)
    chain_b = run(spool, b, key, range(3, 5), recordings)

    result_b = verify_store(b, trusted_keys=trusted(key))
    assert result_b.ok, [str(p) for p in result_b.problems]
    assert result_b.records == 3  # start + 2
    start = json.loads(b.get(record_key(chain_b, 0)))
    assert start["previous"] is None
    head_a = json.loads(a.get(record_key(chain_a, 3)))
    assert start["previous_store"] == {
        "url": a.url,
        "chain": chain_a,
        "seq": 3,
        "hash": "sha256:" + hashlib.sha256(a.get(record_key(chain_a, 3))).hexdigest(),
    }
    assert head_a["chain"]["seq"] == 3
    assert any(a.url in n and chain_a in n for n in result_b.notes), result_b.notes
    # Nothing of the run on A went to B, and A still verifies on its own.
    assert not list(b.list(f"records/{chain_a}/"))
    result_a = verify_store(a, trusted_keys=trusted(key))
    assert result_a.ok, [str(p) for p in result_a.problems]


def test_back_on_the_first_store_the_chain_links_to_its_own_previous_run(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    spool = tmp_path / "state/spool"
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    chain_a1 = run(spool, a, key, range(2), recordings)
    chain_b = run(spool, b, key, range(2, 3), recordings)
    chain_a2 = run(spool, a, key, range(3, 4), recordings)
    start = json.loads(a.get(record_key(chain_a2, 0)))
    # The spool's previous run recorded to B: A's new chain says so, and names the last record
    # the spool wrote to A, so A's own runs stay linked across the visit to B.
    assert start["previous_store"]["url"] == b.url and start["previous_store"]["chain"] == chain_b
    last_a1 = a.get(record_key(chain_a1, 2))
    assert start["previous"] == {"chain": chain_a1, "seq": 2, "hash": "sha256:" + hashlib.sha256(last_a1).hexdigest()}
    for store in (a, b):
        result = verify_store(store, trusted_keys=trusted(key))
        assert result.ok, [str(p) for p in result.problems]
    # Deleting A's first run is caught although a run on B came between.
    for sub in ("records", "checkpoints"):
        for p in (tmp_path / "a" / sub / chain_a1).iterdir():
            p.chmod(0o600)
            p.unlink()
    result = verify_store(a, trusted_keys=trusted(key))
    assert [(p.check, p.chain) for p in result.problems] == [("previous-run", chain_a2)]


def test_same_store_still_reports_a_deleted_previous_run(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    spool = tmp_path / "state/spool"
    a = LocalStore(tmp_path / "a")
    first = run(spool, a, key, range(2), recordings)
    second = run(spool, a, key, range(2, 3), recordings)
    start = json.loads(a.get(record_key(second, 0)))
    assert start["previous"]["chain"] == first and "previous_store" not in start
    for p in (tmp_path / "a/records" / first).iterdir():
        p.chmod(0o600)
        p.unlink()
    for p in (tmp_path / "a/checkpoints" / first).iterdir():
        p.chmod(0o600)
        p.unlink()
    result = verify_store(a, trusted_keys=trusted(key))
    assert [p.check for p in result.problems] == ["previous-run"]
    assert "the whole chain is missing" in result.problems[0].message


def test_a_crashed_run_s_objects_never_go_to_another_store(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    spool = tmp_path / "state/spool"
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    rec = open_recording(spool, a, key, recordings)
    rec.spool.open()  # no uploader: everything stays spooled, then the process dies
    rec.append(numbered_record(0))
    chain_a = rec.journal.chain_id
    Recording.forget(spool)

    rec_b = open_recording(spool, b, key, recordings)
    with pytest.raises(SpoolForOtherStore) as e:
        rec_b.start()
    message = str(e.value)
    assert (
        str(spool) in message and a.url in message and b.url in message and "3 object(s)" in message
    )  # key, start, record 0
    assert not list(b.list("")) and not list(a.list(""))
    with pytest.raises(SpoolForOtherStore):  # nor through an append
        rec_b.append(numbered_record(1))
    Recording.forget(spool)

    # Started once more on A, the spool empties into A; then B takes the (empty) spool.
    run(spool, a, key, range(1, 2), recordings)
    chain_b = run(spool, b, key, range(2, 3), recordings)
    assert not list(b.list(f"records/{chain_a}/"))
    for store in (a, b):
        result = verify_store(store, trusted_keys=trusted(key))
        assert result.ok, [str(p) for p in result.problems]
    assert json.loads(b.get(record_key(chain_b, 0)))["previous_store"]["url"] == a.url


def test_a_reload_that_changes_the_store_ends_the_chain_and_starts_one_in_the_new_store(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    spool = tmp_path / "state/spool"
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    rec = open_recording(spool, a, key, recordings)
    rec.start()
    rec.append(numbered_record(0))
    rec.append(numbered_record(1))
    chain_a = rec.journal.chain_id
    assert rec.uploader.flush(10)  # the shared system-prompt blob is known to be in A
    rec.spool.uploaded.put("0" * 64, True)

    again = open_recording(spool, b, key, recordings)  # the reload: same spool, other store
    assert again is rec
    rec.start()
    rec.append(numbered_record(2))
    chain_b = rec.journal.chain_id
    assert chain_b != chain_a
    assert rec.shutdown()
    # A's chain ended there with a checkpoint of its head; B holds only its own chain, blobs included.
    assert list(a.list(f"checkpoints/{chain_a}/")) == [f"checkpoints/{chain_a}/{2:012d}.json"]
    assert {k.split("/")[1] for k in b.list("records/")} == {chain_b}
    start = json.loads(b.get(record_key(chain_b, 0)))
    assert start["previous"] is None and start["previous_store"]["chain"] == chain_a
    for store in (a, b):
        result = verify_store(store, trusted_keys=trusted(key))
        assert result.ok, [str(p) for p in result.problems]
        assert result.keys == 1


class DownStore(LocalStore):
    def put(self, key, data, **kw):  # type: ignore[no-untyped-def]
        raise StoreError(f"{self.url}: unreachable")

    def put_batch(self, items):  # type: ignore[no-untyped-def]
        raise StoreError(f"{self.url}: unreachable")


def test_a_reload_to_another_store_is_refused_while_the_old_one_has_not_taken_everything(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    spool = tmp_path / "state/spool"
    a, b = DownStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    rec = open_recording(spool, a, key, recordings)
    rec.spool.open()
    rec.append(numbered_record(0))
    chain_a = rec.journal.chain_id
    with pytest.raises(SpoolForOtherStore, match="still wait for") as e:
        open_recording(spool, b, key, recordings)
    assert "unreachable" in str(e.value)
    # Recording goes on in A's chain, to A.
    assert rec.uploader.store is a and rec.append(numbered_record(1)).chain == chain_a
    assert not list(b.list(""))


def test_a_head_written_before_heads_named_their_store_links_as_before(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    spool = tmp_path / "state/spool"
    a = LocalStore(tmp_path / "a")
    first = run(spool, a, key, range(1), recordings)
    head = json.loads((spool / "head.json").read_text())
    assert head["store"] == a.url
    del head["store"]
    (spool / "head.json").write_text(json.dumps(head))
    (spool / "store.json").unlink()
    second = run(spool, a, key, range(1, 2), recordings)
    assert json.loads(a.get(record_key(second, 0)))["previous"]["chain"] == first
    assert verify_store(a, trusted_keys=trusted(key)).ok


def test_a_renamed_store_still_checks_the_previous_run_it_holds(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    spool = tmp_path / "state/spool"
    first = run(spool, LocalStore(tmp_path / "a"), key, range(2), recordings)
    (tmp_path / "a").rename(tmp_path / "renamed")
    renamed = LocalStore(tmp_path / "renamed")
    run(spool, renamed, key, range(2, 3), recordings)
    result = verify_store(renamed, trusted_keys=trusted(key))
    assert result.ok and not [n for n in result.notes if "another store" in n], result
    # Deleted from here, the previous run reads as living in the other store: a note, not a
    # problem (docs/recording-format.md, Limits).
    for sub in ("records", "checkpoints"):
        for p in (tmp_path / "renamed" / sub / first).iterdir():
            p.chmod(0o600)
            p.unlink()
    result = verify_store(renamed, trusted_keys=trusted(key))
    assert result.ok and [n for n in result.notes if str(tmp_path / "a") in n and first in n]


def test_a_start_record_naming_another_store_validates_against_the_json_schema(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[3] / "addons/schemas/record.schema.json").read_text())
    spool = tmp_path / "state/spool"
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    run(spool, a, key, range(1), recordings)
    chain_b = run(spool, b, key, range(1, 2), recordings)
    start = json.loads(b.get(record_key(chain_b, 0)))
    assert "previous_store" in start
    jsonschema.Draft202012Validator(schema).validate(start)


def test_each_store_keeps_its_own_runs_linked_however_the_runs_alternate(
    tmp_path: Path, key: SigningKey, recordings: list[Path]
) -> None:
    spool = tmp_path / "state/spool"
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    chains = [(store, run(spool, store, key, range(i, i + 1), recordings)) for i, store in enumerate((a, b, a, a, b))]
    last: dict[str, str] = {}
    for store, chain in chains:
        start = json.loads(store.get(record_key(chain, 0)))
        assert (start["previous"] or {}).get("chain") == last.get(store.url), (store.url, start)
        last[store.url] = chain
    for store in (a, b):
        result = verify_store(store, trusted_keys=trusted(key))
        assert result.ok, [str(p) for p in result.problems]
