"""Errors rawvid raises for bad input: one line, naming the file and the problem."""
from __future__ import annotations

import os


class RawvidError(Exception):
    """A user-facing error: the CLI prints ``path: message`` and exits with code 2."""

    def __init__(self, path: str | os.PathLike | None, message: str):
        self.path = None if path is None else os.fspath(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class FormatError(RawvidError):
    """The file is not what it claims to be, or is corrupt."""


class UnsupportedError(RawvidError):
    """The file is valid but uses a feature rawvid does not read."""


class RawvidWarning(UserWarning):
    """A recoverable problem in an input (for example a truncated recording)."""
