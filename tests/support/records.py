"""Helpers for recording tests: a stand-in masker, a Claude Code-shaped request and response,
chained runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from gatehouse.recording.canonical import canonical_json, sha256_ref
from gatehouse.recording.records import BuiltRecord, RequestInput
from gatehouse.recording.registry import Recording
from gatehouse.recording.signing import SigningKey
from gatehouse.recording.stores import LocalStore, Store

SECRET = "AKIAZZZZSECRETVALUE1"


class FakeMasker:
    """Masks every occurrence of SECRET in every string, thinking included, like Masker.mask_for_record."""

    enabled = True

    def mask_for_record(self, obj: Any) -> tuple[Any, list[dict[str, str]]]:
        findings: list[dict[str, str]] = []

        def walk(o: Any, where: str) -> Any:
            if isinstance(o, str):
                if SECRET in o:
                    findings.append({"rule": "aws-access-key-id", "where": where, "fingerprint": "abc123"})
                    return o.replace(SECRET, "[MASKED:aws-access-key-id:abc123]")
                return o
            if isinstance(o, dict):
                return {k: walk(v, f"{where}.{k}" if where else k) for k, v in o.items()}
            if isinstance(o, list):
                return [walk(v, f"{where}[{i}]") for i, v in enumerate(o)]
            return o

        return walk(copy.deepcopy(obj), ""), findings

    def mask_text(self, text: str, where: str = "") -> tuple[str, list[dict[str, str]]]:
        masked, findings = self.mask_for_record(text)
        return masked, [dict(f, where=where) for f in findings]


def assistant_message(text: str, **extra: Any) -> dict[str, Any]:
    """A Messages API response with one text block, as the API returns it (`extra` overrides)."""
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 20},
        **extra,
    }


def messages_request(
    messages: list[dict[str, Any]],
    *,
    stream: bool = False,
    system: str = "You are Claude Code." * 50,
    extra_headers: list[tuple[str, str]] | None = None,
    session_header: bool = True,
) -> RequestInput:
    """A Messages API request as Claude Code sends it, credentials included (never to be recorded)."""
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": stream,
        "system": system,
        "tools": [{"name": "Bash", "description": "run a command", "input_schema": {"type": "object"}}],
        "messages": messages,
        "metadata": {"user_id": json.dumps({"device_id": "dev1", "account_uuid": "acc1", "session_id": "meta-sess"})},
    }
    headers = [
        ("content-type", "application/json"),
        ("user-agent", "claude-cli/2.1.0 (external, cli)"),
        ("x-app", "cli"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "claude-code-20250219, interleaved-thinking-2025-05-14"),
        ("x-api-key", "sk-ant-api03-SHOULD-NEVER-BE-RECORDED"),
        ("authorization", "Bearer eyJ.should.never"),
        ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ("cookie", "session=secret"),
        ("x-stainless-lang", "js"),
    ]
    if session_header:
        headers.append(("x-claude-code-session-id", "hdr-sess"))
    headers += extra_headers or []
    return RequestInput(
        "POST", "https", "api.anthropic.com", 443, "/v1/messages?beta=true", headers, json.dumps(body).encode()
    )


def numbered_record(i: int) -> BuiltRecord:
    """Record `i` of a run: a blob every record shares (a system prompt) and one of its own."""
    blobs: dict[str, bytes] = {}
    refs = []
    for value in ("system prompt " * 50, {"role": "user", "content": f"message {i}"}):
        data = canonical_json(value)
        blobs[sha256_ref(data)[7:]] = data
        refs.append(sha256_ref(data))
    body = {
        "kind": "exchange",
        "exchange_id": f"gx_{i:04d}",
        "request": {"system": refs[0], "messages": refs[1:]},
        "response": None,
    }
    return BuiltRecord(body, blobs)


def write_run(
    store: Path | Store,
    spool_dir: Path,
    key: SigningKey,
    ids: range,
    clock: list[float],
    retention_days: int | None = None,
) -> str:
    """One gateway run's chain (`numbered_record` for each of `ids`) into `store` (a folder: a
    local store there); its id. `clock[0]` is the time the run's records carry."""
    rec = Recording.open(
        spool_dir,
        store=LocalStore(store) if isinstance(store, Path) else store,
        key=key,
        retention_days=retention_days,
        gateway_version="t",
        policy_sha256="p",
        clock=lambda: clock[0],
    )
    rec.start()
    for i in ids:
        rec.append(numbered_record(i))
    assert rec.shutdown()
    chain = rec.journal.chain_id
    Recording.forget(spool_dir)
    assert chain is not None
    return chain


def open_recording(path: Path, store: Any, key: SigningKey, opened: list[Path], **kw: Any) -> Recording:
    """`Recording.open` with test defaults; `opened` collects the spool dirs to forget at the end."""
    kw.setdefault("retention_days", None)
    rec = Recording.open(path, store=store, key=key, gateway_version="t", policy_sha256="p", **kw)
    opened.append(path)
    return rec
