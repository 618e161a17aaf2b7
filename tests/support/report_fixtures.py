"""Recording stores for the report's tests, the benchmark and the demo, written by the recorder's code.

Every record goes through `records.build_record` (with the real `masker.Masker` and the built-in
secrets pack) and the recorder's `journal.Journal`, which chains and signs it. `Writer.close`
then uploads through the real `uploader.Uploader` (of a `registry.Recording`) into a
`stores.LocalStore`: exactly what the gateway writes. `bulk_store` (the benchmark's thousands of
sessions) keeps the builder and the journal but writes straight into the store folder without
fsync (`_DirectSpool`): the bytes are the same, only durability is skipped.

    scenario = scenario_store(tmp_path)             # the hand-made sessions the tests read
    bulk_store(path, sessions=1000, exchanges=20)   # generated sessions (benchmark)

The report's tests read what was rendered with `index_data`, `page_of`, `transcript_of` and `text_of`.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gatehouse.exchange import Decision, Identity  # noqa: E402
from gatehouse.masking.config import load_pack, masking_from_rules  # noqa: E402
from gatehouse.masking.masker import Masker  # noqa: E402
from gatehouse.recording.canonical import canonical_json, parse_json  # noqa: E402
from gatehouse.recording.journal import Appended, Journal  # noqa: E402
from gatehouse.recording.layout import blob_key  # noqa: E402
from gatehouse.recording.reader import iter_records  # noqa: E402
from gatehouse.recording.records import (  # noqa: E402
    BuiltRecord,
    ExchangeInput,
    RequestInput,
    ResponseInput,
    build_record,
)
from gatehouse.recording.registry import Recording  # noqa: E402
from gatehouse.recording.sessions import SessionTracker  # noqa: E402
from gatehouse.recording.signing import SigningKey  # noqa: E402
from gatehouse.recording.stores import LocalStore  # noqa: E402
from gatehouse.report.links import session_slug  # noqa: E402

GATEWAY_VERSION = "0.1.0-test"
POLICY_SHA = "ab" * 32
T0 = 1_767_261_600.0  # 2026-01-01T10:00:00Z
CLAUDE_CODE_UA = "claude-cli/2.1.197 (external, cli)"
PY_SDK_UA = "Anthropic/Python 0.69.0"
ISSUER = "https://idp.example.test"

# A secret the masker's built-in pack recognises (the shape of an AWS access key id).
AWS_KEY = "AKIAZ3MXQ7RT5WB2LK4P"
INJECTION = '<script>window.__pwned = 1; alert("xss")</script><img src=x onerror="window.__pwned=2">'

SYSTEM_PROMPT = [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
    {
        "type": "text",
        "text": "You are an interactive CLI tool that helps users with software engineering tasks. "
        "Use the tools available to you to assist the user." * 8,
        "cache_control": {"type": "ephemeral"},
    },
]
TOOLS = [
    {
        "name": "Bash",
        "description": "Executes a given bash command in a persistent shell session.",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "description": {"type": "string"}},
            "required": ["command"],
        },
    },
    {
        "name": "Read",
        "description": "Reads a file from the local filesystem.",
        "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]},
    },
    {
        "name": "Edit",
        "description": "Performs exact string replacements in files.",
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {"type": "string"},
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
            },
        },
    },
    {
        "name": "Write",
        "description": "Writes a file to the local filesystem.",
        "input_schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
        },
    },
    {
        "name": "WebFetch",
        "description": "Fetches content from a URL.",
        "input_schema": {"type": "object", "properties": {"url": {"type": "string"}, "prompt": {"type": "string"}}},
    },
]


def test_masker() -> Masker:
    """The gateway's masker with the built-in pack and a fixed fingerprint key."""
    return Masker(masking_from_rules(load_pack("secrets")), b"report-fixtures-fingerprint-key!")


def identity(
    subject: str, email: str | None, name: str | None = None, groups: Sequence[str] = ("developers",)
) -> dict[str, Any]:
    return Identity(ISSUER, subject, "Example IdP", email, name, tuple(groups), f"jti-{subject}", T0 + 86400).to_dict()


