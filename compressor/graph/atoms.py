"""Atoms: the indivisible units that channel pruning removes, and a union-find over them.

An atom is one index along one dimension of a parameter or buffer (a "slice", e.g. output
channel 5 of ``conv1.weight``), or one element of a parameter that the model uses as a plain
tensor (e.g. ``pos_embed``). Tracing the model unions atoms that must be removed together; a
connected set of atoms is one prunable channel. Sets that cannot be removed are *poisoned* with
the reason why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Slot", "AtomSpace", "UnionFind", "ChannelSelection"]

#: Channels to remove: group index -> channel indices of that group.
ChannelSelection = Mapping[int, Iterable[int]]


@dataclass(frozen=True)
class Slot:
    """One dimension of one tensor of the model (``element=True``: every element of it)."""

    tensor: str
    dim: int
    element: bool = False


class AtomSpace:
    """Allocates consecutive integer atom ids for slots, and maps ids back to (slot, index)."""

    def __init__(self) -> None:
        self._offsets: dict[Slot, tuple[int, int]] = {}
        self._starts: list[int] = []
        self._slots: list[Slot] = []
        self.size = 0

    def atoms(self, slot: Slot, length: int) -> np.ndarray:
        """The atom ids of ``slot`` (allocated on first use), one per index."""
        if slot not in self._offsets:
            self._offsets[slot] = (self.size, length)
            self._starts.append(self.size)
            self._slots.append(slot)
            self.size += length
        start, known = self._offsets[slot]
        if known != length:
            raise ValueError(f"{slot} was allocated with {known} atoms, asked for {length}")
        return np.arange(start, start + length, dtype=np.int64)

    def slots(self) -> list[Slot]:
        """Every allocated slot, in allocation order."""
        return list(self._slots)

    def range_of(self, slot: Slot) -> tuple[int, int]:
        """``(first atom id, number of atoms)`` of ``slot``."""
        return self._offsets[slot]

    def locate(self, atom: int) -> tuple[Slot, int]:
        """The slot and index of an atom id."""
        position = int(np.searchsorted(self._starts, atom, side="right")) - 1
        slot = self._slots[position]
        return slot, atom - self._offsets[slot][0]

    def locate_many(self, atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slot positions (into :meth:`slots`) and indices of many atom ids at once."""
        starts = np.asarray(self._starts, dtype=np.int64)
        positions = np.searchsorted(starts, atoms, side="right") - 1
        return positions, atoms - starts[positions]


class UnionFind:
    """Disjoint sets of atom ids with a "poisoned" flag (and reason) per set."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.poison: dict[int, str] = {}

    def grow(self, size: int) -> None:
        """Make sure ids ``0 .. size-1`` exist."""
        self.parent.extend(range(len(self.parent), size))

    def find(self, atom: int) -> int:
        """The representative of ``atom``'s set (with path halving)."""
        parent = self.parent
        while parent[atom] != atom:
            parent[atom] = parent[parent[atom]]
            atom = parent[atom]
        return atom

    def union(self, a: int, b: int) -> int:
        """Merge the sets of ``a`` and ``b``; a poisoned set poisons the merged one."""
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return root_a
        if root_a > root_b:
            root_a, root_b = root_b, root_a
        self.parent[root_b] = root_a
        if root_b in self.poison:
            self.poison.setdefault(root_a, self.poison.pop(root_b))
        return root_a

    def union_arrays(self, first: np.ndarray, second: np.ndarray) -> None:
        """Union ``first[i]`` with ``second[i]`` for every position where both are atoms (>= 0)."""
        pairs = np.stack([first.ravel(), second.ravel()], axis=1)
        pairs = pairs[(pairs >= 0).all(axis=1)]
        for a, b in np.unique(pairs, axis=0):
            if a != b:
                self.union(int(a), int(b))

    def union_all(self, atoms: np.ndarray) -> None:
        """Merge every atom of ``atoms`` (ignoring negatives) into one set."""
        valid = np.unique(atoms[atoms >= 0])
        for atom in valid[1:]:
            self.union(int(valid[0]), int(atom))

    def poison_atoms(self, atoms: np.ndarray, reason: str) -> None:
        """Mark the sets of ``atoms`` (ignoring negatives) as not removable, keeping the first reason."""
        for atom in np.unique(atoms[atoms >= 0]):
            self.poison.setdefault(self.find(int(atom)), reason)

    def roots(self, size: int) -> np.ndarray:
        """The representative of every atom id ``0 .. size-1``."""
        return np.fromiter((self.find(a) for a in range(size)), dtype=np.int64, count=size)

    def reason(self, atom: int) -> str | None:
        """Why ``atom``'s set cannot be removed, or ``None``."""
        return self.poison.get(self.find(atom))
