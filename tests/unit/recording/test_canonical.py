"""Canonical JSON: the one encoding that is signed, hashed and stored."""

from __future__ import annotations

import pytest

from gatehouse.recording.canonical import canonical_json, parse_json


def test_canonical_json_is_sorted_compact_ascii_and_round_trips() -> None:
    doc = {"b": [1, 2.5, -0.0, "é", "\ud800"], "a": {"z": None, "y": True}}
    data = canonical_json(doc)
    assert data == b'{"a":{"y":true,"z":null},"b":[1,2.5,-0.0,"\\u00e9","\\ud800"]}'
    assert canonical_json(parse_json(data)) == data
    other = b'{"b":1, "a":2}'
    assert canonical_json(parse_json(other)) != other


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(ValueError):
        parse_json(b'{"x": NaN}')