ALICE = identity("u-alice", "alice@example.com", "Alice Liddell")
BOB = identity("u-bob", "bob@example.com", "Bob Builder", ("developers", "sre"))
CAROL = identity("u-carol", "carol@example.com", "Carol Danvers", ("sre",))
CI_BOT = identity("svc-ci-deploy", None, "CI deploy bot", ("ci",))


# -- writing ------------------------------------------------------------------------------------------


class _DirectSpool:
    """The `spool.Spool` methods the Journal uses, writing into a store folder directly (no fsync).

    For generated stores only: the Journal chains and signs as in the gateway, the bytes
    written are the same, but nothing is durable until the OS flushes it.
    """

    epoch = 0  # writes are never lost (see `Spool.epoch`)

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs: set[str] = set()

    def open(self) -> None:
        pass

    def _create(self, path: Path, data: bytes) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def needs_blob(self, hx: str) -> bool:
        return hx not in self._blobs

    def write(self, frames: Sequence[tuple[str, str, bytes]], *, epoch: int | None = None) -> None:
        for kind, key, data in frames:
            if kind == "blob":
                if key not in self._blobs:
                    self._blobs.add(key)
                    self._create(self.root / blob_key(key), data)
            elif kind != "head":  # the chain's head is for the next run's spool: there is none
                self._create(self.root / key, data)

    def sync(self, token: None) -> None:
        pass

    def read_head(self) -> dict[str, Any] | None:
        return None


@dataclass
class Clock:
    """The journal's clock: record times follow the exchanges, not the wall clock."""

    now: float = T0

    def __call__(self) -> float:
        return self.now


