"""The OCT2017 folder layout: `{train,test}/{CNV,DME,DRUSEN,NORMAL}/<CLASS>-<patient>-<n>.jpeg`."""

from __future__ import annotations

import re

# Kermany OCT2017 file names: <CLASS>-<patient>-<n>.jpeg, e.g. CNV-1083927-1.jpeg.
FILENAME_RE = re.compile(r"^(?P<label>[A-Z]+)-(?P<patient>\d+)-(?P<n>\d+)\.jpe?g$", re.IGNORECASE)

# Written at the root of a generated dataset so every scan can say the data is synthetic.
SYNTHETIC_MARKER = "SYNTHETIC.txt"
