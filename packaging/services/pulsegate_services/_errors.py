"""The one error the service script raises for an expected failure."""

from __future__ import annotations


class ServicesError(Exception):
    """A server could not be installed, started, stopped or found.

    The message is one line that says what failed and what to do next; the
    command-line entry point prints it without a stack trace.
    """
