"""The gateway exception tree: everything gateway raises for an expected failure.

::

    GatewayError            base: caught by the CLI and printed as one line
"""

from __future__ import annotations

__all__ = ["GatewayError"]


class GatewayError(Exception):
    """An expected failure in gateway: the message says what went wrong and what to do."""
