"""Pure routing logic for turnout: features, task labels, difficulty score, policy.

Nothing here knows about HTTP or mitmproxy; the addon calls
:meth:`turnout.router.policy.RoutingPolicy.decide` once per request.
Submodules are imported on use so that e.g. ``turnout.router.tokens`` stays cheap.
"""
