"""The values a dedup stage compares, read from the clip table (`<out>/clips.parquet/<video id>.parquet`), one
video at a time and only the stage's column: float vectors as float32 rows, hex hashes as uint64. The JSON
rows in `.parts` decide which clips are compared; their values are never gathered as Python lists, so memory
is the index plus one block.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from orchestrator.dataset.dedup import BLOCK
from orchestrator.dataset.dedup_phash import parse_hashes
from orchestrator.dataset.table import TABLE_DIR
from orchestrator.errors import PipelineError


class TableValues:
    """One column (`<stage>.<field>`) of a folder's clip table, read per video."""

    def __init__(self, out_dir: Path, column: str, method: str) -> None:
        self.dir, self.column, self.method = out_dir / TABLE_DIR, column, method

    def blocks(self, videos: Iterable[tuple[str, list[int]]]) -> Iterator[np.ndarray]:
        """The values at these row positions of these videos, in order, in blocks of about BLOCK (a video's
        values are never split; the index's result does not depend on block sizes)."""
        pending: list[np.ndarray] = []
        size = 0
        for video_id, positions in videos:
            if not positions:
                continue
            pending.append(self.values(video_id, positions))
            size += len(positions)
            if size >= BLOCK:
                yield np.concatenate(pending)
                pending, size = [], 0
        if pending:
            yield np.concatenate(pending)

    def values(self, video_id: str, positions: list[int]) -> np.ndarray:
        """A video's values at these row positions: (n, d) float32, or (n,) uint64 hashes."""
        path = self.dir / f"{video_id}.parquet"
        try:
            column = pq.read_table(path, columns=[self.column]).column(0).combine_chunks()
        except (OSError, pa.ArrowException) as exc:
            raise PipelineError(f"cannot read column {self.column!r} of {path} ({exc}); rerun, which rebuilds the "
                                f"table part from .parts/{video_id}.json") from None
        if len(column) <= max(positions):
            raise PipelineError(f"{path} holds fewer rows than .parts/{video_id}.json; rerun, which rebuilds it")
        taken = column.take(pa.array(positions, pa.int64()))
        if self.method == "phash":
            return parse_hashes(taken.to_pylist())
        return vectors(taken)


def vectors(values: pa.Array) -> np.ndarray:
    """List values of one length as (n, d) float32; a ValueError when they are not."""
    kind = values.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise ValueError(f"a column of {kind}")
    if values.null_count:
        raise ValueError("a value is null in the clip table")
    lengths = set(pc.list_value_length(values).to_pylist()) if not pa.types.is_fixed_size_list(kind) \
        else {kind.list_size}
    if len(lengths) != 1:
        raise ValueError(f"lengths {sorted(lengths)}")
    flat = values.flatten().to_numpy(zero_copy_only=False)
    if not np.issubdtype(flat.dtype, np.number):
        raise ValueError(f"values of {kind.value_type}")
    return flat.astype(np.float32, copy=False).reshape(len(values), lengths.pop())
