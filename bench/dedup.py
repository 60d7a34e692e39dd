"""Semantic dedup at scale: 1M synthetic 768-d float32 vectors with planted near-duplicates, against a
brute-force numpy baseline measured in the same run on a 100k subset.

    generate (a child): N vectors around 2000 topics (as embeddings cluster), 10% without a topic, and 1% of
        them planted as near copies (cosine ~0.98) of another, at random places ─▶ vectors.f32 + pairs
    ours (a child per size): orchestrator.dataset dedup, k-means centroids on an even sample, the vectors
        read from the file in blocks (never all in memory) ─▶ duplicates, wall time, peak RSS
    brute force (a child, 100k only): every vector against every kept one before it, in blocks of 1024,
        all vectors in memory ─▶ the same, exact

Recall: planted pairs whose later vector is marked a duplicate of the earlier (or of what the earlier
duplicates); precision: marked duplicates that are planted ones. Peak memory is each child's peak RSS, which
includes the interpreter and numpy (~60 MB). Both sides use the same BLAS: benchmark with a current kernel,

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python bench/dedup.py [--n 1000000] [--subset 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DIM = 768
THRESHOLD = 0.95
TOPICS = 2000
PLANTED = 0.01
READ_BLOCK = 16384
BRUTE_BLOCK = 1024


def generate(folder: Path, n: int) -> None:
    """vectors.f32 (n × DIM) and pairs.npy (earlier, later) of the planted copies."""
    rng = np.random.default_rng(20)
    topics = rng.standard_normal((TOPICS, DIM)).astype(np.float32)
    copies = int(n * PLANTED)
    positions = rng.permutation(n)
    originals, planted = positions[:copies], positions[copies:2 * copies]
    with (folder / "vectors.f32").open("wb") as out:
        for start in range(0, n, READ_BLOCK):
            rows = np.arange(start, min(start + READ_BLOCK, n))
            out.write(_base_vectors(rows, topics).tobytes())
    x = np.memmap(folder / "vectors.f32", np.float32, "r+", shape=(n, DIM))
    noise = np.random.default_rng(21).standard_normal((copies, DIM)).astype(np.float32)
    x[planted] = x[originals] + 0.2 * noise / np.sqrt(DIM) * np.linalg.norm(x[originals], axis=1, keepdims=True)
    x.flush()
    np.save(folder / "pairs.npy", np.sort(np.stack([originals, planted], axis=1), axis=1))


def _base_vectors(rows: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """Each row's vector, from a generator seeded by its block: a topic plus as much noise, or noise alone."""
    rng = np.random.default_rng([22, int(rows[0])])
    noise = rng.standard_normal((len(rows), DIM)).astype(np.float32)
    topic = topics[rng.integers(0, TOPICS, len(rows))] * (rng.random(len(rows)) > 0.1)[:, None]
    return topic + noise


def blocks(path: Path, n: int) -> Iterator[np.ndarray]:
    """The first n vectors of the file, READ_BLOCK rows at a time, read (not mapped) into fresh arrays."""
    with path.open("rb") as handle:
        for start in range(0, n, READ_BLOCK):
            rows = min(READ_BLOCK, n - start)
            yield np.fromfile(handle, np.float32, rows * DIM).reshape(rows, DIM)


def ours(path: Path, n: int) -> np.ndarray:
    from orchestrator.dataset.dedup import judge
    from orchestrator.dataset.dedup_kmeans import cluster_count, sample_positions, train_centroids, unit_rows
    from orchestrator.dataset.dedup_semantic import SemanticIndex

    k = cluster_count(n)
    wanted = sample_positions(n, k)
    sample, start = [], 0
    for block in blocks(path, n):
        inside = wanted[(wanted >= start) & (wanted < start + len(block))] - start
        sample.append(block[inside])
        start += len(block)
    centroids = train_centroids(unit_rows(np.concatenate(sample)), k)
    del sample
    return judge(SemanticIndex(centroids, THRESHOLD), blocks(path, n), 0)


