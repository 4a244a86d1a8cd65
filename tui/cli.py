"""``pulsegate tui``: the field staff's terminal UI."""

from __future__ import annotations

import click


@click.command()
@click.option("--state-dir", type=click.Path(file_okay=False), default=".state/gateway", show_default=True,
              help="The gateway's state directory (control socket and SQLite files).")
def tui(state_dir: str) -> None:
    """Watch and operate the gateway from a terminal."""
    raise click.ClickException("the terminal UI is not built yet")
