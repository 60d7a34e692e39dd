"""Within a run the dedup stage keeps its kept index from pass to pass (a pass reads only its new videos'
values from the clip table), and retrains centroids when the clips outgrow them: after every batch it holds
exactly what a run started on the folder then rebuilds from the table, so the marks are the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.dataset import dedup_kmeans
from orchestrator.dataset.dedup_writer import DedupingWriter
from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.items import VideoItem
from orchestrator.pipeline.media.video import VideoInput
from orchestrator.pipeline.output.writer import OutputWriter
from tests.orchestrator.dataset.dedup_folders import KEY, read_parts, write_part

VIDEOS, CLIPS = 40, 4
STAGE = {"name": "near", "dedup": {"column": "vec.embedding", "method": "semantic", "threshold": 0.97,
                                   "batch_videos": 1}}


def videos() -> dict[str, list[dict]]:
    """Clips drawn from 150 shots (with a little noise): about a hundred originals, the rest near copies."""
    rng = np.random.default_rng(4)
    shots = rng.standard_normal((150, 16))
    rows = {}
    for v in range(VIDEOS):
        video_id = f"v{v:02d}"
        rows[video_id] = [
            {"clip_id": f"{video_id}_{i:04d}", "video_id": video_id, "video": f"/videos/{video_id}.mp4",
             "clip_index": i, "start_frame": i * 10, "end_frame": i * 10 + 9, "path": f"clips/{video_id}_{i:04d}.mp4",
             "kept": True, "filtered_by": None, "duplicate_of": None,
             "vec": {"embedding": (shots[rng.integers(0, 150)] + 0.01 * rng.standard_normal(16)).tolist()}}
            for i in range(CLIPS)]
    return rows


def add_video(out: Path, video_id: str, rows: list[dict]) -> None:
    OutputWriter(out, KEY, [])
    for row in rows:
        (out / row["path"]).write_bytes(b"clip")
    write_part(out, video_id, rows)


@pytest.fixture
def clustered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clustering from 10 clips instead of 20,000, so a few hundred clips train centroids and outgrow them."""
    monkeypatch.setattr(dedup_kmeans, "EXACT_UP_TO", 10)


def test_batches_in_one_run_mark_what_a_run_per_batch_marks(tmp_path: Path, clustered: None) -> None:
    rows = videos()
    one_run, run_per_batch = tmp_path / "one", tmp_path / "each"
    for video_id, video_rows in rows.items():
        add_video(one_run, video_id, video_rows)
    inputs = [VideoInput(Path(f"/videos/{v}.mp4"), v, f"print-{v}") for v in rows]
    writer = DedupingWriter(one_run, KEY, inputs, dedup=[StageConfig.model_validate(STAGE)])
    for seq, video in enumerate(inputs):
        writer.finish_video(VideoItem(seq, video, resumed=rows[video.video_id]), [])
    writer.finish_dedup()
    trained = np.load(one_run / ".parts" / "dedup" / "near.npy")
    for video_id, video_rows in rows.items():
        add_video(run_per_batch, video_id, video_rows)
        DedupingWriter(run_per_batch, KEY, [], dedup=[StageConfig.model_validate(STAGE)]).finish_dedup()
    marks = {v: [r["duplicate_of"] for r in part] for v, part in read_parts(one_run).items()}
    assert marks == {v: [r["duplicate_of"] for r in part] for v, part in read_parts(run_per_batch).items()}
    assert 40 < sum(m is not None for ms in marks.values() for m in ms) < VIDEOS * CLIPS - 60
    assert len(trained) >= 6  # retrained once the clips needed twice the first centroids
    assert np.array_equal(trained, np.load(run_per_batch / ".parts" / "dedup" / "near.npy"))
