"""Reading records back from a store: in chain order, with their blobs put back.

What the report and the tests read (the records as stored, not verified: `verify.verify_store`
checks them), and which blobs a record references (the uploader and prune need that too).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from gatehouse.recording.canonical import parse_json
from gatehouse.recording.layout import blob_key, parse_key
from gatehouse.recording.stores import Store


def blob_refs(record: Mapping[str, Any]) -> list[str]:
    """Every blob a record references, in record order (system, tools, messages..., response)."""
    refs: list[str] = []
    req = record.get("request") or {}
    for name in ("system", "tools"):
        if isinstance(req.get(name), str):
            refs.append(req[name])
    refs.extend(r for r in (req.get("messages") or []) if isinstance(r, str))
    if isinstance(req.get("body_blob"), str):
        refs.append(req["body_blob"])
    resp = record.get("response") or {}
    for name in ("content", "body_blob"):
        if isinstance(resp.get(name), str):
            refs.append(resp[name])
    return refs


def iter_records(
    store: Store, *, chains: Sequence[str] | None = None, kinds: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Records in chain order (chains sorted by start time, then seq). Not verified: run
    `verify.verify_store` for that. Each record gets a ``_key`` entry naming its store key."""
    by_chain: dict[str, list[tuple[int, str]]] = {}
    for k in store.list("records/"):
        p = parse_key(k)
        if p and p.kind == "record" and (chains is None or p.chain in chains):
            by_chain.setdefault(p.chain, []).append((p.seq, k))
    for chain in sorted(by_chain):
        for _, k in sorted(by_chain[chain]):
            rec = parse_json(store.get(k))
            if kinds is None or rec.get("kind") in kinds:
                rec["_key"] = k
                yield rec


def load_blob(store: Store, ref: str) -> Any:
    return parse_json(store.get(blob_key(ref)))


def expand_request_body(record: Mapping[str, Any], store: Store) -> Any:
    """The recorded (masked) request body as the client sent it, blobs put back."""
    req = record.get("request") or {}
    if isinstance(req.get("body_blob"), str):
        body = load_blob(store, req["body_blob"])
    else:
        body = req.get("body")
    if isinstance(body, dict):
        body = dict(body)
        if req.get("system"):
            body["system"] = load_blob(store, req["system"])
        if req.get("tools"):
            body["tools"] = load_blob(store, req["tools"])
        if req.get("messages") is not None:
            body["messages"] = [load_blob(store, r) for r in req["messages"]]
    return body


def response_message(record: Mapping[str, Any], store: Store) -> dict[str, Any] | None:
    """The (masked) assistant message the client received, content put back; None if none."""
    resp = record.get("response") or {}
    if resp.get("message") is None:
        return None
    msg = dict(resp["message"])
    if resp.get("content"):
        msg["content"] = load_blob(store, resp["content"])["content"]
    return msg


def response_body(record: Mapping[str, Any], store: Store) -> Any:
    """The response body when it was not a message (an error, a count_tokens result...)."""
    resp = record.get("response") or {}
    if isinstance(resp.get("body_blob"), str):
        return load_blob(store, resp["body_blob"])
    return resp.get("body")
