"""Near-duplicate removal over items in a fixed order: the first item of a group is kept, and each later item
near an item already kept becomes a duplicate of the earliest such kept item. Items kept earlier (by an
earlier run, or an earlier block) always come first, so a later run dedups its items against them.

    kept index (earlier runs, earlier blocks)
        ▲ kept ones join            │ search
    candidates, in order, in blocks ─▶ duplicates of the index ─▶ the rest: earlier neighbours within the
        block ─▶ greedy in order (a candidate near an earlier kept one is its duplicate, else it is kept)

The greedy result depends only on which pairs are near and on the order, never on block sizes: over one
index (phash, or semantic with the same centroids) deduping in batches gives what one pass over everything
gives, and a pass interrupted after some of its results were applied reaches the same kept set when redone
(similarities are float32 matrix products, so a pair within float32 rounding, ~1e-6, of the threshold may be
judged either way by another BLAS build). Memory: the index (the kept items) plus one block and tiles of at
most TILE values; never an N×N matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

NONE = -1
"""Not a duplicate (kept)."""
BLOCK = 16384
"""Candidates judged together: large enough for efficient matrix products against the index."""
TILE = 1 << 22
"""The most similarities (or distances) held at once in one tile."""
NEIGHBOURS = 8
"""Earlier near neighbours remembered per candidate within its block; a candidate whose remembered ones all
turn out to be duplicates, while it had more, is checked again against every kept item of the block."""


@dataclass(frozen=True)
class Neighbours:
    """Per row (CSR): its earliest near rows that come before it (ascending), and whether it had more."""

    indptr: np.ndarray
    indices: np.ndarray
    truncated: np.ndarray


class NearIndex(Protocol):
    """Kept items, searchable by nearness; `prepare` turns a raw block into what the other methods take."""

    def prepare(self, block: np.ndarray) -> Any: ...

    def search(self, block: Any) -> np.ndarray:
        """The earliest kept id near each row of the block, or NONE."""

    def neighbours(self, block: Any, rows: np.ndarray) -> Neighbours:
        """Near pairs among `rows` (positions in the block), as positions into `rows`."""

    def first_near(self, block: Any, row: int, among: np.ndarray) -> int:
        """The first of `among` (block positions, ascending) near `row`, or NONE."""

    def add(self, block: Any, rows: np.ndarray, ids: np.ndarray) -> None:
        """Keep these rows of the block under these ids (ascending, above every id kept before)."""


def add_kept(index: NearIndex, blocks: Iterable[np.ndarray], first_id: int = 0) -> int:
    """Put already-kept items into the index without judging them; returns the next free id."""
    next_id = first_id
    for raw in blocks:
        block = index.prepare(raw)
        index.add(block, np.arange(len(raw)), np.arange(next_id, next_id + len(raw)))
        next_id += len(raw)
    return next_id


def judge(index: NearIndex, blocks: Iterable[np.ndarray], first_id: int) -> np.ndarray:
    """For each candidate (ids first_id, first_id + 1, ... in order): the id of the kept item it duplicates, or
    NONE when it is kept (and joins the index)."""
    results = []
    next_id = first_id
    for raw in blocks:
        results.append(_judge_block(index, raw, next_id))
        next_id += len(raw)
    return np.concatenate(results) if results else np.empty(0, np.int64)


def _judge_block(index: NearIndex, raw: np.ndarray, first_id: int) -> np.ndarray:
    block = index.prepare(raw)
    dup = index.search(block)
    survivors = np.flatnonzero(dup == NONE)
    among_block = index.neighbours(block, survivors)

    def recheck(i: int, kept: np.ndarray) -> int:
        hit = index.first_near(block, int(survivors[i]), survivors[kept])
        return NONE if hit == NONE else int(np.searchsorted(survivors, hit))

    local = greedy(among_block, recheck)
    duplicate = local != NONE
    dup[survivors[duplicate]] = first_id + survivors[local[duplicate]]
    kept = survivors[~duplicate]
    index.add(block, kept, first_id + kept)
    return dup


def greedy(neighbours: Neighbours, recheck: Callable[[int, np.ndarray], int]) -> np.ndarray:
    """In order, each row is a duplicate of its first earlier neighbour still kept, else kept. A truncated row
    with no kept neighbour remembered asks `recheck(row, kept rows before it)`."""
    n = len(neighbours.indptr) - 1
    dup = np.full(n, NONE, np.int64)
    kept = np.ones(n, bool)
    starts, ends = neighbours.indptr[:-1], neighbours.indptr[1:]
    for i in np.flatnonzero((ends > starts) | neighbours.truncated):
        earlier = neighbours.indices[starts[i]:ends[i]]
        hits = earlier[kept[earlier]]
        if hits.size:
            dup[i] = hits[0]
        elif neighbours.truncated[i]:
            dup[i] = recheck(int(i), np.flatnonzero(kept[:i]))
        kept[i] = dup[i] == NONE
    return dup


class PairCollector:
    """Gathers (later, earlier) near pairs tile by tile, keeping only each later row's NEIGHBOURS earliest, so
    a block of near-identical items costs no more memory than a block of distinct ones."""

    def __init__(self, n: int) -> None:
        self.n, self.limit = n, NEIGHBOURS
        self.later: list[np.ndarray] = []
        self.earlier: list[np.ndarray] = []
        self.truncated = np.zeros(n, bool)

    def add(self, later: np.ndarray, earlier: np.ndarray) -> None:
        later, earlier = self._earliest(later, earlier)
        self.later.append(later)
        self.earlier.append(earlier)

    def _earliest(self, later: np.ndarray, earlier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.lexsort((earlier, later))
        later, earlier = later[order], earlier[order]
        first = np.searchsorted(later, later)
        keep = np.arange(len(later)) - first < self.limit
        self.truncated[later[~keep]] = True
        return later[keep], earlier[keep]

    def finish(self) -> Neighbours:
        later = np.concatenate(self.later) if self.later else np.empty(0, np.int64)
        earlier = np.concatenate(self.earlier) if self.earlier else np.empty(0, np.int64)
        later, earlier = self._earliest(later, earlier)
        indptr = np.zeros(self.n + 1, np.int64)
        np.cumsum(np.bincount(later, minlength=self.n), out=indptr[1:])
        return Neighbours(indptr, earlier, self.truncated)


def groups(keys: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(key, positions ascending) for each distinct key."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    for chunk in np.split(order, bounds) if len(order) else []:
        yield int(keys[chunk[0]]), chunk


def row_chunks(rows: int, cols: int) -> Iterator[slice]:
    """Slices of `rows` such that a chunk times `cols` stays within TILE."""
    step = max(1, TILE // max(cols, 1))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def first_true(mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per row of `mask`, the id of its first True column, or NONE."""
    found = mask.any(axis=1)
    return np.where(found, ids[mask.argmax(axis=1)], NONE)


def merge_first(current: np.ndarray, found: np.ndarray) -> np.ndarray:
    """The earlier of two hits per row (NONE counts as none)."""
    both = (current != NONE) & (found != NONE)
    return np.where(both, np.minimum(current, found), np.maximum(current, found))


class ChunkedStore:
    """Kept items of one group (a cluster, or all phash values) in insertion order, as a few arrays: appending
    a block costs one array, and arrays are merged once there are too many, so searches stay few and large."""

    MAX_CHUNKS = 8

    def __init__(self) -> None:
        self.values: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []

    def append(self, values: np.ndarray, ids: np.ndarray) -> None:
        if not len(ids):
            return
        self.values.append(values)
        self.ids.append(ids)
        if len(self.values) > self.MAX_CHUNKS:
            self.values, self.ids = [np.concatenate(self.values)], [np.concatenate(self.ids)]

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return zip(self.values, self.ids, strict=True)

    def __len__(self) -> int:
        return sum(len(i) for i in self.ids)
