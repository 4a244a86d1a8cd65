"""The firmware_shim exception tree: everything firmware_shim raises for an expected failure.

::

    ShimError            base: caught by the CLI and printed as one line
"""

from __future__ import annotations

__all__ = ["ShimError"]


class ShimError(Exception):
    """An expected failure in firmware_shim: the message says what went wrong and what to do."""
