"""The byte-identical field table, and that it applies only where the API puts such objects."""

from __future__ import annotations

import base64
import json
import random

from gatehouse.masking.byte_identical import BYTE_IDENTICAL_FIELDS
from support.secrets import fake_secret


def test_byte_identical_list_is_data_with_a_reason_per_entry():
    pairs = {(t, f) for t, f, _ in BYTE_IDENTICAL_FIELDS}
    assert all(why.strip() for _, _, why in BYTE_IDENTICAL_FIELDS)
    assert len(pairs) == len(BYTE_IDENTICAL_FIELDS)
    for needed in [
        ("thinking", "thinking"),
        ("thinking", "signature"),
        ("redacted_thinking", "data"),
        ("signature_delta", "signature"),
        ("thinking_delta", "thinking"),
        ("base64", "data"),
        ("web_search_result", "encrypted_content"),
        ("web_search_result_location", "encrypted_index"),
    ]:
        assert needed in pairs
    # text fields are never on it
    assert not {f for _, f in pairs} & {"text", "content", "input", "title", "url", "cited_text", "message"}


def test_byte_identical_types_out_of_place_are_masked(masker):
    pat = fake_secret("github-pat", random.Random(77))
    docs = [
        {"type": "error", "error": {"type": "thinking", "thinking": pat, "signature": pat}},
        {"events": [{"type": "base64", "media_type": "image/png", "data": f"key {pat}"}]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [{"type": "redacted_thinking", "data": pat}],
                        }
                    ],
                }
            ]
        },
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/svg+xml",
                "data": base64.b64encode(f"<svg>{pat}</svg>".encode()).decode(),
            },
        },
    ]
    for doc in docs:
        masker.mask_document(doc)
        text = json.dumps(doc)
        assert pat not in text, doc
        assert pat not in base64.b64decode(doc["source"]["data"]).decode() if "source" in doc else True


def test_byte_identical_types_in_place_stay_as_they_are(masker):
    pat = fake_secret("github-pat", random.Random(78))
    body = {
        "messages": [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": f"saw {pat}", "signature": "sig"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": f"iVBOR{pat}"},
                            }
                        ],
                    },
                ],
            }
        ]
    }
    before = json.dumps(body)
    assert masker.mask_document(body) == [] and json.dumps(body) == before
