"""Exceptions and warnings raised by notebookscan.

Every error says what was passed, what is allowed, and what to do next.

Every exception notebookscan raises derives from :class:`NotebookscanError`, so
``except ns.NotebookscanError`` catches all of them. Where a builtin exception was (or
would be) the natural one, the class derives from that builtin too, so code that catches
``ValueError``, ``TypeError``, ``KeyError``, ``OSError`` or ``TimeoutError`` keeps
working::

    NotebookscanError(Exception)
    ├── ArgumentError(ValueError)        an argument a function or method does not accept
    │   ├── ArgumentTypeError(TypeError) ... because of its type
    │   ├── UnknownNameError(KeyError)   ... a name that is not there (a parameter, ...)
    │   └── SpaceError                   a parameter space is invalid or does not fit
    ├── ResultError(TypeError)           a scanned function returned or handed over what
    │   │                                the store cannot keep (the point is recorded failed)
    │   └── StateError(ValueError)       ... a state a checkpoint cannot hold (store.checkpoints)
    ├── StoreError                       a store cannot be read or written
    │   ├── StoreFormatError(ValueError) a file in a store (or what they hold) breaks the format
    │   │   ├── MalformedShard           (store.shards)
    │   │   └── JournalCorrupt           (store.journal)
    │   ├── ForeignFile(OSError)         a store path that is not a regular file (store.files)
    │   └── ShardVanished, JournalUnsupported   caught inside the store, never seen
    ├── ExecutorError                    an executor cannot be used, started or reached
    ├── ScanError                        a scan cannot be run as asked
    └── WaitTimeout(TimeoutError)        a wait ran out of its ``timeout``

What passes through unchanged: an :class:`OSError` from the operating system (re-raised
with the store's path named), ``KeyboardInterrupt``, ``NotImplementedError`` of abstract
methods, ``AttributeError`` from ``__setattr__``/``__getattr__`` (the attribute
protocol), ``StopIteration``, ``argparse.ArgumentTypeError`` (argparse turns it into a
usage message), errors raised by the scanned function itself (recorded with the point),
and re-raised exceptions. ``tests/test_errors.py`` enforces this rule on every ``raise``.
"""

from __future__ import annotations


class NotebookscanError(Exception):
    """Base class of every error raised by notebookscan."""


class ArgumentError(NotebookscanError, ValueError):
    """An argument a notebookscan function or method does not accept (also a ValueError)."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of a type the function does not take (also a TypeError)."""


class UnknownNameError(ArgumentError, KeyError):
    """A name looked up that is not there, e.g. a parameter (also a KeyError)."""

    __str__ = BaseException.__str__  # the message as written, not quoted as KeyError does


class SpaceError(ArgumentError):
    """A parameter space is invalid, or does not fit the function it is meant for."""


class ResultError(NotebookscanError, TypeError):
    """A function returned something the store cannot keep (the point is recorded as failed)."""


class StoreError(NotebookscanError):
    """A store cannot be read or written."""


class StoreFormatError(StoreError, ValueError):
    """A file in a store (or what the files hold together) breaks the store's format."""


class ExecutorError(NotebookscanError):
    """An executor cannot be used, started or reached."""


class ScanError(NotebookscanError):
    """A scan cannot be run as asked."""


class WaitTimeout(NotebookscanError, TimeoutError):
    """A wait (for a run, a detached run, a cluster's reply) ran out of its ``timeout``."""


class StoreWarning(UserWarning):
    """Something in a store was skipped or repaired while reading (e.g. a corrupt shard)."""


class StaleResultsWarning(UserWarning):
    """Stored points of a scan came from other code than the function scanned now."""


class PartialResultsWarning(UserWarning):
    """Results read while the scan's run goes on: the points stored so far."""
