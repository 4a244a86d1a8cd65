"""The terminal UI's exception tree.

::

    GatewayError                 (gateway.errors) printed as one line by ``pulsegate``
    └── ControlError             talking to the gateway's control API failed
        ├── DaemonUnavailableError   no daemon answers on the socket (down, restarting)
        └── DaemonRefusedError       the daemon answered ``ok: false``; the message is its reason
"""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = ["ControlError", "DaemonUnavailableError", "DaemonRefusedError"]


class ControlError(GatewayError):
    """Talking to the gateway's control API failed."""


class DaemonUnavailableError(ControlError):
    """No gateway daemon answers on the control socket: it is down, restarting or hung."""


class DaemonRefusedError(ControlError):
    """The daemon refused a request (``ok: false``); the message is the daemon's own reason."""

    def __init__(self, op: str, reason: str) -> None:
        super().__init__(reason)
        self.op = op
        """The operation that was refused, e.g. ``"export"``."""
        self.reason = reason
        """The daemon's one-line reason."""
