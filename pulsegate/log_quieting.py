"""Keeping a library's own failure logging out while pulsegate reports the failure itself.

pika and the Cassandra driver log a refused connection or a failed prepare
at ERROR with a traceback (seven lines or more each time). Where pulsegate
turns that failure into one line of its own, it quiets the library's logger
for just that call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["logger_quieted"]


@contextmanager
def logger_quieted(name: str) -> Iterator[None]:
    """Raise logger ``name`` to CRITICAL for the block, then restore its level.

    Args:
        name: The library's logger, e.g. ``"pika"`` or ``"cassandra.cluster"``.
    """
    library_log = logging.getLogger(name)
    level = library_log.level
    library_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        library_log.setLevel(level)
