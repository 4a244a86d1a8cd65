"""``pulsegate central``: ingest, store, ledger, bundle import, incidents, fleet."""

from __future__ import annotations

import click


@click.group()
def central() -> None:
    """Central services: ingest, ledger, incidents and fleet health."""
