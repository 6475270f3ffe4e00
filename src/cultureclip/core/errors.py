"""One base for every error a user can fix by changing their input, config or command.

The CLI prints a :class:`UserError` as one red line and exits 2; anything else is a
bug and keeps its traceback. The subclasses also derive from the built-in exception a
caller would expect (``ValueError``, ``FileNotFoundError``, ``KeyError``), so code
that catches those keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, config or command line: the message says what and how to fix it."""


class InputError(UserError, ValueError):
    """A value, record or file content that cannot be used."""


class MissingInputError(UserError, FileNotFoundError):
    """A path the user named does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "file not found"


class UnknownNameError(UserError, KeyError):
    """A name that is not registered (a backend, benchmark, loss, preset...)."""

    def __str__(self) -> str:
        # KeyError's str() wraps the message in quotes; a user message should not.
        return str(self.args[0]) if self.args else "unknown name"


class DiskFullError(UserError, OSError):
    """A write failed because the disk is full; names the file and the free space."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no space left on device"
