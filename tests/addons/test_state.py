"""Header helpers on the request path behave like mitmproxy's own Headers operations."""

from __future__ import annotations

from mitmproxy import http

from turnout.addons import state


def test_lowercase_headers_joins_repeats_like_headers_getitem() -> None:
    h = http.Headers([(b"Authorization", b"Bearer k"), (b"X-Turnout-Team", b"a"), (b"x-turnout-team", b"b")])
    got = state.lowercase_headers(h)
    assert got == {"authorization": "Bearer k", "x-turnout-team": "a, b"}
    assert got["x-turnout-team"] == h["X-TURNOUT-TEAM"]


def test_set_headers_appends_new_and_replaces_existing_like_update() -> None:
    for new in (
        {"x-turnout-task": "qa", "x-turnout-decision": "observe:keep"},
        {"Content-Type": "text/plain", "x-a": "1"},
    ):
        fast = http.Headers([(b"content-type", b"application/json"), (b"x-upstream", b"1")])
        stock = http.Headers(fast.fields)
        state.set_headers(fast, new)
        stock.update(new)
        assert fast.fields == stock.fields
    untouched = http.Headers([(b"a", b"1")])
    state.set_headers(untouched, {})
    assert untouched.fields == ((b"a", b"1"),)
