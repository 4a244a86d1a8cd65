"""``pulsegate shim``: the tracker emulator."""

from __future__ import annotations

import click


@click.group()
def shim() -> None:
    """The tracker side: replay recordings over a serial port."""
