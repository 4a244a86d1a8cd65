"""``pulsegate tui``: the field staff's terminal UI."""

from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command()
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=".state/gateway",
              show_default=True, help="The gateway's state directory (control socket and SQLite files).")
@click.option("--refresh", "refresh_interval_s", type=click.FloatRange(0.2, 60), default=1.0, show_default=True,
              metavar="SECONDS", help="How often to fetch the gateway's status.")
def tui(state_dir: Path, refresh_interval_s: float) -> None:
    """Watch and operate the gateway from a terminal.

    Works over SSH in 80x24. When the gateway daemon is not running it shows a
    read-only view from the state directory and reconnects by itself.
    """
    from textual.logging import TextualHandler

    from tui._app import PulsegateApp

    # Log lines written to the terminal would tear the screen: while the UI
    # runs they go to Textual's devtools console instead (``textual console``).
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    root.handlers = [TextualHandler()]
    try:
        PulsegateApp(state_dir, refresh_interval_s=refresh_interval_s).run()
    finally:
        root.handlers = saved_handlers
