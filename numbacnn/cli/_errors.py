"""``CliError``: a user error of the ``numbacnn`` command, printed as one line (exit status 2).

A module of its own, importing nothing, so every command module can raise it without
importing the package that registers the commands.
"""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""
