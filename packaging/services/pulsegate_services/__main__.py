"""``python -m pulsegate_services``: what ``packaging/services/pulsegate-services`` runs."""

import sys

from ._cli import main

sys.exit(main())
