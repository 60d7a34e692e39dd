"""Semantic near-duplicates: cosine similarity of float vectors (embeddings) at or above a threshold.

Why k-means clusters and not an exact scan or a graph index: an exact scan of 1M × 768-d vectors is ~10^15
multiply-adds (hours on two cores), and graph indexes (HNSW) answer "nearest k", not "everything above a
threshold", and are not deterministic under incremental inserts. Clustering, as both NVIDIA curators do,
compares a vector only with the vectors of its few nearest clusters, with large matrix products; unlike them
(one cluster each), a candidate also looks in its PROBES nearest clusters, so a pair split by a cluster
boundary is still found. Centroids are trained on the clips of one pass and kept until the clips outgrow them
(see dedup_stage): the same inputs in the same passes give the same result, but passes cut elsewhere may
train other centroids and compare other pairs; up to EXACT_UP_TO vectors there is one cluster: exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.dataset.dedup import (
    NONE,
    ChunkedStore,
    Neighbours,
    PairCollector,
    first_true,
    groups,
    merge_first,
    row_chunks,
)
from orchestrator.dataset.dedup_kmeans import nearest_centroids, unit_rows

PROBES = 8
"""Nearest clusters a candidate searches; a kept vector lives in its nearest one only."""


@dataclass(frozen=True)
class SemanticBlock:
    """A block of unit vectors with each one's nearest clusters (home first)."""

    vectors: np.ndarray
    probes: np.ndarray

    @property
    def home(self) -> np.ndarray:
        return self.probes[:, 0]


class SemanticIndex:
    """Kept unit vectors grouped by nearest centroid; `threshold` is the cosine at which two are duplicates."""

    def __init__(self, centroids: np.ndarray, threshold: float, probes: int = PROBES) -> None:
        self.centroids = unit_rows(centroids)
        self.threshold = np.float32(threshold)
        self.probes = min(probes, len(self.centroids))
        self.clusters = [ChunkedStore() for _ in self.centroids]

    def prepare(self, block: np.ndarray) -> SemanticBlock:
        vectors = unit_rows(block)
        return SemanticBlock(vectors, nearest_centroids(vectors, self.centroids, self.probes))

    def search(self, block: SemanticBlock) -> np.ndarray:
        hits = np.full(len(block.vectors), NONE, np.int64)
        rows_of = np.repeat(np.arange(len(block.vectors)), self.probes)
        for cluster, positions in groups(block.probes.ravel()):
            rows = rows_of[positions]
            for values, ids in self.clusters[cluster].chunks():
                for part in row_chunks(len(rows), len(ids)):
                    near = block.vectors[rows[part]] @ values.T >= self.threshold
                    hits[rows[part]] = merge_first(hits[rows[part]], first_true(near, ids))
        return hits

    def neighbours(self, block: SemanticBlock, rows: np.ndarray) -> Neighbours:
        """A later row sees an earlier one when the earlier's home is among the later's probes (as in search)."""
        vectors, probes = block.vectors[rows], block.probes[rows]
        homes = dict(groups(probes[:, 0]))
        collector = PairCollector(len(rows))
        rows_of = np.repeat(np.arange(len(rows)), self.probes)
        for cluster, positions in groups(probes.ravel()):
            later, earlier = rows_of[positions], homes.get(cluster)
            if earlier is None:
                continue
            for part in row_chunks(len(later), len(earlier)):
                near = vectors[later[part]] @ vectors[earlier].T >= self.threshold
                near &= earlier[None, :] < later[part, None]
                r, c = np.nonzero(near)
                collector.add(later[part][r], earlier[c])
        return collector.finish()

    def first_near(self, block: SemanticBlock, row: int, among: np.ndarray) -> int:
        visible = among[np.isin(block.home[among], block.probes[row])]
        near = np.flatnonzero(block.vectors[visible] @ block.vectors[row] >= self.threshold)
        return int(visible[near[0]]) if near.size else NONE

    def add(self, block: SemanticBlock, rows: np.ndarray, ids: np.ndarray) -> None:
        for cluster, positions in groups(block.home[rows]):
            self.clusters[cluster].append(block.vectors[rows[positions]], ids[positions])

    def __len__(self) -> int:
        return sum(len(c) for c in self.clusters)
