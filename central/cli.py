"""``pulsegate central``: ingest, store, ledger, bundle import, dead letters, incidents, fleet."""

from __future__ import annotations

import click


@click.group()
def central() -> None:
    """Central services: ingest, ledger, incidents and fleet health."""


from central.ingest.cli import (  # noqa: E402 - commands defined after the group
    db,
    dead_letters,
    import_command,
    ingest,
    ledger,
)

central.add_command(db)
central.add_command(ledger)
central.add_command(ingest)
central.add_command(import_command)
central.add_command(dead_letters)


def _register() -> None:
    from central.incidents.cli import incidents

    central.add_command(incidents)
    from central.detectors.cli import detect
    from central.fleet.cli import fleet

    central.add_command(detect)
    central.add_command(fleet)


_register()
