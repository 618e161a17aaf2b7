"""Session reconstruction: one session's view model (`views.SessionView`) from its stored records.

"Only what is new in each turn": Claude Code resends the whole conversation every turn. Each
request's message list is matched against every conversation prefix already seen in the
session (prefix hashes over a normalised form of each message: `cache_control` markers move
from turn to turn and are ignored); only the messages after the longest known prefix are
new. The same matching reconstructs the session's conversations for the transcript.

Blobs are loaded through a cache that lives as long as the session's builder: memory is bounded
by one session, not the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gatehouse.recording import reader
from gatehouse.recording.canonical import canonical_json, json_safe, parse_json
from gatehouse.recording.layout import blob_key
from gatehouse.recording.stores import Store
from gatehouse.recording.verify import Problem
from gatehouse.report.callers import describe_client, describe_identity
from gatehouse.report.decisions import DecisionView, decision_view
from gatehouse.report.filters import count_masks, pretty_json
from gatehouse.report.integrity import Integrity
from gatehouse.report.links import session_slug
from gatehouse.report.recorded import as_object, parse_time, strings_in
from gatehouse.report.views import Block, ContextPart, ExchangeView, MessageView, SessionView, ToolCall

MESSAGES_PATH = "/v1/messages"


def _normalise_message(msg: Any) -> Any:
    """A message as compared across turns: `cache_control` dropped, string content as a block."""

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "cache_control"}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    if isinstance(msg, dict) and isinstance(msg.get("content"), str):
        msg = dict(msg, content=[{"type": "text", "text": msg["content"]}])
    return strip(msg)


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b if isinstance(b, dict) else {"type": "text", "text": str(b)} for b in content]
    return []


def tool_result_text(content: Any) -> tuple[str, list[str]]:
    """The text of a tool_result's content and notes for what is not text (images...)."""
    if isinstance(content, str):
        return content, []
    texts, other = [], []
    for b in _content_blocks(content):
        if b.get("type") == "text":
            texts.append(str(b.get("text", "")))
        else:
            other.append(_media_note(b))
    return "\n".join(texts), other


def _media_note(block: Mapping[str, Any]) -> str:
    src = as_object(block.get("source"))
    size = len(src.get("data", "")) * 3 // 4 if isinstance(src.get("data"), str) else None
    parts = [str(block.get("type", "block")), str(src.get("media_type") or src.get("type") or "")]
    if size:
        parts.append(f"{size / 1024:.0f} KB")
    if isinstance(src.get("url"), str):
        parts.append(src["url"])
    return " · ".join(p for p in parts if p)


