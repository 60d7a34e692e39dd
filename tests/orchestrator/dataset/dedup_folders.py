"""Output folders of finished videos for dedup tests, written as the writer writes them, without a pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from orchestrator.pipeline.output.parts import Part
from orchestrator.pipeline.output.writer import OutputWriter

KEY = {"stages": "dedup test"}


def make_folder(out: Path, videos: int = 12, clips: int = 4) -> dict[str, list[dict]]:
    """Finished videos whose clips are drawn from 20 shots (with a little noise), so many are near copies of
    clips of other videos; each clip has an embedding and a hash. Returns each video's rows (as the clip table
    writes them: `clip_id`, `kept` and `duplicate_of` on every row)."""
    OutputWriter(out, KEY, [])
    rng = np.random.default_rng(0)
    shots = rng.standard_normal((20, 8))
    hashes = rng.integers(0, 1 << 62, 20)
    written = {}
    for v in range(videos):
        video_id = f"v{v:02d}"
        rows = []
        for index in range(clips):
            shot = rng.integers(0, 20)
            path = f"clips/{video_id}_{index:04d}.mp4"
            (out / path).write_bytes(b"clip")
            rows.append({"clip_id": f"{video_id}_{index:04d}", "video_id": video_id,
                         "video": f"/videos/{video_id}.mp4", "clip_index": index, "start_frame": index * 10,
                         "end_frame": index * 10 + 9, "path": path, "kept": True, "filtered_by": None,
                         "duplicate_of": None,
                         "vec": {"embedding": (shots[shot] + 0.01 * rng.standard_normal(8)).tolist(),
                                 "phash": f"{int(hashes[shot]) ^ (1 << int(rng.integers(0, 64))):016x}"}})
        write_part(out, video_id, rows)
        written[video_id] = rows
    return written


def write_part(out: Path, video_id: str, rows: list[dict]) -> None:
    part = Part(f"/videos/{video_id}.mp4", video_id, f"print-{video_id}", True, rows)
    (out / ".parts" / f"{video_id}.json").write_text(json.dumps(part.to_json()))


def read_parts(out: Path) -> dict[str, list[dict]]:
    return {p.stem: json.loads(p.read_text())["rows"] for p in sorted((out / ".parts").glob("v*.json"))}
