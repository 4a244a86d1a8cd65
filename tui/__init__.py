"""The field staff's terminal UI (``pulsegate tui``).

It talks to the gateway only through the daemon's control socket (see
gateway/CONTROL_API.md), and reads the gateway's database through
``gateway.state_reader`` when the daemon is down.

Names are imported on first use, so ``pulsegate`` commands other than
``tui`` do not pay for importing Textual.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PulsegateApp",
    "ControlClient",
    "CONTROL_SOCKET_FILENAME",
    "GatewayFeed",
    "FeedMode",
    "Snapshot",
    "ControlError",
    "DaemonRefusedError",
    "DaemonUnavailableError",
]

_HOMES = {
    "PulsegateApp": "tui._app",
    "ControlClient": "tui._client",
    "CONTROL_SOCKET_FILENAME": "tui._client",
    "GatewayFeed": "tui._feed",
    "FeedMode": "tui._feed",
    "Snapshot": "tui._feed",
    "ControlError": "tui.errors",
    "DaemonRefusedError": "tui.errors",
    "DaemonUnavailableError": "tui.errors",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tui' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
