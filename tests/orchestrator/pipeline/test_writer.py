"""The output writer: atomic per-video parts, metadata in input order, clips kept or dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from orchestrator.pipeline.items import Clip, VideoItem
from orchestrator.pipeline.video import VideoInput, VideoMeta
from orchestrator.pipeline.writer import OutputWriter


def finished_video(writer: OutputWriter, seq: int, name: str, keep: list[bool]) -> None:
    video = VideoItem(seq, VideoInput(Path(f"/data/{name}.mp4"), name), VideoMeta(24.0, 64, 48))
    clips = []
    for index, kept in enumerate(keep):
        encoded = writer.clips_tmp / f"{name}_{index:04d}.mp4"
        encoded.write_bytes(b"clip")
        clip = Clip(video, index, index * 24, index * 24 + 23, encoded=encoded,
                    results={"score": {"value": np.float32(0.5), "per_frame": np.arange(2)}})
        if not kept:
            clip.filtered_by.append("keep:min_duration_s")
        clips.append(clip)
    writer.finish_video(video, clips)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def test_clips_kept_or_dropped_and_rows_in_input_order(tmp_path: Path) -> None:
    writer = OutputWriter(tmp_path)
    finished_video(writer, 1, "b", [True])
    finished_video(writer, 0, "a", [True, False])
    assert [(Path(r["video"]).stem, r["clip_index"], r["path"]) for r in rows(tmp_path)] == [
        ("a", 0, "clips/a_0000.mp4"), ("a", 1, None), ("b", 0, "clips/b_0000.mp4")]
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["a_0000.mp4", "b_0000.mp4"]
    assert rows(tmp_path)[0]["score"] == {"value": 0.5, "per_frame": [0, 1]}
    assert rows(tmp_path)[1]["filtered_by"] == ["keep:min_duration_s"]
    writer.write_summary({"videos": 2})
    assert not (tmp_path / ".tmp").exists() and json.loads((tmp_path / "run.json").read_text()) == {"videos": 2}


def test_a_new_run_into_the_same_folder_describes_only_itself(tmp_path: Path) -> None:
    finished_video(OutputWriter(tmp_path), 0, "old", [True])
    finished_video(OutputWriter(tmp_path), 0, "new", [True])
    assert [Path(r["video"]).stem for r in rows(tmp_path)] == ["new"]
