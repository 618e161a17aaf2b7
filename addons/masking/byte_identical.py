"""The fields of a JSON body that masking leaves byte-identical, and where they apply.

The API signs or encrypts some fields (thinking text and signatures, encrypted tool results)
and takes binary media as base64: changed by a single byte, the client's next request fails.
This module is the table of those fields (`BYTE_IDENTICAL_FIELDS`) and the rules of where an
entry applies (a "slot": where the API puts such a block); the walk in `gatehouse.masking.masker`
scans and masks everything else.
"""

from __future__ import annotations

from typing import Any

# Content blocks whose `input` is model-written JSON (tool calls). Inside an `input` the
# byte-identical list does not apply: it is free JSON, every string of it is scanned.
TOOL_BLOCK_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})

# The ONLY fields of a JSON body that masking leaves byte-identical: (the `type` of the object
# that holds the field, the field, why). Every other string value and every object key, at any
# depth, in any block type known or unknown, is scanned and masked. An entry applies to a
# string value only (a field of another JSON type is walked like any other), and never inside
# the `input` of a tool block (free JSON written by the model or a client). Sourced from the
# Anthropic SDK's types (anthropic 2.15): every field documented as "round-trip verbatim".
BYTE_IDENTICAL_FIELDS: tuple[tuple[str, str, str], ...] = (
    (
        "thinking",
        "thinking",
        "signed: the API checks the thinking text against its signature when the client sends it back",
    ),
    ("thinking", "signature", "the signature of a thinking block"),
    ("thinking_delta", "thinking", "a streamed piece of signed thinking text (SSE)"),
    ("signature_delta", "signature", "a streamed thinking signature (SSE)"),
    ("redacted_thinking", "data", "thinking encrypted by the API, sent back as it came"),
    ("compaction", "signature", "the signature of a context-compaction block"),
    ("compaction", "encrypted_content", "opaque compaction state, to be round-tripped verbatim"),
    ("compaction_delta", "encrypted_content", "streamed opaque compaction state (SSE)"),
    ("web_search_result", "encrypted_content", "server-tool result encrypted by the API (web search)"),
    ("web_search_result_location", "encrypted_index", "encrypted pointer of a web-search citation"),
    ("encrypted_code_execution_result", "encrypted_stdout", "server-tool output encrypted by the API (code execution)"),
    ("advisor_redacted_result", "encrypted_content", "server-tool output encrypted by the API (advisor)"),
    (
        "base64",
        "data",
        "binary media: the base64 `source.data` of an image/* or application/pdf block. Any other media "
        "type (text/plain documents...) is decoded, scanned, and re-encoded masked when a secret is found",
    ),
)
# The table by type: the byte-identical fields of an object of that type (in a slot).
EXEMPT_BY_TYPE: dict[str, frozenset[str]] = {
    t: frozenset(f for tt, f, _ in BYTE_IDENTICAL_FIELDS if tt == t) for t, _, _ in BYTE_IDENTICAL_FIELDS
}


def _is_server_result(t: str | None) -> bool:
    """A server tool's result block (web search, code execution...), whose content the API
    encrypts; not a client tool's result, which holds whatever the client sent."""
    return t is not None and t.endswith("_tool_result") and t not in ("tool_result", "mcp_tool_result")


def child_slot(parent_type: str | None, key: str, is_list: bool, parent_slot: bool) -> bool:
    """Whether the value under `key` of an object of `parent_type` is (for a list: holds) a
    place where the API puts blocks with byte-identical fields (see `Masker._walk`)."""
    if is_list:
        if key == "content":  # a message's or response's content, a server tool's results
            return parent_type is None or parent_type == "message" or _is_server_result(parent_type)
        return key == "citations" and parent_slot
    if key in ("content_block", "delta"):
        return parent_type in ("content_block_start", "content_block_delta")
    if key == "content":
        return _is_server_result(parent_type)
    if key == "source":
        return parent_type in ("image", "document")
    return key == "citation" and parent_slot  # a streamed citations_delta


# Media types of a base64 source that stay byte-identical (the binary media the API takes).
# Exact types: `image/svg+xml` is text, and so is anything the API does not take as binary.
BINARY_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf"})


def is_binary_media(source: dict[str, Any]) -> bool:
    """Whether a base64 source holds binary media (left byte-identical), not text."""
    mt = source.get("media_type")
    return isinstance(mt, str) and mt.strip().lower() in BINARY_MEDIA_TYPES
