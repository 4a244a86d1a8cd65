"""The central exception tree: everything central raises for an expected failure.

::

    CentralError            base: caught by the CLI and printed as one line
"""

from __future__ import annotations

__all__ = ["CentralError"]


class CentralError(Exception):
    """An expected failure in central: the message says what went wrong and what to do."""
