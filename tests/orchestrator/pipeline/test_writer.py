"""The output writer: atomic per-video parts, metadata rebuilt from them in input order, clips kept or dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import ConfigError
from orchestrator.pipeline.items import Clip, VideoItem
from orchestrator.pipeline.media.video import VideoInput, VideoMeta, fingerprint
from orchestrator.pipeline.output.writer import OutputWriter
from orchestrator.pipeline.summary import RunSummary

KEY = {"stages": [{"name": "shots"}], "clip_codec": "libx264"}
SUMMARY = RunSummary(videos=2, videos_done=2, resumed=0, clips=3, kept=2, failures=[], stages={}, wall_s=1.0)


def video_file(folder: Path, name: str) -> VideoInput:
    path = folder / "videos" / f"{name}.mp4"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"a video")
    return opened(VideoInput(path, name))


def opened(video: VideoInput) -> VideoInput:
    """The video as a run opens it: fingerprinted."""
    return VideoInput(video.path, video.video_id, fingerprint(video.path))


def finished_video(writer: OutputWriter, seq: int, video: VideoInput, keep: list[bool], error: str | None = None,
                   clip_error: int | None = None) -> list[dict]:
    item = VideoItem(seq, video, VideoMeta(24.0, 64, 48), error=error)
    clips = []
    for index, kept in enumerate(keep):
        encoded = writer.clips_tmp / f"{video.video_id}_{index:04d}.mp4"
        encoded.write_bytes(b"clip")
        clip = Clip(item, index, index * 24, index * 24 + 23, encoded=encoded,
                    results={"score": {"value": np.float32(0.5), "per_frame": np.arange(2)}})
        if not kept:
            clip.filtered_by.append("keep:min_duration_s")
        if clip_error == index:
            clip.errors["score"] = "failed on 3 attempts"
        clips.append(clip)
    return writer.finish_video(item, clips)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def test_clips_kept_or_dropped_and_rows_in_the_order_videos_finish(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, b = video_file(tmp_path, "a"), video_file(tmp_path, "b")
    writer = OutputWriter(out, KEY, [a, b])
    finished_video(writer, 0, a, [True, False])
    finished_video(writer, 1, b, [True])
    assert [(Path(r["video"]).stem, r["clip_index"], r["path"]) for r in rows(out)] == [
        ("a", 0, "clips/a_0000.mp4"), ("a", 1, None), ("b", 0, "clips/b_0000.mp4")]
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["a_0000.mp4", "b_0000.mp4"]
    assert rows(out)[0]["score"] == {"value": 0.5, "per_frame": [0, 1]}
    assert rows(out)[1]["filtered_by"] == ["keep:min_duration_s"]
    writer.finish_run(SUMMARY, completed=True)
    assert not (out / ".tmp").exists() and json.loads((out / "run.json").read_text())["videos"] == 2


def test_inputs_found_unreadable_after_the_writer_was_made_get_their_row(tmp_path: Path) -> None:
    """The run's inputs are opened as it goes: the lists the writer was given grow after it was made, and a
    file found unreadable then still gets its row when the run ends (and a video found then is counted)."""
    out = tmp_path / "out"
    a = video_file(tmp_path, "a")
    videos: list[VideoInput] = [a]
    unreadable: list[tuple[VideoInput, str]] = []
    writer = OutputWriter(out, KEY, videos, unreadable=unreadable)
    finished_video(writer, 0, a, [True])
    b = video_file(tmp_path, "b")
    videos.append(b)
    unreadable.append((video_file(tmp_path, "broken"), "broken.mp4: not a video"))
    finished_video(writer, 1, b, [True])
    writer.finish_run(SUMMARY, completed=True)
    assert [(Path(r["video"]).stem, [e["reason"] for e in r["errors"] or []]) for r in rows(out)] == [
        ("a", []), ("b", []), ("broken", ["broken.mp4: not a video"])]
    assert writer.kept() == 2
    rerun = OutputWriter(out, KEY, [])  # a rerun stopped before it opened these: their finished parts count
    unopened = [VideoInput(video.path, video.video_id) for video in (a, b, video_file(tmp_path, "new"))]
    assert rerun.kept(unopened) == 2


def test_metadata_holds_every_finished_video_in_the_folder_this_runs_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old, new = video_file(tmp_path, "old"), video_file(tmp_path, "new")
    finished_video(OutputWriter(out, KEY, [old]), 0, old, [True])
    finished_video(OutputWriter(out, KEY, [new]), 0, new, [True])
    assert [Path(r["video"]).stem for r in rows(out)] == ["new", "old"]


def test_a_rerun_reuses_only_videos_that_succeeded_and_are_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done, failed, clip_failed, changed, deleted = videos = [video_file(tmp_path, n) for n in "abcde"]
    writer = OutputWriter(out, KEY, videos)
    finished_video(writer, 0, done, [True, False])
    finished_video(writer, 1, failed, [], error="corrupt after frame 3")
    finished_video(writer, 2, clip_failed, [True], clip_error=0)
    finished_video(writer, 3, changed, [True])
    finished_video(writer, 4, deleted, [True])
    writer.finish_run(SUMMARY, completed=True)
    first = rows(out)[:2]
    changed.path.write_bytes(b"another video, longer")
    (out / "clips" / "e_0000.mp4").unlink()
    again = OutputWriter(out, KEY, videos)
    assert again.resumable(done) == first
    assert [again.resumable(opened(v)) for v in (failed, clip_failed, changed, deleted)] == [None] * 4


def test_redoing_a_video_removes_the_clips_an_earlier_attempt_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    video = video_file(tmp_path, "a")
    finished_video(OutputWriter(out, KEY, [video]), 0, video, [True, True, True], clip_error=2)
    finished_video(OutputWriter(out, KEY, [video]), 0, video, [True, False])
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["a_0000.mp4"]


def test_results_of_another_pipeline_are_refused_unless_fresh_which_sets_them_aside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    video = video_file(tmp_path, "a")
    writer = OutputWriter(out, KEY, [video])
    finished_video(writer, 0, video, [True])
    writer.finish_run(SUMMARY, completed=True)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="holds results of a different pipeline.*--fresh"):
        OutputWriter(out, {**KEY, "clip_codec": "libx265"}, [video])
    fresh = OutputWriter(out, {**KEY, "clip_codec": "libx265"}, [video], fresh=True)
    assert fresh.resumable(video) is None and not list((out / "clips").iterdir()) and not rows_or_none(out)
    assert fresh.set_aside is not None and fresh.set_aside.parent == out / ".previous"
    assert {p.relative_to(fresh.set_aside): p.read_bytes() for p in fresh.set_aside.rglob("*") if p.is_file()} \
        == before


def rows_or_none(out: Path) -> list[dict] | None:
    return rows(out) if (out / "metadata.jsonl").exists() else None
