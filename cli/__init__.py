"""The `turnout` command line: `proxy`, `env`, `run`, and the ledger's reports and the router's tools.

argparse rather than click: `proxy` and `run` hand options on to mitmproxy (`--set` repeated,
`run -- CMD …` taking the rest of the line verbatim), which argparse's REMAINDER and append do
directly; the tree is small and each subcommand module adds itself with `register(subparsers)`.
"""
