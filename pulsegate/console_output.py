"""Where the command line prints tables: never cropped when piped.

rich sizes its console to 80 columns whenever stdout is not a terminal, and
then crops table cells. Gateway, central and the demo print through
:func:`output_console` instead, so piped output always holds whole rows.
"""

from __future__ import annotations

from rich.console import Console

__all__ = ["output_console"]

#: Width for output that is not a terminal (a pipe, a file): wider than any
#: row pulsegate prints, so piped output is never cropped or folded. A table
#: still takes only its natural width; rich just needs a number.
_PIPED_WIDTH_CHARS = 100_000


def output_console(console: Console | None = None) -> Console:
    """The console to print on: ``console`` (or stdout) on a TTY, an unlimited-width one when piped.

    Args:
        console: Where the caller prints; a new stdout console when None.

    Returns:
        ``console`` itself on a terminal; otherwise a console on the same file
        whose width never crops a row.
    """
    console = console or Console()
    if console.is_terminal:
        return console
    return Console(file=console.file, width=_PIPED_WIDTH_CHARS)
