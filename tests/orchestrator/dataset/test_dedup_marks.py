"""With `filter: false` a clip marked `duplicate_of` keeps its file but is no kept original: it is never judged
again nor compared with later clips, so a chain of near clips gets the same marks in one pass and in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestrator.dataset.dedup_writer import DedupingWriter
from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.output.writer import OutputWriter
from tests.orchestrator.dataset.dedup_folders import KEY, read_parts, write_part

STAGE = {"name": "near", "dedup": {"column": "vec.embedding", "method": "semantic", "threshold": 0.97,
                                   "filter": False}}
CHAIN = {"vx": 0.0, "vy": 10.0, "vz": 20.0}
"""Angles in degrees: cos 10° = 0.985 (near), cos 20° = 0.940 (not near), so vy ≈ vx, vz ≈ vy, vz not ≈ vx."""


def chain_row(video_id: str, degrees: float) -> dict:
    vector = np.zeros(8)
    vector[:2] = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {"clip_id": f"{video_id}_0000", "video_id": video_id, "video": f"/videos/{video_id}.mp4",
            "clip_index": 0, "start_frame": 0, "end_frame": 9, "path": f"clips/{video_id}_0000.mp4", "kept": True,
            "filtered_by": None, "duplicate_of": None, "vec": {"embedding": vector.tolist(), "phash": "0"}}


def add_video(out: Path, video_id: str) -> None:
    OutputWriter(out, KEY, [])
    (out / "clips" / f"{video_id}_0000.mp4").write_bytes(b"clip")
    write_part(out, video_id, [chain_row(video_id, CHAIN[video_id])])


def dedup(out: Path) -> None:
    DedupingWriter(out, KEY, [], dedup=[StageConfig.model_validate(STAGE)]).finish_dedup()


def marks(out: Path) -> dict[str, str | None]:
    return {v: rows[0]["duplicate_of"] for v, rows in read_parts(out).items()}


def test_a_chain_of_near_clips_gets_the_same_marks_in_one_pass_and_in_batches_of_one_video(tmp_path: Path) -> None:
    once, batched = tmp_path / "once", tmp_path / "batched"
    for video_id in CHAIN:
        add_video(once, video_id)
    dedup(once)
    for video_id in CHAIN:
        add_video(batched, video_id)
        dedup(batched)
    assert marks(once) == {"vx": None, "vy": "vx_0000", "vz": None}
    assert marks(batched) == marks(once)
    assert all(rows[0]["kept"] and rows[0]["path"] for rows in read_parts(batched).values())
