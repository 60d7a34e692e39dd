"""Perceptual-hash near-duplicates: 64-bit hashes within a Hamming distance of each other.

Exact, by blocked XOR + popcount: a comparison is one machine word, so a scan of every kept hash runs at
~10^9 pairs a second and needs no index whose recall could fall short (multi-index hashing would prune more,
but pHash values of similar frames crowd a few buckets, where it prunes little).
"""

from __future__ import annotations

import numpy as np

from orchestrator.dataset.dedup import (
    NONE,
    ChunkedStore,
    Neighbours,
    PairCollector,
    first_true,
    merge_first,
    row_chunks,
)
from orchestrator.errors import PipelineError


def parse_hashes(values: list[str]) -> np.ndarray:
    """Hex strings (up to 16 digits) as uint64; a bad value is a PipelineError naming it."""
    try:
        return np.array([int(v, 16) for v in values], np.uint64)
    except (TypeError, ValueError, OverflowError):
        bad = next(v for v in values if not _is_hash(v))
        raise PipelineError(f"{bad!r} is not a 64-bit hash in hex (16 hex digits)") from None


def _is_hash(value: object) -> bool:
    try:
        return isinstance(value, str) and 0 <= int(value, 16) < 1 << 64
    except ValueError:
        return False


class PhashIndex:
    """Kept hashes in insertion order; two within `max_distance` bits are duplicates."""

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        self.store = ChunkedStore()

    def prepare(self, block: np.ndarray) -> np.ndarray:
        return np.asarray(block, np.uint64)

    def _near(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.bitwise_count(a[:, None] ^ b[None, :]) <= self.max_distance

    def search(self, block: np.ndarray) -> np.ndarray:
        hits = np.full(len(block), NONE, np.int64)
        for values, ids in self.store.chunks():
            for part in row_chunks(len(block), len(ids)):
                hits[part] = merge_first(hits[part], first_true(self._near(block[part], values), ids))
        return hits

    def neighbours(self, block: np.ndarray, rows: np.ndarray) -> Neighbours:
        values = block[rows]
        positions = np.arange(len(rows))
        collector = PairCollector(len(rows))
        for part in row_chunks(len(rows), len(rows)):
            near = self._near(values[part], values) & (positions[None, :] < positions[part, None])
            r, c = np.nonzero(near)
            collector.add(positions[part][r], c)
        return collector.finish()

    def first_near(self, block: np.ndarray, row: int, among: np.ndarray) -> int:
        near = np.flatnonzero(np.bitwise_count(block[among] ^ block[row]) <= self.max_distance)
        return int(among[near[0]]) if near.size else NONE

    def add(self, block: np.ndarray, rows: np.ndarray, ids: np.ndarray) -> None:
        self.store.append(block[rows], ids)

    def __len__(self) -> int:
        return len(self.store)
