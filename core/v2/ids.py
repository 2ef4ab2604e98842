"""Dictionary encoding of string ids into dense integers, with each id's place in the string order.

Dense ids are given in first-seen order, so they depend on arrival; nothing may be decided by them. Every tie
between ids is broken by :attr:`IdIndex.rank` instead: ``rank[a] < rank[b]`` exactly when ``names[a] < names[b]``
(Python's string order, i.e. code-point order). The ranks are not dense and change as ids are added, but the order
of any two ids never does, so structures ordered by rank stay ordered.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np


class IdIndex:
    """``name -> dense id`` and back, plus :attr:`rank` (the ids' string order, see the module docstring)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self._sorted = np.empty(0, dtype=np.str_)  # every name, sorted
        self._perm = np.empty(0, dtype=np.int64)  # the dense id of each position of _sorted
        self.rank = np.empty(0, dtype=np.int64)  # dense id -> position in the string order
        self.hash = np.empty(0, dtype=np.int64)  # dense id -> CRC-32 of the id (seeded draws per id)

    def __len__(self) -> int:
        return len(self.names)

    def get(self, name: str) -> int:
        """The dense id of ``name``, -1 if unknown."""
        return self.index.get(name, -1)

    def encode(self, names: Iterable[str]) -> np.ndarray:
        """The dense ids of ``names`` (int64), adding the unknown ones (first seen first) and re-ranking once."""
        index = self.index
        out: list[int] = []
        added: list[str] = []
        for name in names:
            i = index.get(name)
            if i is None:
                i = index[name] = len(self.names)
                self.names.append(name)
                added.append(name)
            out.append(i)
        if added:
            self._insert(added)
        return np.asarray(out, dtype=np.int64)

    def lookup(self, names: Sequence[str]) -> np.ndarray:
        """The dense ids of ``names`` without adding any (-1 for an unknown one)."""
        get = self.index.get
        return np.fromiter((get(n, -1) for n in names), dtype=np.int64, count=len(names))

    def _insert(self, added: list[str]) -> None:
        first = len(self.names) - len(added)
        new = np.asarray(added, dtype=np.str_)
        order = np.argsort(new, kind="stable")
        new_sorted = new[order]
        new_ids = np.arange(first, len(self.names), dtype=np.int64)[order]
        if new.dtype.itemsize > self._sorted.dtype.itemsize:  # a longer id: widen, or insert would truncate it
            self._sorted = self._sorted.astype(new.dtype)
        at = np.searchsorted(self._sorted, new_sorted) if len(self._sorted) else np.zeros(len(new), dtype=np.int64)
        self._sorted = np.insert(self._sorted, at, new_sorted)
        self._perm = np.insert(self._perm, at, new_ids)
        rank = np.empty(len(self.names), dtype=np.int64)
        rank[self._perm] = np.arange(len(self.names), dtype=np.int64)
        self.rank = rank
        self.hash = np.concatenate([self.hash, np.array([zlib.crc32(n.encode("utf-8", "surrogatepass"))
                                                         for n in added], dtype=np.int64)])
