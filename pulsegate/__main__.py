"""``python -m pulsegate``: the same as the ``pulsegate`` command."""

from pulsegate.cli import main

main()
