"""Make this directory's helper modules importable under pytest's importlib mode.

``make_vectors`` (the vector generator, also a script) and
``shim_reference_codecs`` (the independent codecs it uses) live beside the
tests that use them, so a reader finds how the vectors were made next to the
checks; importlib mode does not put a test directory on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
