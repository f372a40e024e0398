"""ConnectionLog drops only mitmproxy's routine per-connection lines, and gives the logger back on done."""

from __future__ import annotations

import logging

from mitmproxy.test import taddons

from turnout.addons.connectionlog import LOGGER, ConnectionLog


def _passes(msg: str, level: int = logging.INFO) -> bool:
    """Whether the logger lets the record through (its own level and filters; mitmproxy runs root at DEBUG)."""
    logger = logging.getLogger(LOGGER)
    record = logger.makeRecord(LOGGER, level, __file__, 1, msg, (), None)
    return level >= logger.level and bool(logger.filter(record))


def test_routine_lines_go_everything_else_stays_and_done_restores() -> None:
    addon = ConnectionLog()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, turnout_connection_log=False)
        for routine in ("client connect", "client disconnect", "server connect 1.2.3.4:443",
                        "server disconnect 1.2.3.4:443", "Streaming response from api.openai.com."):  # fmt: skip
            assert not _passes(routine), routine
        assert _passes("error establishing server connection: [Errno 111] Connection refused")
        assert _passes(
            "Client TLS handshake failed. The client does not trust the proxy's certificate", logging.WARNING
        )
        assert not _passes("[tls] tls established", logging.DEBUG)  # not even built
        tctx.configure(addon, turnout_connection_log=True)
        assert _passes("client connect") and _passes("[tls] tls established", logging.DEBUG)
        tctx.configure(addon, turnout_connection_log=False)
        addon.done()
        assert _passes("client connect") and logging.getLogger(LOGGER).level == logging.NOTSET


def test_routine_lines_are_not_even_made_into_records() -> None:
    """Making the record is most of a line's cost, so routine lines must stop before it."""
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    logger = logging.getLogger(LOGGER)
    addon = ConnectionLog()
    logging.setLogRecordFactory(counting)
    try:
        with taddons.context(addon) as tctx:
            tctx.configure(addon, turnout_connection_log=False)
            logger.log(logging.INFO, "client connect", extra={"client": ("127.0.0.1", 5000)})
            logger.log(logging.INFO, "Streaming response from api.openai.com.")
            assert made == []
            logger.log(logging.INFO, "error establishing server connection: refused")
            assert [r.getMessage() for r in made] == ["error establishing server connection: refused"]
            assert (
                made[0].funcName == "test_routine_lines_are_not_even_made_into_records"
            )  # the caller, not the wrapper
            addon.done()
            assert "log" not in logger.__dict__
            logger.setLevel(logging.DEBUG)  # the test runner's root may sit above INFO
            logger.log(logging.INFO, "client connect")
            assert made[-1].getMessage() == "client connect"
    finally:
        logging.setLogRecordFactory(factory)
        logger.setLevel(logging.NOTSET)
