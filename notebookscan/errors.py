"""Exceptions and warnings raised by notebookscan.

Every error says what was passed, what is allowed, and what to do next.
"""

from __future__ import annotations


class NotebookscanError(Exception):
    """Base class of every error raised by notebookscan."""


class SpaceError(NotebookscanError, ValueError):
    """A parameter space is invalid, or does not fit the function it is meant for."""


class StoreError(NotebookscanError):
    """A store cannot be read or written."""


class ExecutorError(NotebookscanError):
    """An executor cannot be used, started or reached."""


class ScanError(NotebookscanError):
    """A scan cannot be run as asked."""


class StoreWarning(UserWarning):
    """Something in a store was skipped or repaired while reading (e.g. a corrupt shard)."""


class StaleResultsWarning(UserWarning):
    """Stored points of a scan came from other code than the function scanned now."""