def brute(path: Path, n: int) -> np.ndarray:
    """The plain numpy way: all vectors in memory, each block against every vector kept before it."""
    x = np.fromfile(path, np.float32, n * DIM).reshape(n, DIM)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kept, kept_ids, m = np.empty_like(x), np.empty(n, np.int64), 0
    dup = np.full(n, -1, np.int64)
    for start in range(0, n, BRUTE_BLOCK):
        block = x[start:start + BRUTE_BLOCK]
        near = block @ kept[:m].T >= THRESHOLD
        hit = near.any(axis=1)
        if hit.any():
            dup[start:start + len(block)][hit] = kept_ids[near[hit].argmax(axis=1)]
        inner = block @ block.T >= THRESHOLD
        local_kept = np.zeros(len(block), bool)
        for i in np.flatnonzero(~hit):
            earlier = np.flatnonzero(inner[i, :i] & local_kept[:i])
            if earlier.size:
                dup[start + i] = start + earlier[0]
            else:
                local_kept[i] = True
                kept[m], kept_ids[m], m = block[i], start + i, m + 1
    return dup


def child(kind: str, folder: Path, n: int) -> None:
    started = time.perf_counter()
    if kind == "generate":
        generate(folder, n)
    else:
        np.save(folder / f"{kind}-{n}.npy", (ours if kind == "ours" else brute)(folder / "vectors.f32", n))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": time.perf_counter() - started, "peak_mb": peak_mb}))


def measure(kind: str, folder: Path, n: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", kind, "--folder", str(folder), "--n", str(n)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} ({n}) failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def quality(dup: np.ndarray, pairs: np.ndarray) -> tuple[float, float]:
    """(recall, precision) of the planted pairs among the first len(dup) vectors."""
    pairs = pairs[pairs[:, 1] < len(dup)]
    earlier, later = pairs[:, 0], pairs[:, 1]
    found = (dup[later] == earlier) | ((dup[later] != -1) & (dup[later] == dup[earlier]))
    marked = np.flatnonzero(dup != -1)
    partner = np.full(len(dup), -2, np.int64)
    partner[later], partner[earlier] = earlier, later
    other = partner[marked]
    true = (other == dup[marked]) | ((other >= 0) & (dup[np.maximum(other, 0)] == dup[marked]))
    return float(found.mean()), float(true.mean()) if marked.size else 1.0


def blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS: threadpoolctl not installed (cannot tell which kernel)"
    return "BLAS: " + "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                                f"threads={i.get('num_threads')}" for i in threadpool_info())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--subset", type=int, default=100_000)
    parser.add_argument("--child", choices=("generate", "ours", "brute"))
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.folder, args.n)
    np.ones((8, 8)) @ np.ones((8, 8))
    print(blas(), f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        folder = Path(tmp)
        made = measure("generate", folder, args.n)
        pairs = np.load(folder / "pairs.npy")
        print(f"generated {args.n} x {DIM} vectors, {len(pairs)} planted pairs in {made['wall_s']:.1f} s")
        runs = {(kind, n): measure(kind, folder, n) for kind, n in
                (("brute", args.subset), ("ours", args.subset), ("ours", args.n))}
        for (kind, n), figures in runs.items():
            recall, precision = quality(np.load(folder / f"{kind}-{n}.npy"), pairs)
            print(f"{kind:5s} n={n:>8d}: {figures['wall_s']:8.1f} s, peak RSS {figures['peak_mb']:7.0f} MB, "
                  f"recall {recall:.4f}, precision {precision:.4f}")
        same = np.mean(np.load(folder / f"ours-{args.subset}.npy") == np.load(folder / f"brute-{args.subset}.npy"))
        small, large, peer = runs[("ours", args.subset)], runs[("ours", args.n)], runs[("brute", args.subset)]
        recall, precision = quality(np.load(folder / f"ours-{args.n}.npy"), pairs)
        print(f"RATIO brute-force wall / ours wall (n={args.subset}) = {peer['wall_s'] / small['wall_s']:.1f}")
        print(f"RATIO brute-force peak RSS / ours peak RSS (n={args.subset}) = "
              f"{peer['peak_mb'] / small['peak_mb']:.2f}")
        print(f"RATIO ours decisions equal to brute force (n={args.subset}) = {same:.4f}")
        print(f"RATIO recall (n={args.n}) = {recall:.4f}   (target >= 0.99)")
        print(f"RATIO precision (n={args.n}) = {precision:.4f}   (target >= 0.99)")
        print(f"RATIO peak RSS (n={args.n}) / 4 GB = {large['peak_mb'] / 4096:.2f}   (target <= 1.0; "
              f"{large['peak_mb']:.0f} MB, {large['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
