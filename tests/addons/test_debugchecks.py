"""mitmproxy's per-message type check: off in turnout's process by default, on when asked, restored on done."""

from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from turnout.addons.debugchecks import DebugChecks


def build_with_bad_field() -> http.Response:
    return http.Response(b"HTTP/1.1", 200, b"OK", http.Headers(), b"", None, "not a float", None)  # type: ignore[arg-type]


def test_check_is_off_by_default_and_back_on_request_and_on_done() -> None:
    with pytest.raises(TypeError):  # mitmproxy's own behaviour, before the addon
        build_with_bad_field()
    d = DebugChecks()
    with taddons.context(d) as tctx:
        tctx.configure(d, turnout_debug_checks=False)
        assert build_with_bad_field().timestamp_start == "not a float"
        tctx.configure(d, turnout_debug_checks=True)
        with pytest.raises(TypeError):
            build_with_bad_field()
        tctx.configure(d, turnout_debug_checks=False)
        d.done()
    with pytest.raises(TypeError):
        build_with_bad_field()


def test_response_make_still_converts_what_turnout_passes() -> None:
    d = DebugChecks()
    with taddons.context(d) as tctx:
        tctx.configure(d, turnout_debug_checks=False)
        r = http.Response.make(503, '{"error": "x"}', {"content-type": "application/json"})
        assert r.content == b'{"error": "x"}' and r.headers["content-type"] == "application/json"
        d.done()
