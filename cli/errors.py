"""The CLI's one error path: a command raises, `main` prints `turnout CMD: message` and exits.

Exit 2 is a usage error (a flag or value the user gave that cannot be right, as argparse's own),
exit 1 a failure to do the job (no ledger there, a config file that does not parse, a proxy that
did not start).
"""

from __future__ import annotations


class UsageError(Exception):
    exit_code = 2


class Failure(Exception):
    exit_code = 1
