"""A sum tree over replay priorities: proportional sampling and batched priority updates in O(B log n).

Prioritized replay (Schaul et al. 2016) as the original DecQN agent used it (reverb's prioritized table,
priority exponent 0.6, importance exponent 0.2): transition i is drawn with probability p_i / sum p, new
transitions enter with the largest priority seen so far. Every operation is a handful of numpy ops per tree
level over the whole batch, never a Python loop over the batch.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """Leaves = priorities of ``capacity`` slots; each internal node = left child + right child.

    Internal nodes are always recomputed from their two children (never adjusted by differences), so a tree
    rebuilt from its leaves equals the incrementally updated one bit for bit (a resumed run samples the same).
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.width = 1 << max(0, (self.capacity - 1).bit_length())  # leaves padded to a power of two
        self.tree = np.zeros(2 * self.width, np.float64)
        self.max_priority = 1.0

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def leaves(self, n: int) -> np.ndarray:
        return self.tree[self.width : self.width + n]

    def set(self, idx: np.ndarray, priority: np.ndarray | float) -> None:
        """Set the priorities of slots ``idx`` (repeats: the last one wins) and refresh their ancestors."""
        node = np.asarray(idx, np.int64) + self.width
        self.tree[node] = priority
        node = np.unique(node >> 1)
        while node[0] >= 1:
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]
            if node[0] == 1:
                break
            node = np.unique(node >> 1)

    def rebuild(self, leaves: np.ndarray) -> None:
        """All levels from ``leaves`` (the first len(leaves) slots; the rest are empty)."""
        self.tree[:] = 0.0
        self.tree[self.width : self.width + len(leaves)] = leaves
        lo = self.width
        while lo > 1:
            parents = np.arange(lo >> 1, lo)
            self.tree[parents] = self.tree[2 * parents] + self.tree[2 * parents + 1]
            lo >>= 1

    def sample(self, rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
        """``batch`` slot indices, stratified: one uniform draw in each of ``batch`` equal slices of the total."""
        u = (np.arange(batch) + rng.random(batch)) * (self.total / batch)
        node = np.ones(batch, np.int64)
        while node[0] < self.width:
            left = 2 * node
            go_right = u >= self.tree[left]
            u = np.where(go_right, u - self.tree[left], u)
            node = left + go_right
        return np.minimum(node - self.width, size - 1)  # float round-off at the very end of the total
