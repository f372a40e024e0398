"""Server-sent events: an incremental parser that never holds data back from the client.

The proxy tees the raw stream: bytes go on to the client as they arrive, and a copy is
fed here to assemble the ledger record when the stream ends.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(r"\r\n|\r|\n")  # SSE's only line breaks (str.splitlines knows many more)


class SSEEvent(NamedTuple):
    event: str | None
    data: str


def event_json(event: SSEEvent) -> dict[str, Any] | None:
    """An event's data as a JSON object, or None (`[DONE]`, keep-alives, anything malformed)."""
    try:
        data = json.loads(event.data)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def parse_event_block(block: bytes) -> SSEEvent | None:
    """One event's lines (without the blank separator line) to an event; comments-only blocks give None."""
    event: str | None = None
    data: list[str] = []
    for raw in _LINE.split(block.decode("utf-8", "replace")):
        if not raw or raw.startswith(":"):
            continue
        field, _, value = raw.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if not data and event is None:
        return None
    return SSEEvent(event, "\n".join(data))


class SSEParser:
    """Feed raw bytes in any chunking; get whole events out."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buf += chunk
        events: list[SSEEvent] = []
        while True:
            m = _EVENT_END.search(self._buf)
            if m is None:
                break
            block, self._buf = self._buf[: m.start()], self._buf[m.end() :]
            ev = parse_event_block(block)
            if ev is not None:
                events.append(ev)
        return events

    def close(self) -> list[SSEEvent]:
        """A stream may end without the final blank line; what is left is the last event."""
        rest, self._buf = self._buf, b""
        ev = parse_event_block(rest) if rest.strip() else None
        return [ev] if ev is not None else []

    @property
    def pending(self) -> bytes:
        return self._buf


def split_complete(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split raw stream bytes into whole event blocks (each with its separator) and the unfinished tail."""
    blocks: list[bytes] = []
    start = 0
    for m in _EVENT_END.finditer(buffer):
        blocks.append(buffer[start : m.end()])
        start = m.end()
    return blocks, buffer[start:]


def encode_event(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n").encode()


class _Identity:
    def decompress(self, data: bytes) -> bytes:
        return data


class _Brotli:
    def __init__(self, d) -> None:
        self._d = d

    def decompress(self, data: bytes) -> bytes:
        return self._d.process(data)


def incremental_decoder(content_encoding: str | None):
    """A streaming decompressor for a response's Content-Encoding (the tee sees raw wire bytes)."""
    enc = (content_encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return _Identity()
    if enc in ("gzip", "x-gzip"):
        import zlib

        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        import zlib

        return zlib.decompressobj()
    if enc == "br":
        import brotli

        return _Brotli(brotli.Decompressor())
    if enc == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
        except ImportError:
            from backports import zstd  # what mitmproxy itself uses before 3.14
        return zstd.ZstdDecompressor()
    raise ValueError(f"unsupported content-encoding {enc!r}")


class JSONArrayParser:
    """The other stream framing (Gemini's `streamGenerateContent` without `alt=sse`): one JSON array whose
    elements arrive one by one. Each whole element comes out as an `SSEEvent` without a name, so the same
    assemblers read both framings. Bytes are never held back from the client: this only reads a copy."""

    def __init__(self) -> None:
        self._buf = ""
        self._bytes = b""
        self._decoder = json.JSONDecoder()
        self._opened = False
        self.closed = False  # the array's closing bracket arrived

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._bytes += chunk
        try:  # a UTF-8 sequence split across chunks waits for its end
            text, self._bytes = self._bytes.decode("utf-8"), b""
        except UnicodeDecodeError as e:
            text, self._bytes = self._bytes[: e.start].decode("utf-8"), self._bytes[e.start :]
        self._buf += text
        events: list[SSEEvent] = []
        while True:
            rest = self._buf.lstrip()
            if not rest:
                self._buf = ""
                break
            if not self._opened:
                if rest[0] != "[":
                    self._buf = ""  # not an array (an error object): the caller reads the body whole
                    break
                self._opened, rest = True, rest[1:]
                self._buf = rest
                continue
            if rest[0] == ",":
                self._buf = rest[1:]
                continue
            if rest[0] == "]":
                self.closed, self._buf = True, ""
                break
            try:
                _, end = self._decoder.raw_decode(rest)
            except ValueError:  # the element is not whole yet
                self._buf = rest
                break
            events.append(SSEEvent(None, rest[:end]))
            self._buf = rest[end:]
        return events

    def close(self) -> list[SSEEvent]:
        self._buf, self._bytes = "", b""
        return []

    @property
    def pending(self) -> bytes:
        return self._buf.encode()


def stream_parser(framing: str) -> "SSEParser | JSONArrayParser":
    """The incremental parser for a provider's stream framing ("sse" or "json-array")."""
    return JSONArrayParser() if framing == "json-array" else SSEParser()
