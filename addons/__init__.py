"""turnout's mitmproxy addons. The order of `default_addons()` is the architecture:

    intercept → attribute → budget → cache → route → forward   (request)
    record → ledger                                            (response, stream, error)
"""

from __future__ import annotations


def default_addons() -> list[object]:
    from .forward import Forward
    from .intercept import Intercept
    from .record import Record
    # from .route import Route

    return [
        Intercept(),
        # Route(),  # TEMP until router lands
        Forward(),
        Record(),
    ]
