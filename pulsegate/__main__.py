"""``python -m pulsegate``: the same as the ``pulsegate`` command."""

from pulsegate.cli import main

# Guarded: multiprocessing may import this module again in a worker (as __mp_main__).
if __name__ == "__main__":
    main()
