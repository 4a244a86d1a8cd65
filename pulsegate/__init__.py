"""The ``pulsegate`` command: the one place that wires the parts together."""
