"""Which points a store holds: keys of done and failed points, as sorted arrays."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import numpy as np

from ..keys import KEY_DTYPE
from .shards import ShardData

__all__ = ["StoreIndex", "as_key_array", "index_entry"]


def index_entry(shard: ShardData) -> tuple[np.ndarray, np.ndarray]:
    """A shard's keys (``KEY_DTYPE``) and whether each is done."""
    # keys as 20 bytes and a bool per point, not Python strings: a scan keeps this for
    # every shard it wrote
    status = shard.bookkeeping["status"]
    done = status == (b"done" if status.dtype.kind == "S" else "done")
    return as_key_array(shard.bookkeeping["key"]), np.asarray(done, dtype=bool)


class StoreIndex:
    """Keys of stored points: ``done`` ones and ``failed`` ones (never done).

    Held as sorted arrays of 20-byte keys; ``is_done``/``is_failed`` test many keys at
    once, ``done``/``failed`` give sets of str (built on first use).
    """

    def __init__(self, done_keys: np.ndarray, failed_keys: np.ndarray,
                 shards: frozenset[str] = frozenset()):
        self.done_keys = done_keys
        self.failed_keys = failed_keys
        #: the shards it was read from: what a run deciding from it knows to be stored
        self.shards = shards

    @classmethod
    def from_entries(cls, entries: Sequence[tuple[np.ndarray, np.ndarray]],
                     shards: Iterable[str] = ()) -> StoreIndex:
        """From ``(keys, is_done)`` pairs of shards (named in ``shards``); a key done
        anywhere is done."""
        shards = frozenset(shards)
        if not entries:
            empty = np.empty(0, dtype=KEY_DTYPE)
            return cls(empty, empty, shards)
        keys = np.concatenate([k for k, _ in entries])
        is_done = np.concatenate([d for _, d in entries])
        done = np.unique(keys[is_done])
        failed = np.unique(keys[~is_done])
        return cls(done, failed[~sorted_isin(failed, done)], shards)

    @functools.cached_property
    def done(self) -> set[str]:
        """Keys of the points stored as done."""
        return set(self.done_keys.astype(str).tolist())

    @functools.cached_property
    def failed(self) -> set[str]:
        """Keys of the points stored as failed and never done."""
        return set(self.failed_keys.astype(str).tolist())

    def is_done(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """A bool per key: is it stored as done?"""
        return sorted_isin(as_key_array(keys), self.done_keys)

    def is_failed(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        """A bool per key: is it stored as failed (and never done)?"""
        return sorted_isin(as_key_array(keys), self.failed_keys)

    def __len__(self) -> int:
        return len(self.done_keys) + len(self.failed_keys)


def sorted_isin(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``np.isin(keys, sorted_keys)`` by binary search (no copy of the stored keys)."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(sorted_keys, keys).clip(0, len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def as_key_array(keys: Sequence[str] | np.ndarray) -> np.ndarray:
    """Keys as a ``KEY_DTYPE`` array (str keys are ASCII hex)."""
    if isinstance(keys, np.ndarray) and keys.dtype == KEY_DTYPE:
        return keys
    return np.asarray(keys if isinstance(keys, np.ndarray) else list(keys)).astype(KEY_DTYPE)


