"""The error type for mistakes in user input (bad flag values, files, models)."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A mistake in the user's input.  The CLI prints the message on one line and exits with status 2."""
