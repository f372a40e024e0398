"""ConnectionLog: mitmproxy's routine per-connection log lines, off unless asked for.

mitmproxy logs five INFO lines for every connection a client opens through it: client connect,
server connect, "Streaming response from …", client disconnect, server disconnect. turnout
records every call in the ledger, so for its users those lines are noise — and they are not free:
formatting and writing them costs CPU on the event loop for every connection, before the
CONNECT is answered and before the response headers go out. Clients that open a connection per
call (the sync OpenAI SDK does for every stream) pay it on every call.

Those lines are dropped before a log record is made for them (the logger's `log` is wrapped for
the process, restored on done): making a record is most of their cost,
and a filter only sees records already made. Three of the five sit on the path to the first
token (client connect, server connect, "Streaming response from").

The same logger also builds a dozen DEBUG records per connection ("[tls] tls established",
"closing transports…") that no handler shows unless asked for debug output (mitmproxy runs its
root logger at DEBUG and filters in the handlers, so each one is built and then discarded): its
level is raised to INFO, so those records are not built (the messages themselves still are).

Only those lines are dropped: everything else mitmproxy logs on the same logger (errors reaching
the provider, protocol errors, TLS handshake failures, idle timeouts) still shows.
`--set turnout_connection_log=true` (or `turnout proxy -v`) keeps them all, debug lines included.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx

from . import state

LOGGER = "mitmproxy.proxy.server"  # mitmproxy's ConnectionHandler.log, which also relays the layers' Log commands
ROUTINE = frozenset({"client connect", "client disconnect"})
ROUTINE_PREFIXES = ("server connect ", "server disconnect ", "Streaming response from ", "Streaming request to ")


class RoutineConnectionLines(logging.Filter):
    """Drops the INFO lines mitmproxy writes for every connection; lets every other record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_routine(record.levelno, record.msg)


def is_routine(level: int, msg: object) -> bool:
    return level == logging.INFO and isinstance(msg, str) and (msg in ROUTINE or msg.startswith(ROUTINE_PREFIXES))


def _skip_routine(logger: logging.Logger):
    """`logger.log` that returns before a record is made for a routine line (mitmproxy calls only `log`)."""

    def log(level: int, msg: object, *args, **kwargs) -> None:
        if is_routine(level, msg):
            return
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # the caller is mitmproxy's, not this wrapper
        logging.Logger.log(logger, level, msg, *args, **kwargs)

    return log


class ConnectionLog:
    def __init__(self) -> None:
        self.filter = RoutineConnectionLines()  # for routine lines that reach the logger other than through `log`

    def load(self, loader) -> None:
        loader.add_option(
            "turnout_connection_log",
            bool,
            False,
            "Log mitmproxy's routine lines for every connection (client/server connect and disconnect, "
            "'Streaming response from'). Off by default: the ledger records every call.",
        )

    def configure(self, updated: set[str]) -> None:
        if "turnout_connection_log" in updated:
            self._apply(ctx.options.turnout_connection_log)

    def _apply(self, on: bool) -> None:
        logger = logging.getLogger(LOGGER)
        if on:
            logger.removeFilter(self.filter)
            logger.setLevel(logging.NOTSET)
            logger.__dict__.pop("log", None)
        else:
            logger.addFilter(self.filter)
            logger.setLevel(logging.INFO)
            logger.log = _skip_routine(logger)  # type: ignore[method-assign]

    def done(self) -> None:
        if not state.shutting_down():  # a script reload gives the logger back; at shutdown the closing
            self._apply(True)  # connections would still log their routine lines
