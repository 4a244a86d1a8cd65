"""``pulsegate gateway``: the appliance daemon and its status."""

from __future__ import annotations

import click


@click.group()
def gateway() -> None:
    """The gateway daemon: serial ingest, durable outbox, uplink."""
