"""The mitmproxy script: `mitmdump -s addons/turnout.py` / `mitmweb -s addons/turnout.py`.

Every turnout option can be set with `--set turnout_…=…`; `turnout proxy` runs this same file.
"""

import os
import sys

# mitmproxy puts this file's folder first on sys.path while loading it (and leaves it there):
# drop it, so `turnout` below is the installed package and not this script.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from turnout.addons import default_addons  # noqa: E402

addons = default_addons()
