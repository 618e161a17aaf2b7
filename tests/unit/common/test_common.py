"""The small shared pieces: the bounded LRU and the URL checks."""

from __future__ import annotations

import threading

import pytest

from gatehouse.common.lru import Lru
from gatehouse.common.urls import http_url_problem, is_loopback


def test_lru_evicts_the_least_recently_used():
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert "b" not in lru and lru.get("a") == 1 and lru.get("c") == 3 and len(lru) == 2
    assert lru.pop("a") == 1 and lru.pop("a") is None


def test_lru_with_no_room_keeps_nothing():
    lru: Lru[str, int] = Lru(0)
    lru.put("a", 1)
    assert lru.get("a") is None and len(lru) == 0


def test_lru_with_a_weight_bounds_the_sum_of_weights():
    lru: Lru[str, str] = Lru(10, weight=len)
    lru.put("a", "xxxx")
    lru.put("b", "yyyy")
    lru.put("a", "xxxxx")  # replaced: its old weight no longer counts
    assert len(lru) == 2
    lru.put("c", "zz")  # 5 + 4 + 2 > 10: b, the least recently used, goes
    assert "b" not in lru and lru.get("a") == "xxxxx" and lru.get("c") == "zz"
    lru.put("big", "w" * 11)  # heavier than the whole limit: not kept, nothing evicted for it
    assert "big" not in lru and len(lru) == 2
    assert lru.pop("a") == "xxxxx"
    lru.put("d", "dddddddd")  # 2 + 8 fits once a's weight is gone
    assert lru.get("c") == "zz" and lru.get("d") == "dddddddd"


def test_lru_stays_bounded_under_threads():
    lru: Lru[int, int] = Lru(50)

    def fill(base: int) -> None:
        for i in range(2000):
            lru.put(base + i, i)
            lru.get(base + i // 2)

    threads = [threading.Thread(target=fill, args=(n * 10_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lru) == 50


@pytest.mark.parametrize(
    "host,expected",
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("example.com", False),
        (None, False),
        ("", False),
    ],
)
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    "value,kwargs,problem",
    [
        ("https://api.example.com", {}, None),
        ("http://10.0.0.1:9000", {}, None),
        ("ftp://example.com", {}, "must be an http:// or https:// URL; got 'ftp://example.com'"),
        ("https://", {"what": "base URL"}, "must be an http:// or https:// base URL; got 'https://'"),
        ("https://x.example/p?q=1", {"bare": True}, "must not have a query or fragment"),
        ("https://x.example/p#f", {"bare": True}, "must not have a query or fragment"),
        ("https://x.example/p?q=1", {}, None),
        ("https://idp.example/jwks", {"https_unless_loopback": True}, None),
        ("http://127.0.0.1:8000/jwks", {"https_unless_loopback": True}, None),
        (
            "http://idp.example/jwks",
            {"https_unless_loopback": True},
            "must be an https:// URL (http:// is allowed only for localhost)",
        ),
        ("http://[::1", {}, "is not a URL"),
    ],
)
def test_http_url_problem(value, kwargs, problem):
    assert http_url_problem(value, **kwargs) == problem