class BlobCache:
    """Blobs of one session (dropped with it). Content-addressed, so caching is always valid."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._d: dict[str, Any] = {}
        self.missing: set[str] = set()

    def get(self, ref: str | None) -> Any:
        if not isinstance(ref, str):
            return None
        if ref in self._d:
            return self._d[ref]
        try:
            value = reader.load_blob(self.store, ref)
        except Exception:  # a missing or damaged blob: verify names it; show a gap
            self.missing.add(ref)
            value = None
        self._d[ref] = value
        return value


class SessionBuilder:
    """Builds one session's view model from its records (ordered by request time)."""

    def __init__(
        self, session_id: str, store: Store, integrity: Integrity, extra_problems: Sequence[Problem] = ()
    ) -> None:
        self.session_id = session_id
        self.store = store
        self.integrity = integrity
        # Problems about records that are gone (deleted next to ours, a truncated tail).
        self.extra_problems = list(extra_problems)
        self.blobs = BlobCache(store)
        self._norm_keys: dict[str, str] = {}
        # prefix hash -> (conversation index, length of that conversation's prefix)
        self._prefixes: dict[str, tuple[int, int]] = {}
        self.conversations: list[dict[str, Any]] = []
        self.context: list[ContextPart] = []
        self._context_by_ref: dict[str, ContextPart] = {}
        self.tool_calls: dict[str, ToolCall] = {}
        self.mask_count = 0
        self.secrets: set[tuple[str, str]] = set()

    # messages are compared by a hash of their normalised form
    def _norm_key(self, ref: str) -> str:
        k = self._norm_keys.get(ref)
        if k is None:
            msg = self.blobs.get(ref)
            k = (
                hashlib.sha256(canonical_json(json_safe(_normalise_message(msg)))).hexdigest()
                if msg is not None
                else ref
            )
            self._norm_keys[ref] = k
        return k

    @staticmethod
    def _extend(h: str, key: str) -> str:
        return hashlib.sha256(f"{h}\n{key}".encode()).hexdigest()

    def _context(self, kind: str, ref: Any, at_index: int) -> ContextPart | None:
        """The system prompt or tool list of an exchange, numbered in the order first seen."""
        if not isinstance(ref, str):
            return None
        part = self._context_by_ref.get(ref)
        if part is not None:
            return part
        value = self.blobs.get(ref)
        number = sum(1 for p in self.context if p.kind == kind) + 1
        part = ContextPart(kind, ref, number, first_exchange=at_index)
        if kind == "system":
            if isinstance(value, str):
                part.text = value
            else:
                part.text = "\n\n".join(
                    str(b.get("text", "")) if isinstance(b, dict) else str(b)
                    for b in (value if isinstance(value, list) else [])
                )
            self._count(part.text)
        else:
            for t in value if isinstance(value, list) else []:
                if isinstance(t, dict):
                    part.tools.append(
                        {
                            "name": str(t.get("name") or t.get("type") or "?"),
                            "description": str(t.get("description") or ""),
                            "schema": pretty_json(
                                t.get("input_schema", {k: v for k, v in t.items() if k not in ("name", "description")})
                            ),
                        }
                    )
        self.context.append(part)
        self._context_by_ref[ref] = part
        return part

    def _count(self, text: Any) -> None:
        self.mask_count += count_masks(text, self.secrets)

    def _blocks(self, content: Any, exchange_index: int, *, response: bool) -> list[Block]:
        out: list[Block] = []
        for b in _content_blocks(content):
            t = str(b.get("type") or "")
            if t == "text":
                text = str(b.get("text", ""))
                if not text.strip() and response:
                    continue
                self._count(text)
                out.append(Block("text", text))
            elif t == "thinking":
                text = str(b.get("thinking", ""))
                self._count(text)
                out.append(Block("thinking", text))
            elif t == "redacted_thinking":
                out.append(Block("redacted_thinking"))
            elif t in ("tool_use", "server_tool_use", "mcp_tool_use"):
                tid = str(b.get("id") or f"anon-{exchange_index}-{len(out)}")
                for s in strings_in(b.get("input")):
                    self._count(s)
                call = self.tool_calls.get(tid)
                if call is None or not response:
                    call = ToolCall(tid, str(b.get("name") or t), b.get("input"), exchange_index)
                    if response:
                        self.tool_calls[tid] = call
                out.append(Block("tool_use", tool=call, tool_use_id=tid))
            elif t in ("tool_result", "web_search_tool_result", "mcp_tool_result") or t.endswith("_tool_result"):
                text, notes = tool_result_text(b.get("content"))
                self._count(text)
                out.append(
                    Block(
                        "tool_result",
                        text,
                        tool_use_id=b.get("tool_use_id"),
                        is_error=bool(b.get("is_error")),
                        notes=notes,
                    )
                )
            elif t in ("image", "document"):
                if t == "document" and isinstance(b.get("source"), dict) and b["source"].get("type") == "text":
                    text = str(b["source"].get("data", ""))
                    self._count(text)
                    out.append(Block("text", text, notes=[f"document {b.get('title') or ''}".strip()]))
                else:
                    out.append(Block("media", notes=[_media_note(b)]))
            else:
                for s in strings_in(b):
                    self._count(s)
                out.append(Block("other", pretty_json(b), notes=[str(t)]))
        return out

    def _record_problems(self, rec_keys: Iterable[str], exchange_id: str | None) -> list[Problem]:
        seen: set[Problem] = set()
        out: list[Problem] = []
        for p in [x for k in rec_keys for x in self.integrity.by_key.get(k, [])] + (
            self.integrity.by_exchange.get(exchange_id, []) if exchange_id else []
        ):
            if p not in seen:
                seen.add(p)
                out.append(p)
        return out

    def build(self, rows: Sequence[tuple[str, bytes]]) -> SessionView:
        """`rows`: (store key, record bytes) ordered by request time."""
        # One exchange may have two records: "request" (spooled before a stream) and "exchange".
        order: list[str] = []
        by_xid: dict[str, dict[str, Any]] = {}
        for key, data in rows:
            rec = parse_json(data)
            xid = rec.get("exchange_id") if isinstance(rec.get("exchange_id"), str) else key
            slot = by_xid.get(xid)
            if slot is None:
                slot = by_xid[xid] = {"rec": rec, "keys": [key]}
                order.append(xid)
            else:
                slot["keys"].append(key)
                if rec.get("kind") != "request":
                    slot["rec"] = rec
        exchanges = [self._exchange(i, by_xid[x]["rec"], by_xid[x]["keys"]) for i, x in enumerate(order)]
        self._attach_results(exchanges)
        return self._session(exchanges)

    def _exchange(self, index: int, rec: dict[str, Any], keys: list[str]) -> ExchangeView:
        req = as_object(rec.get("request"))
        resp = as_object(rec.get("response"))
        timing = as_object(rec.get("timing"))
        session = as_object(rec.get("session"))
        path = str(req.get("path") or "")
        is_messages = path.split("?", 1)[0] == MESSAGES_PATH and req.get("messages") is not None
        xid = str(rec.get("exchange_id") or keys[0])

        system = tools = None
        new_messages: list[MessageView] = []
        prefix_len = total = 0
        conv_index: int | None = None
        params: dict[str, Any] = {}
        refs: list[str] = [r for r in (req.get("messages") or []) if isinstance(r, str)]
        hashes: list[str] = []
        if is_messages:
            system = self._context("system", req.get("system"), index)
            tools = self._context("tools", req.get("tools"), index)
            body = req.get("body") if isinstance(req.get("body"), dict) else self.blobs.get(req.get("body_blob"))
            if isinstance(body, dict):
                params = {k: v for k, v in body.items() if k not in ("model", "stream", "messages", "system", "tools")}
            h = ""
            for r in refs:
                h = self._extend(h, self._norm_key(r))
                hashes.append(h)
            prefix_len = 0
            for k in range(len(hashes), 0, -1):
                if hashes[k - 1] in self._prefixes:
                    prefix_len = k
                    break
            total = len(refs)
            # A refused request never reached the model: a branch of its own in the transcript.
            conv_index = self._place(
                refs,
                hashes,
                prefix_len,
                system,
                tools,
                xid,
                fork=rec.get("kind") == "refusal",
                agent=session.get("agent_id") if isinstance(session.get("agent_id"), str) else None,
            )
            for r in refs[prefix_len:]:
                msg = self.blobs.get(r)
                if msg is None:
                    new_messages.append(
                        MessageView("missing", [Block("other", notes=[f"message blob {r} is missing"])])
                    )
                    continue
                role = str(msg.get("role", "user")) if isinstance(msg, dict) else "user"
                content = msg.get("content") if isinstance(msg, dict) else msg
                new_messages.append(MessageView(role, self._blocks(content, index, response=False)))

        message = reader.response_message(rec, self.store) if resp.get("message") is not None else None
        response_index: int | None = None
        response_view = None
        response_body = None
        stop_reason = None
        usage: dict[str, int] = {}
        response_model = None
        if message is not None:
            response_view = MessageView(
                str(message.get("role", "assistant")), self._blocks(message.get("content"), index, response=True)
            )
            stop_reason = message.get("stop_reason")
            response_model = message.get("model")
            usage = {
                k: v for k, v in (message.get("usage") or {}).items() if isinstance(v, int) and not isinstance(v, bool)
            }
            if is_messages and conv_index is not None and isinstance(resp.get("content"), str):
                response_index = self._register_response(conv_index, hashes, resp["content"])
        elif resp:
            try:
                response_body = reader.response_body(rec, self.store)
            except Exception:  # a missing or damaged blob: verify names it
                response_body = None
            for s in strings_in(response_body):
                self._count(s)

        decisions: list[DecisionView] = []
        calls = [b.tool for b in (response_view.blocks if response_view else []) if b.tool is not None]
        call_ids = {c.id for c in calls}
        removed: dict[str, ToolCall] = {}
        for d in [x for x in rec.get("decisions") or [] if isinstance(x, dict)]:
            dv = decision_view(d)
            for s in strings_in(d):
                self._count(s)
            if dv.tool_use_id and dv.tool_use_id in call_ids:
                self.tool_calls[dv.tool_use_id].decisions.append(dv)
            elif dv.tool_use_id:
                # The call was replaced on the wire (blocked/denied): show it from the decision.
                call = removed.get(dv.tool_use_id) or self.tool_calls.get(dv.tool_use_id)
                if call is None:
                    detail = as_object(d.get("detail"))
                    tu = as_object(detail.get("tool_use"))
                    call = ToolCall(
                        dv.tool_use_id,
                        str(detail.get("tool") or detail.get("tool_name") or tu.get("name") or "tool"),
                        detail.get("input", tu.get("input")),
                        index,
                        removed=True,
                    )
                    self.tool_calls[dv.tool_use_id] = call
                    removed[dv.tool_use_id] = call
                call.decisions.append(dv)
            else:
                decisions.append(dv)
        return ExchangeView(
            index=index,
            exchange_id=xid,
            kind=str(rec.get("kind")),
            record_keys=keys,
            at=parse_time(timing.get("request")),
            method=str(req.get("method") or ""),
            path=path,
            is_messages=is_messages,
            model=req.get("model"),
            response_model=response_model,
            status=resp.get("status") if isinstance(resp.get("status"), int) else None,
            streamed=bool(resp.get("streamed")),
            ttfb_ms=timing.get("ttfb_ms"),
            duration_ms=timing.get("duration_ms"),
            request_id=resp.get("request_id") if isinstance(resp.get("request_id"), str) else None,
            usage=usage,
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            identity=describe_identity(rec.get("identity")),
            client=describe_client(rec.get("client"), as_object(req.get("headers"))),
            agent_id=session.get("agent_id") if isinstance(session.get("agent_id"), str) else None,
            conversation=conv_index,
            new_messages=new_messages,
            prefix_len=prefix_len,
            total_messages=total,
            response=response_view,
            response_message=message,
            response_index=response_index,
            response_body=response_body,
            decisions=decisions,
            tool_calls=calls,
            removed_calls=list(removed.values()),
            system=system,
            tools=tools,
            params=params,
            errors=[str(e) for e in rec.get("errors") or []],
            problems=self._record_problems(keys, xid),
        )

    def _place(
        self,
        refs: list[str],
        hashes: list[str],
        prefix_len: int,
        system: ContextPart | None,
        tools: ContextPart | None,
        xid: str,
        *,
        fork: bool = False,
        agent: str | None = None,
    ) -> int:
        """Which conversation this request continues (or starts); registers its prefixes."""
        if prefix_len:
            conv_index, length = self._prefixes[hashes[prefix_len - 1]]
            conv = self.conversations[conv_index]
            if fork or len(conv["refs"]) != length:
                # A branch (history rewritten, or a side request sharing the start): a new
                # conversation that repeats the shared prefix in the transcript.
                conv = self._new_conversation(conv["refs"][:length], system, tools, conv.get("agent"))
                conv_index = len(self.conversations) - 1
        else:
            conv = self._new_conversation([], system, tools, agent)
            conv_index = len(self.conversations) - 1
        conv["refs"].extend(refs[prefix_len:])
        conv["exchanges"].append(xid)
        for i, h in enumerate(hashes):
            self._prefixes.setdefault(h, (conv_index, i + 1))
        return conv_index

    def _new_conversation(
        self, refs: list[str], system: ContextPart | None, tools: ContextPart | None, agent: str | None
    ) -> dict[str, Any]:
        conv = {
            "refs": list(refs),
            "system": system.ref if system else None,
            "tools": tools.ref if tools else None,
            "exchanges": [],
            "agent": agent,
        }
        self.conversations.append(conv)
        return conv

    def _register_response(self, conv_index: int, hashes: list[str], content_ref: str) -> int | None:
        """Append the assistant's answer to its conversation (the client sends it back next
        turn, where it must count as already shown); its index there, or None."""
        conv = self.conversations[conv_index]
        h = self._extend(hashes[-1] if hashes else "", self._norm_key(content_ref))
        if h in self._prefixes or len(conv["refs"]) != len(hashes):
            return None
        conv["refs"].append(content_ref)
        self._prefixes[h] = (conv_index, len(hashes) + 1)
        return len(hashes)

    def _attach_results(self, exchanges: list[ExchangeView]) -> None:
        """Show each tool result with its call; in the later request, only a pointer to it."""
        for x in exchanges:
            for m in x.new_messages:
                for b in m.blocks:
                    if b.type != "tool_result" or not b.tool_use_id:
                        continue
                    call = self.tool_calls.get(b.tool_use_id)
                    if call is not None and call.result is None and call.exchange_index < x.index:
                        call.result = {
                            "text": b.text,
                            "notes": b.notes,
                            "is_error": b.is_error,
                            "exchange_index": x.index,
                            "exchange_id": x.exchange_id,
                        }
                        b.attached = True
                        b.tool = call

    def _session(self, exchanges: list[ExchangeView]) -> SessionView:
        users: dict[tuple[Any, Any], dict[str, Any]] = {}
        clients: dict[str, dict[str, Any]] = {}
        models: list[str] = []
        usage: dict[str, int] = {}
        agents: list[str] = []
        times: list[float] = []
        for x in exchanges:
            if x.identity.get("subject") or x.identity.get("email"):
                users.setdefault((x.identity.get("issuer"), x.identity.get("subject")), x.identity)
            clients.setdefault(x.client["label"], x.client)
            for m in (x.model, x.response_model):
                if isinstance(m, str) and m and m not in models:
                    models.append(m)
            for k, v in x.usage.items():
                usage[k] = usage.get(k, 0) + v
            if x.agent_id and x.agent_id not in agents:
                agents.append(x.agent_id)
            if x.at is not None:
                times.append(x.at)
                if x.duration_ms is not None:
                    times.append(x.at + x.duration_ms / 1000)
        calls = list(self.tool_calls.values())
        problems = [p for x in exchanges for p in x.problems]
        seen = set(problems)
        for p in self.extra_problems:
            if p not in seen:
                seen.add(p)
                problems.append(p)
        for ref in sorted(self.blobs.missing):
            if not any(q.check == "blob" and ref in q.message for q in problems):
                problems.append(Problem(blob_key(ref), "blob", f"blob {ref} could not be read"))
        return SessionView(
            id=self.session_id,
            slug=session_slug(self.session_id),
            exchanges=exchanges,
            context=self.context,
            conversations=self.conversations,
            users=list(users.values()),
            clients=list(clients.values()),
            agents=agents,
            start=min(times) if times else None,
            end=max(times) if times else None,
            models=models,
            usage=usage,
            masks=self.mask_count,
            distinct_secrets=len(self.secrets),
            blocked=sum(1 for c in calls if c.outcome in ("blocked", "denied")),
            approved=sum(1 for c in calls if c.approved),
            held=sum(1 for c in calls if c.outcome == "held"),
            refused=sum(1 for x in exchanges if x.kind == "refusal"),
            problems=problems,
            integrity_checked=self.integrity.checked,
            trust=self.integrity.trust,
        )
