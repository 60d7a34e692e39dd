"""Spherical k-means for the semantic dedup index: centroids of unit vectors, trained on an even sample.

Deterministic: the sample is every n-th vector, the starting centroids a seeded choice of it, and a fixed
number of rounds. Small sets (up to EXACT_UP_TO vectors) get one cluster, so their dedup is exact.
"""

from __future__ import annotations

import math

import numpy as np

EXACT_UP_TO = 20_000
"""Up to this many vectors, one cluster: every pair is compared."""
MAX_CLUSTERS = 4096
SAMPLE_PER_CLUSTER = 64
ROUNDS = 10
ASSIGN_BLOCK = 8192


def cluster_count(n: int) -> int:
    """About sqrt(n) clusters of about sqrt(n) vectors each: searching a cluster costs about what assigning to
    the centroids costs."""
    return 1 if n <= EXACT_UP_TO else min(MAX_CLUSTERS, math.isqrt(n))


def sample_positions(n: int, k: int) -> np.ndarray:
    """Evenly spread positions of the training sample among n vectors."""
    size = min(n, k * SAMPLE_PER_CLUSTER)
    return np.linspace(0, n - 1, size).astype(np.int64) if size else np.empty(0, np.int64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); an all-zero row stays zero and is near nothing."""
    x = np.asarray(x, np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.maximum(norms, np.float32(1e-30))[:, None]


def train_centroids(sample: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k unit centroids for the (unit) sample rows; a cluster that empties keeps its centroid."""
    if len(sample) <= k:
        return unit_rows(sample)
    centroids = sample[np.sort(np.random.default_rng(seed).choice(len(sample), k, replace=False))]
    for _ in range(ROUNDS):
        sums = np.zeros_like(centroids)
        for start in range(0, len(sample), ASSIGN_BLOCK):
            part = sample[start:start + ASSIGN_BLOCK]
            np.add.at(sums, (part @ centroids.T).argmax(axis=1), part)
        empty = ~sums.any(axis=1)
        sums[empty] = centroids[empty]
        centroids = unit_rows(sums)
    return centroids


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, probes: int) -> np.ndarray:
    """Per unit row, its `probes` nearest centroids, nearest first: (n, probes) int64."""
    if len(centroids) == 1:
        return np.zeros((len(x), 1), np.int64)
    sims = x @ centroids.T
    if probes == 1:
        return sims.argmax(axis=1)[:, None]
    top = np.argpartition(-sims, probes - 1, axis=1)[:, :probes]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.int64)
