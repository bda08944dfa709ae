"""The errors hpsearch shows to users.

Each carries a message that is complete on its own: which file, which key, what was expected
and what was given. The CLI prints it on one line (or one line per problem) and exits with 2.
"""

from __future__ import annotations


class HpsearchError(ValueError):
    """Bad user input, stated as: ``file: key: expected ..., got ...``."""

    def __init__(self, file: str | None, key: str | None, expected: str, given: object) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        self.given = given
        where = ": ".join(part for part in (file, key) if part)
        shown = given if isinstance(given, str) and given.startswith("<") else repr(given)
        super().__init__(f"{where}: expected {expected}, got {shown}")


class SpecError(HpsearchError):
    """A study file (or a flag that overrides it) is not valid."""


class DataError(HpsearchError):
    """The data a study points at cannot be used (missing file, bad column, missing values...)."""