class Writer:
    """Builds records from exchange inputs and appends them through the recorder's Journal."""

    def __init__(
        self,
        store_dir: Path,
        *,
        key: SigningKey | None = None,
        direct: bool = False,
        spool_dir: Path | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.store = LocalStore(self.store_dir)
        self.key = key or SigningKey.generate()
        self.masker = masker if masker is not None else test_masker()
        self.tracker = SessionTracker()
        self.clock = Clock()
        self.direct = direct
        self.recording: Recording | None = None
        if direct:
            self.journal = Journal(
                _DirectSpool(self.store_dir),
                self.key,  # type: ignore[arg-type]
                gateway_version=GATEWAY_VERSION,
                policy_sha256=POLICY_SHA,
                retention_days=None,
                node="fixture-node",
                clock=self.clock,
            )
        else:
            self.spool_dir = spool_dir or self.store_dir.parent / f".spool-{self.store_dir.name}"
            self.recording = Recording.open(
                self.spool_dir,
                store=self.store,
                key=self.key,
                retention_days=None,
                gateway_version=GATEWAY_VERSION,
                policy_sha256=POLICY_SHA,
                clock=self.clock,
            )
            self.recording.spool.open()
            self.journal = self.recording.journal
        self.appended: list[Appended] = []

    def append(self, inp: ExchangeInput) -> Appended:
        built: BuiltRecord = build_record(
            inp, masker=self.masker, gateway_version=GATEWAY_VERSION, policy_sha256=POLICY_SHA, tracker=self.tracker
        )
        self.clock.now = inp.end_at or inp.request_at
        appended = self.journal.append(built)
        self.appended.append(appended)
        return appended

    def close(self) -> None:
        """Checkpoint the chain head and move everything into the store."""
        if self.recording is not None:
            self.recording.journal.checkpoint()
            self.recording.uploader.upload_pending()
            Recording.forget(self.spool_dir)
            self.recording = None
        elif self.direct:
            self.journal.checkpoint()


# -- building exchanges ---------------------------------------------------------------------------------


def claude_code_headers(session_id: str, agent_id: str | None = None) -> list[tuple[str, str]]:
    h = [
        ("content-type", "application/json"),
        ("user-agent", CLAUDE_CODE_UA),
        ("x-app", "cli"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"),
        ("x-claude-code-session-id", session_id),
        ("authorization", "Bearer must-never-be-recorded"),
    ]
    if agent_id:
        h.append(("x-claude-code-agent-id", agent_id))
    return h


def sdk_headers() -> list[tuple[str, str]]:
    return [
        ("content-type", "application/json"),
        ("user-agent", PY_SDK_UA),
        ("anthropic-version", "2023-06-01"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "0.69.0"),
        ("x-api-key", "sk-ant-must-never-be-recorded"),
    ]


def message(
    content: list[dict[str, Any]],
    *,
    model: str = "claude-sonnet-4-5",
    stop_reason: str | None = None,
    usage: dict[str, int] | None = None,
    msg_id: str | None = None,
) -> dict[str, Any]:
    if stop_reason is None:
        stop_reason = "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn"
    return {
        "id": msg_id or f"msg_{hashlib.sha256(json.dumps(content).encode()).hexdigest()[:20]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 1200,
            "output_tokens": 80,
            "cache_read_input_tokens": 900,
            "cache_creation_input_tokens": 0,
        },
    }


def decision(
    stage: str, action: str, reason: str = "", rule: str | None = None, at: float | None = None, **detail: Any
) -> dict[str, Any]:
    d = Decision(stage, action, reason, rule, detail).to_dict()
    if at is not None:
        d["at"] = at
    return d


def gateway_decisions(ident: dict[str, Any] | None, at: float) -> list[dict[str, Any]]:
    out = []
    if ident:
        out.append(decision("identity", "allow", "token verified (Example IdP)", at=at, source="proxy-authorization"))
    out.append(decision("access", "allow", at=at))
    out.append(decision("credentials", "inject", "gateway key from environment variable ANTHROPIC_API_KEY", at=at))
    return out


@dataclass
class Conversation:
    """A client conversation: the history a Claude Code-like client resends every turn."""

    writer: Writer
    session_id: str | None
    ident: dict[str, Any] | None
    headers: Callable[[], list[tuple[str, str]]]
    model: str = "claude-sonnet-4-5"
    system: Any = field(default_factory=lambda: SYSTEM_PROMPT)
    tools: Any = field(default_factory=lambda: TOOLS)
    messages: list[dict[str, Any]] = field(default_factory=list)
    t: float = T0
    n: int = 0
    path: str = "/v1/messages?beta=true"
    stream: bool = False

    def _xid(self) -> str:
        self.n += 1
        base = hashlib.sha256(f"{self.session_id}-{self.n}-{self.t}".encode()).hexdigest()
        return f"gx_{int(self.t * 1000):012x}{base[:16]}"

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": 32000, "messages": self.messages}
        if self.system is not None:
            body["system"] = self.system
        if self.tools is not None:
            body["tools"] = self.tools
        if self.stream:
            body["stream"] = True
        if self.session_id and self.ident:
            body["metadata"] = {
                "user_id": json.dumps({"device_id": "dev-1", "account_uuid": "", "session_id": self.session_id})
            }
        return body

    def turn(
        self,
        new: list[dict[str, Any]],
        reply: dict[str, Any] | None,
        *,
        decisions: Sequence[dict[str, Any]] = (),
        status: int = 200,
        error: dict[str, Any] | None = None,
        kind: str = "exchange",
        gap: float = 20.0,
        duration: float = 4.0,
        request_id: str | None = None,
        stream: bool | None = None,
        split_streamed: bool = False,
        record_reply: dict[str, Any] | None = None,
    ) -> str:
        """Send the history plus `new`; `reply` joins the history (as the client keeps it).

        `record_reply` is what the client received when it differs from `reply` (a tool call
        the gateway replaced); it is recorded, and it is what the client keeps.
        """
        self.t += gap
        self.messages = self.messages + new
        xid = self._xid()
        rid = request_id or f"req_011C{hashlib.sha256(xid.encode()).hexdigest()[:20]}"
        streamed = self.stream if stream is None else stream
        old_stream = self.stream
        self.stream = streamed
        raw = json.dumps(self.body()).encode()
        self.stream = old_stream
        req = RequestInput("POST", "https", "api.anthropic.com", 443, self.path, self.headers(), raw)
        received = record_reply if record_reply is not None else reply
        resp = None
        if kind != "request":
            headers = [("request-id", rid), ("x-gatehouse-exchange-id", xid)]
            if error is not None:
                resp = ResponseInput(
                    status, headers + [("content-type", "application/json")], json.dumps(error).encode()
                )
            elif received is not None and streamed:
                resp = ResponseInput(
                    status, headers + [("content-type", "text/event-stream")], None, streamed=True, assembled=received
                )
            elif received is not None:
                resp = ResponseInput(
                    status, headers + [("content-type", "application/json")], json.dumps(received).encode()
                )
        # Callers stamp decisions with the clock before this turn's gap: move them with it.
        moved = [dict(d, at=d["at"] + gap) if isinstance(d.get("at"), (int, float)) else d for d in decisions]
        all_decisions = gateway_decisions(self.ident, self.t) + moved
        if split_streamed:
            # A streamed exchange: its request is recorded before forwarding, the whole at the end.
            self.writer.append(
                ExchangeInput(
                    "request", xid, req, None, self.ident, gateway_decisions(self.ident, self.t), request_at=self.t
                )
            )
        self.writer.append(
            ExchangeInput(
                kind,
                xid,
                req,
                resp,
                self.ident,
                all_decisions,
                request_at=self.t,
                first_byte_at=self.t + 0.8,
                end_at=self.t + duration,
            )
        )
        if received is not None and error is None:
            self.messages = self.messages + [{"role": "assistant", "content": received["content"]}]
        self.t += duration
        return xid

    def refused(
        self, new: list[dict[str, Any]], deny: dict[str, Any], status: int, error_type: str, message: str
    ) -> str:
        """A turn the gateway refused: the `deny` decision, and the Anthropic error the client got."""
        error = {"type": "error", "error": {"type": error_type, "message": message}}
        return self.turn(new, None, kind="refusal", status=status, error=error, decisions=[deny])


def user_text(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def tool_result(tool_use_id: str, output: str, is_error: bool = False) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": output, "is_error": is_error}],
    }


def tool_use(tid: str, name: str, inp: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": tid, "name": name, "input": inp}


# -- the scenario store ---------------------------------------------------------------------------------


@dataclass
class Scenario:
    store_dir: Path
    key: SigningKey
    sessions: dict[str, str]  # name -> session id
    exchanges: dict[str, str]  # name -> exchange id
    request_ids: dict[str, str]  # name -> Anthropic request-id
    keys: dict[str, str] = field(default_factory=dict)  # name -> record store key


def scenario_store(tmp: Path, *, name: str = "store", direct: bool = False) -> Scenario:
    """Sessions covering what the report must show; see each section below."""
    store_dir = Path(tmp) / name
    w = Writer(store_dir, direct=direct)
    sessions: dict[str, str] = {}
    xids: dict[str, str] = {}
    rids: dict[str, str] = {}

    # 1. Alice in Claude Code: prompt with a secret, thinking, tool calls allowed, blocked, held
    # and approved, held and denied; results come back in the next request.
    sid = "0b7e4c1a-5f7d-4c2e-9a51-alice-main"
    sessions["alice"] = sid
    c = Conversation(w, sid, ALICE, lambda: claude_code_headers(sid))
    rids["alice-1"] = "req_011CAliceFirstTurn0001"
    xids["alice-1"] = c.turn(
        [user_text(f"Deploy the service. My AWS key is {AWS_KEY}; the tests are in tests/.")],
        message(
            [
                {"type": "thinking", "thinking": "The user wants a deploy; run the tests first.", "signature": "sig=="},
                {"type": "text", "text": "I'll run the tests first."},
                tool_use("toolu_01tests", "Bash", {"command": "pytest -q tests/", "description": "Run the tests"}),
            ]
        ),
        decisions=[decision("commands", "allow", "no rule matched", at=c.t, tool_use_id="toolu_01tests", tool="Bash")],
        request_id=rids["alice-1"],
    )
    blocked_text = (
        "Gatehouse blocked this tool call (rule commands.no-rm-rf): "
        "removing files outside the workspace is not allowed."
    )
    xids["alice-2"] = c.turn(
        [tool_result("toolu_01tests", "42 passed in 3.1s")],
        message([{"type": "text", "text": blocked_text}], stop_reason="end_turn"),
        decisions=[
            decision(
                "commands",
                "block",
                "removing files outside the workspace is not allowed",
                "commands.no-rm-rf",
                at=c.t,
                tool_use_id="toolu_02rm",
                tool="Bash",
                input={"command": "rm -rf /var/lib/app/cache", "description": "Clear the cache"},
            )
        ],
        stream=True,
        split_streamed=True,
    )
    xids["alice-3"] = c.turn(
        [user_text("OK, skip that. Apply the terraform plan.")],
        message(
            [
                {"type": "text", "text": "Applying the plan."},
                tool_use("toolu_03tf", "Bash", {"command": "terraform apply -auto-approve plan.out"}),
            ]
        ),
        decisions=[
            decision(
                "commands",
                "approve",
                "terraform apply needs an approver from sre",
                "commands.terraform-apply",
                at=c.t,
                tool_use_id="toolu_03tf",
                tool="Bash",
                approver_groups=["sre"],
            ),
            decision(
                "approvals",
                "hold",
                "waiting for an approver",
                "commands.terraform-apply",
                at=c.t + 1,
                tool_use_id="toolu_03tf",
                approval_id="apr_7f3a",
            ),
            decision(
                "approvals",
                "approved",
                "change ticket CHG-1234",
                "commands.terraform-apply",
                at=c.t + 30,
                tool_use_id="toolu_03tf",
                approval_id="apr_7f3a",
                approver={"subject": "u-bob", "email": "bob@example.com"},
            ),
        ],
        duration=35.0,
    )
    rids["alice-4"] = "req_011CAliceFourthTurn04"
    denied_text = "Gatehouse: the call to Bash was denied by carol@example.com (not during the freeze)."
    xids["alice-4"] = c.turn(
        [tool_result("toolu_03tf", "Apply complete! Resources: 3 added, 0 changed, 0 destroyed.")],
        message([{"type": "text", "text": denied_text}]),
        decisions=[
            decision(
                "commands",
                "approve",
                "kubectl against prod needs an approver",
                "commands.kubectl-prod",
                at=c.t,
                tool_use_id="toolu_04kube",
                tool="Bash",
                input={"command": "kubectl --context=prod rollout restart deploy/api"},
            ),
            decision(
                "approvals",
                "hold",
                "waiting for an approver",
                "commands.kubectl-prod",
                at=c.t + 1,
                tool_use_id="toolu_04kube",
                approval_id="apr_9b1c",
            ),
            decision(
                "approvals",
                "denied",
                "not during the freeze",
                "commands.kubectl-prod",
                at=c.t + 12,
                tool_use_id="toolu_04kube",
                approval_id="apr_9b1c",
                approver={"subject": "u-carol", "email": "carol@example.com"},
            ),
        ],
        request_id=rids["alice-4"],
    )
    # A denied model, inside the session (Claude Code sent its session id).
    c2 = Conversation(
        w, sid, ALICE, lambda: claude_code_headers(sid), model="claude-opus-4-1", messages=list(c.messages), t=c.t
    )
    xids["alice-refused"] = c2.refused(
        [user_text("Use opus for this one.")],
        decision(
            "access",
            "deny",
            "model claude-opus-4-1 is not allowed for your groups",
            "model",
            at=c2.t,
            model="claude-opus-4-1",
        ),
        403,
        "permission_error",
        "Gatehouse: model claude-opus-4-1 is not allowed for your groups",
    )
    c.t = c2.t
    # A subagent of the same session, with its own conversation.
    sub = Conversation(
        w,
        sid,
        ALICE,
        lambda: claude_code_headers(sid, "agent-explore-1"),
        system=SYSTEM_PROMPT[:1],
        tools=TOOLS[1:2],
        t=c.t,
    )
    xids["alice-sub"] = sub.turn(
        [user_text("Find where the deploy script reads its config.")],
        message([{"type": "text", "text": "It reads deploy/config.yaml."}]),
    )
    c.t = sub.t
    xids["alice-5"] = c.turn(
        [user_text("Thanks, that's all.")],
        message([{"type": "text", "text": "Done: tests pass, the plan is applied."}]),
    )

    # 2. Bob through the Python SDK: no session id, so the gateway's idle-gap session.
    b = Conversation(
        w, None, BOB, sdk_headers, system="You are a helpful assistant.", tools=None, path="/v1/messages", t=T0 + 3600
    )
    xids["bob-1"] = b.turn(
        [user_text("Summarise RFC 9110 in one line.")],
        message([{"type": "text", "text": "HTTP semantics, in one document."}]),
    )
    xids["bob-2"] = b.turn(
        [user_text("And RFC 9112?")], message([{"type": "text", "text": "HTTP/1.1 message syntax."}])
    )

    # 3. Injection: recorded content with HTML and JavaScript.
    sid3 = 'inj-</script><script>window.__pwned=4</script>-"><b>bold</b>'
    sessions["injection"] = sid3
    inj = Conversation(w, sid3, CAROL, lambda: claude_code_headers(sid3), t=T0 + 7200)
    xids["injection-1"] = inj.turn(
        [user_text(f"Please render {INJECTION} and </script><script>window.__pwned=3</script>")],
        message(
            [
                {"type": "text", "text": f"Here it is: {INJECTION}"},
                tool_use("toolu_inj", "Bash", {"command": f"echo '{INJECTION}'"}),
            ]
        ),
        decisions=[decision("commands", "allow", "no rule matched", at=inj.t, tool_use_id="toolu_inj", tool="Bash")],
    )
    xids["injection-2"] = inj.turn(
        [tool_result("toolu_inj", INJECTION)], message([{"type": "text", "text": "Printed."}])
    )

    # 4. A refused token: no identity, no session id: an audit event of its own.
    anon = Conversation(w, None, None, sdk_headers, tools=None, system=None, path="/v1/messages", t=T0 + 9000)
    expired = "Gatehouse refused the token (expired): the token expired"
    xids["token-refused"] = anon.refused(
        [user_text("hello")],
        decision(
            "identity", "deny", expired, "identity.expired", at=anon.t, status=401, error_type="authentication_error"
        ),
        401,
        "authentication_error",
        expired,
    )

    w.close()
    sessions["bob"] = _session_of_exchange(store_dir, xids["bob-1"])
    sc = Scenario(store_dir, w.key, sessions, xids, rids)
    for a in w.appended:
        doc = json.loads((store_dir / a.key).read_bytes())
        sc.keys.setdefault(doc.get("exchange_id", a.key), a.key)
    return sc


def _session_of_exchange(store_dir: Path, xid: str) -> str:
    for rec in iter_records(LocalStore(store_dir)):
        if rec.get("exchange_id") == xid:
            return rec["session"]["id"]
    raise KeyError(xid)


# -- reading a rendered report (the report's tests) --------------------------------------------------------


def index_data(out: Path) -> list[dict]:
    """The sessions' rows embedded in index.html."""
    page = (out / "index.html").read_text()
    m = re.search(r'<script type="application/json" id="sessions-data">(.*?)</script>', page, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


def page_of(out: Path, session_id: str) -> str:
    return (out / "sessions" / f"{session_slug(session_id)}.html").read_text()


def transcript_of(out: Path, session_id: str) -> dict:
    return json.loads((out / "sessions" / f"{session_slug(session_id)}.json").read_text())


def text_of(page: str) -> str:
    """The visible text of a page, roughly: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def copy_store(scenario: Scenario, tmp_path: Path) -> Path:
    """A writable copy of the scenario's store (its files are read-only)."""
    dst = tmp_path / "store"
    shutil.copytree(scenario.store_dir, dst)
    for p in dst.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)
    return dst


def rewrite_record(path: Path, change: Callable[[Any], None]) -> None:
    """Change a stored record in place (tampering: its signature no longer verifies)."""
    doc = parse_json(path.read_bytes())
    change(doc)
    path.write_bytes(canonical_json(doc))


# -- generated stores (benchmark) ---------------------------------------------------------------------

WORDS = (
    "build test deploy cache config service handler request response error retry timeout parse "
    "render index session token model stream buffer record verify signature chain blob"
).split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def generated_session(w: Writer, index: int, exchanges: int, t0: float, rng: random.Random) -> None:
    """A Claude Code-like session: a prompt, then tool calls whose results come back each turn."""
    sid = f"{index:08d}-{rng.getrandbits(32):08x}-gen"
    user = [ALICE, BOB, CAROL, CI_BOT][index % 4]
    c = Conversation(w, sid, user, lambda: claude_code_headers(sid), t=t0)
    pending: str | None = None
    for i in range(exchanges):
        new = (
            [user_text(_sentence(rng, 30))]
            if pending is None
            else [
                tool_result(
                    pending,
                    "\n".join(_sentence(rng, 12) for _ in range(8))
                    + (f"\nexport AWS_ACCESS_KEY_ID={AWS_KEY}" if i % 7 == 3 else ""),
                )
            ]
        )
        last = i == exchanges - 1
        if last:
            reply = message([{"type": "text", "text": _sentence(rng, 40)}])
            decisions: list[dict[str, Any]] = []
            pending = None
        else:
            tid = f"toolu_{index:06d}_{i:03d}"
            cmd = f"grep -rn {rng.choice(WORDS)} src/ | head -{rng.randint(5, 50)}"
            reply = message([{"type": "text", "text": _sentence(rng, 15)}, tool_use(tid, "Bash", {"command": cmd})])
            action = "block" if i % 9 == 5 else "allow"
            decisions = [
                decision(
                    "commands",
                    action,
                    "no rule matched" if action == "allow" else "blocked by rule",
                    None if action == "allow" else "commands.example",
                    at=c.t,
                    tool_use_id=tid,
                    tool="Bash",
                )
            ]
            pending = tid if action == "allow" else None
        c.turn(new, reply, decisions=decisions, gap=rng.uniform(2, 30), duration=rng.uniform(1, 8))


def bulk_store(
    store_dir: Path,
    *,
    sessions: int,
    exchanges: int = 20,
    seed: int = 1,
    workers: int = 1,
    key_pem: bytes | None = None,
) -> Path:
    """`sessions` generated sessions of `exchanges` exchanges, in `workers` chains (processes)."""
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    key_pem = key_pem or SigningKey.generate().private_pem()
    if workers <= 1:
        _bulk_part(store_dir, range(sessions), exchanges, seed, key_pem)
        return store_dir
    import multiprocessing

    parts = [range(i, sessions, workers) for i in range(workers)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        pool.starmap(_bulk_part, [(store_dir, p, exchanges, seed, key_pem) for p in parts])
    return store_dir


def _bulk_part(store_dir: Path, indices: Iterable[int], exchanges: int, seed: int, key_pem: bytes) -> None:
    w = Writer(store_dir, key=SigningKey.from_bytes(key_pem, "fixture key"), direct=True)
    for i in indices:
        rng = random.Random(seed * 1_000_003 + i)
        generated_session(w, i, exchanges, T0 + i * 600.0, rng)
    w.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a recording store for the report (tests, benchmark, demo).")
    ap.add_argument("out", type=Path)
    ap.add_argument("--sessions", type=int, default=0, help="generated sessions (0: the test scenario)")
    ap.add_argument("--exchanges", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    t = time.monotonic()
    if args.sessions:
        bulk_store(args.out, sessions=args.sessions, exchanges=args.exchanges, workers=args.workers)
    else:
        scenario_store(args.out.parent, name=args.out.name)
    print(f"wrote {args.out} in {time.monotonic() - t:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
