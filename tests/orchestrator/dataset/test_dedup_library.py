"""The dedup library on small sets: planted near-duplicates are found and distinct items kept, the result is
the greedy one (first kept, each later one a duplicate of the earliest kept item near it) whatever the block
sizes, and a second run over new items dedups them against the first run's kept ones."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.dataset import dedup
from orchestrator.dataset.dedup import NONE, add_kept, judge
from orchestrator.dataset.dedup_kmeans import cluster_count, sample_positions, train_centroids, unit_rows
from orchestrator.dataset.dedup_phash import PhashIndex
from orchestrator.dataset.dedup_semantic import SemanticIndex

THRESHOLD = 0.95


def greedy_reference(x: np.ndarray, threshold: float) -> np.ndarray:
    """The definition, one item at a time over every pair: what the blocked index must reproduce."""
    x = unit_rows(x)
    kept: list[int] = []
    out = np.full(len(x), NONE, np.int64)
    for i in range(len(x)):
        near = [k for k in kept if x[i] @ x[k] >= threshold]
        if near:
            out[i] = near[0]
        else:
            kept.append(i)
    return out


def grouped(rng: np.random.Generator, groups: int, size: int, d: int = 16, spread: float = 0.22) -> np.ndarray:
    """Groups of near vectors (some pairs within a group past the threshold, some not), shuffled."""
    centres = rng.standard_normal((groups, d))
    x = np.repeat(centres, size, axis=0) + spread * rng.standard_normal((groups * size, d))
    return x[rng.permutation(len(x))].astype(np.float32)


def exact_index() -> SemanticIndex:
    return SemanticIndex(np.ones((1, 16), np.float32), THRESHOLD)


def blocks(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i:i + size] for i in range(0, len(x), size)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semantic_dedup_is_the_greedy_definition_in_any_block_size(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    x = grouped(rng, groups=40, size=15)  # groups larger than NEIGHBOURS: remembered neighbours run out
    expected = greedy_reference(x, THRESHOLD)
    assert 100 < (expected != NONE).sum() < len(x) - 80  # groups split into several kept ones
    monkeypatch.setattr(dedup, "NEIGHBOURS", 2)
    for size in (len(x), 97, 7):
        assert judge(exact_index(), blocks(x, size), 0).tolist() == expected.tolist()


def test_a_candidate_whose_remembered_neighbours_were_all_duplicates_is_checked_against_every_kept_one() -> None:
    """Unit vectors by angle: f at 0°, ten at 10° (duplicates of f), g at 30° (kept), c at 20°: c's earliest
    neighbours are the ten duplicates; only a full check finds that g, kept and near, makes c a duplicate."""
    angles = [0.0] + [10.0] * 10 + [30.0, 20.0]
    x = np.array([[np.cos(np.radians(a)), np.sin(np.radians(a))] for a in angles], np.float32)
    index = SemanticIndex(np.ones((1, 2), np.float32), np.cos(np.radians(15)))
    result = judge(index, [x], 0)
    assert result.tolist() == [NONE] + [0] * 10 + [NONE, 11]


def test_planted_near_duplicates_are_found_and_distinct_vectors_kept_in_the_clustered_regime() -> None:
    rng = np.random.default_rng(7)
    n, d = 24_000, 32
    topics = rng.standard_normal((200, d))
    x = (topics[rng.integers(0, 200, n)] + rng.standard_normal((n, d))).astype(np.float32)
    originals = rng.choice(n // 2, 300, replace=False)
    copies = n // 2 + rng.choice(n // 2, 300, replace=False)
    x[copies] = x[originals] + 0.05 * rng.standard_normal((300, d)).astype(np.float32)
    k = cluster_count(n)
    assert k > 1
    index = SemanticIndex(train_centroids(unit_rows(x[sample_positions(n, k)]), k), THRESHOLD)
    result = judge(index, blocks(x, 5000), 0)
    found = {(int(i), int(result[i])) for i in np.flatnonzero(result != NONE)}
    assert found == set(zip(copies.tolist(), originals.tolist(), strict=True))


def test_a_second_run_dedups_its_items_against_the_first_runs_kept_ones() -> None:
    rng = np.random.default_rng(3)
    x = grouped(rng, groups=30, size=6)
    whole = greedy_reference(x, THRESHOLD)
    first, second = x[:100], x[100:]
    first_result = judge(exact_index(), [first], 0)
    kept_ids = np.flatnonzero(first_result == NONE)
    index = exact_index()
    next_id = add_kept(index, [first[kept_ids]])
    again = judge(index, blocks(second, 13), next_id)
    mapped = np.where(again == NONE, NONE, np.where(again < next_id, kept_ids[np.minimum(again, next_id - 1)],
                                                    again - next_id + 100))
    assert first_result.tolist() == whole[:100].tolist()
    assert mapped.tolist() == whole[100:].tolist()
    assert (whole[100:] != NONE).any() and (whole[100:][whole[100:] != NONE] < 100).any()


def test_same_inputs_give_the_same_centroids_and_the_same_kept_set() -> None:
    rng = np.random.default_rng(11)
    x = unit_rows(rng.standard_normal((3000, 16)).astype(np.float32))
    one, two = train_centroids(x, 40), train_centroids(x.copy(), 40)
    assert np.array_equal(one, two)
    y = grouped(rng, groups=50, size=8)
    assert np.array_equal(judge(SemanticIndex(one[:, :16], THRESHOLD), blocks(y, 64), 0),
                          judge(SemanticIndex(two[:, :16], THRESHOLD), blocks(y, 64), 0))


def test_phash_dedup_finds_hashes_within_the_distance_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 1 << 63, 2000, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, bits, replace=False))) for bits in (2, 6, 7, 12)]
    planted = np.array([hashes[i] ^ flips[i % 4] for i in range(40)], np.uint64)
    everything = np.concatenate([hashes, planted])
    result = judge(PhashIndex(6), blocks(everything, 300), 0)
    assert [int(result[2000 + i]) for i in range(40)] == [i if i % 4 < 2 else NONE for i in range(40)]
    assert (result[:2000] == NONE).all()
