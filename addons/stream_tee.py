"""The SSE tee: a response's stream passes through at once while the ledger keeps a copy."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from turnout.ledger.sse import incremental_decoder, parse_event_block, split_complete, stream_parser

from . import state

log = logging.getLogger(__name__)

_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,')


class StreamTee:
    """The `flow.response.stream` callable: forwards every byte at once, keeps a copy for the ledger.

    When turnout added `include_usage` upstream, the usage-only chunk (and the `"usage":null`
    keys it brings) are cut so the client sees exactly the stream it asked for; only an
    unfinished event is held back for that, never a whole one.
    """

    def __init__(self, llm: state.LLMFlow, content_encoding: str | None) -> None:
        self.llm = llm
        self.parser = stream_parser(llm.provider.stream_framing(llm.endpoint or "chat"))
        self.decoder = incremental_decoder(content_encoding)
        self.strip = llm.usage_injected and (content_encoding or "identity").lower() == "identity"
        self.held = b""
        self.broken = False
        llm.recording.assembler = llm.provider.stream_assembler(llm.endpoint or "chat")

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if self.broken:
            return data
        try:
            out = self._tee(data)
        except Exception as e:  # noqa: BLE001 - a parsing bug must never break the client's stream
            log.warning("turnout: stream tee failed (%s); passing the rest through untouched", e)
            self.broken = True
            out, self.held = self.held + data, b""
        # Nothing to pass on yet (a held partial event, a cut usage chunk): no chunk at all. An empty
        # bytes would go out as a zero-length HTTP/1.1 chunk, i.e. the end of the body.
        return out if out or not data else []

    def _tee(self, data: bytes) -> bytes:
        llm = self.llm
        if not data:
            for ev in self.parser.close():
                llm.recording.assembler.feed(ev)
            llm.recording.stream_ended_at = time.time()
            out, self.held = self.held, b""
            return self._strip(out) if self.strip and out else out
        if llm.recording.first_byte_at is None:
            llm.recording.first_byte_at = time.time()
        for ev in self.parser.feed(self.decoder.decompress(data)):
            llm.recording.assembler.feed(ev)
        if not self.strip:
            return data
        blocks, self.held = split_complete(self.held + data)
        return b"".join(self._strip(b) for b in blocks)

    def _strip(self, block: bytes) -> bytes:
        if b'"usage"' not in block:
            return block
        if b'"choices":[]' in block.replace(b" ", b""):
            ev = parse_event_block(block)
            if ev is not None:
                try:
                    if llm_usage_only(self.llm, json.loads(ev.data)):
                        return b""
                except ValueError:
                    pass
        return _USAGE_NULL.sub(b"", block)


def llm_usage_only(llm: state.LLMFlow, chunk: Any) -> bool:
    return bool(llm.provider.is_usage_only_chunk(chunk))
