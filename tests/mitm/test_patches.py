"""The patches inside mitmproxy's HTTP layers (JSON error pages, HTTP/1 trailers refused), and the
guard on the mitmproxy functions that addons/mitm/patches.py replaces or relies on."""

from __future__ import annotations

import json

import pytest

from gatehouse.mitm import patches
from support.secrets import SAMPLE_JWT


def test_patched_mitmproxy_error_response_is_json():
    patches.install()
    try:
        from mitmproxy.proxy.layers.http import _http1

        raw = _http1.make_error_response(400, f"Bad HTTP request line: b'{SAMPLE_JWT}'")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
        assert json.loads(body)["error"]["type"] == "invalid_request_error" and SAMPLE_JWT.encode() not in raw
        assert patches._json_error_head([(b":status", b"502"), *patches._MITMPROXY_ERROR_HEAD]) == [
            (b":status", b"502"),
            (b"content-type", b"application/json"),
            (b"x-should-retry", b"true"),
        ]
    finally:
        patches.uninstall()
    from mitmproxy.proxy.layers.http import _http1 as again

    assert b"text/html" in again.make_error_response(400, "x")


def test_trailers_become_a_protocol_error():
    import h11

    reader = patches.NoTrailersReader(
        type(
            "R",
            (),
            {
                "__call__": lambda self, buf: h11.EndOfMessage(headers=[("x-t", "v")]),
                "read_eof": lambda self: h11.EndOfMessage(),
            },
        )()
    )
    with pytest.raises(h11.RemoteProtocolError, match="trailers"):
        reader(b"")
    assert isinstance(reader.read_eof(), h11.EndOfMessage)


# -- the mitmproxy code the patches are written against ---------------------------------------


@pytest.mark.parametrize("name", list(patches.CHECKED_SOURCES))
def test_mitmproxy_functions_are_the_ones_the_patches_were_written_for(name):
    """Fails when mitmproxy changes a function addons/mitm/patches.py replaces or relies on:
    re-read the new version (do trailers still crash? are error pages still HTML? does
    next_layer still defer to an already-set layer?), adapt the patch, update the digest."""
    assert patches.source_digest(name) == patches.CHECKED_SOURCES[name], (
        f"mitmproxy's {name} changed (patches written for {patches.WRITTEN_FOR})"
    )


def test_mitmproxy_still_crashes_on_http1_trailers_without_the_patch():
    import inspect

    from mitmproxy.proxy.layers.http import _http1

    assert 'raise NotImplementedError(f"HTTP trailers are not implemented yet.")' in inspect.getsource(
        _http1.Http1Connection.read_body
    )
