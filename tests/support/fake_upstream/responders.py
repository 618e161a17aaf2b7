"""Replies for Claude Code: structured output that satisfies the request's JSON schema, telling
an agent turn from a side request, and a responder that drives one agent turn through the Bash
tool."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from support.fake_upstream.messages import DEFAULT_TEXT
from support.fake_upstream.received import ReceivedRequest
from support.fake_upstream.replies import Reply, Responder


def example_for_schema(schema: Any, text: str = DEFAULT_TEXT) -> Any:
    """A small value that satisfies a (simple) JSON schema: required properties of objects,
    first enum/const value, `text` for strings, zero, false, empty arrays."""
    if not isinstance(schema, dict):
        return text
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0], text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        required = schema.get("required", list(props))
        return {name: example_for_schema(props.get(name, {}), text) for name in required}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return text


def text_reply_for(request: ReceivedRequest, text: str) -> Reply:
    """A text reply, or, when the request asks for structured output (`output_config.format`
    of type json_schema, as Claude Code's title generation does), JSON text matching it."""
    body = request.json_or_none()
    fmt = (body.get("output_config") or {}).get("format") if isinstance(body, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return Reply.text(json.dumps(example_for_schema(fmt.get("schema"), text)))
    return Reply.text(text)


def is_claude_code_main_request(request: ReceivedRequest) -> bool:
    """True for a Claude Code agent turn (its tool list offers Bash), False for side requests
    (title/topic generation, quota checks, summaries), which carry no tools."""
    body = request.json_or_none()
    if not request.is_messages or not isinstance(body, dict):
        return False
    tools = body.get("tools") or []
    return any(isinstance(t, dict) and t.get("name") == "Bash" for t in tools)


def _tool_result_text(block: Mapping[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def claude_code_tool_responder(
    command: str,
    *,
    description: str = "Run the check",
    side_text: str = "Running a check",
) -> Responder:
    """A responder that drives one real Claude Code agent turn through the Bash tool.

    - Agent turn whose last user message has no tool_result: a `Bash` tool_use with
      `{"command": command, "description": description}` (stop_reason tool_use).
    - Agent turn carrying the tool_result: "The command printed: <output>" (or "The command
      failed: <output>" when is_error is set), stop_reason end_turn.
    - Any other `/v1/messages` call (Claude Code's side requests have no tools): `side_text`,
      as JSON matching the schema when structured output is requested (the session title
      request asks for `{"title": string}`).
    Other paths fall through to the fake's defaults.
    """

    def respond(request: ReceivedRequest) -> Reply | None:
        if not request.is_messages:
            return None
        if not is_claude_code_main_request(request):
            return text_reply_for(request, side_text)
        results = request.tool_results()
        if not results:
            return Reply.tool_use("Bash", {"command": command, "description": description})
        result = results[-1]
        output = _tool_result_text(result).strip()
        verb = "failed" if result.get("is_error") else "printed"
        return Reply.text(f"The command {verb}: {output}")

    return respond
