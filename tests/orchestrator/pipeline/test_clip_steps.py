"""Clip steps drop the frames a clip no longer needs: once filtered out or failed it goes to no later stage, and
the shared frames a media worker left for it are freed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from orchestrator.pipeline.channel import Channel
from orchestrator.pipeline.clip_model import ClipModelLogic
from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.filters import run_filter
from orchestrator.pipeline.items import END, Clip, VideoItem
from orchestrator.pipeline.media.video import VideoInput, VideoMeta
from orchestrator.pipeline.stats import StageStats
from workers.shared_frames import SharedFramesDir


def segments(frames: SharedFramesDir) -> list[str]:
    return sorted(os.listdir(frames.path))


def clip(start: int, end: int) -> Clip:
    video = VideoItem(0, VideoInput(Path("/v.mp4"), "v"), VideoMeta(24.0, 64, 48))
    frames = {name: np.zeros((4, 8, 8, 3), np.uint8) for name in ("ocr", "embed")}
    return Clip(video, 0, start, end, frames=frames)


def test_a_filtered_clip_frees_every_stage_s_frames_and_a_kept_one_keeps_them(tmp_path: Path) -> None:
    frames = SharedFramesDir.make(tmp_path)
    stage = StageConfig(name="keep", filter={"min_duration_s": 1.0})
    short, long = clip(0, 11), clip(0, 47)
    for each, name in ((short, "short"), (long, "long")):
        each.frames = {stage: frames.write_stack(f"{name}.{stage}", list(array))
                       for stage, array in each.frames.items()}
    inq, outq = Channel(), Channel()
    for item in (short, long, END):
        inq.put(item)
    run_filter(stage, StageStats("keep"), frames, inq, outq, threading.Event())
    assert short.filtered_by == ["keep:min_duration_s"] and short.frames == {}
    assert long.filtered_by == [] and set(long.frames) == {"ocr", "embed"}
    assert segments(frames) == ["long.embed", "long.ocr"]


def test_a_failed_clip_drops_its_frames_for_later_stages_and_frees_them(tmp_path: Path) -> None:
    frames = SharedFramesDir.make(tmp_path)
    failed = clip(0, 47)
    failed.frames = {name: frames.write_stack(f"v.0000.{name}", list(array)) for name, array in failed.frames.items()}
    assert segments(frames) == ["v.0000.embed", "v.0000.ocr"]
    ClipModelLogic(StageConfig(name="ocr", model="m.M"), frames).fail(failed, "failed on 3 attempts")
    assert failed.errors == {"ocr": "failed on 3 attempts"} and failed.frames == {} and not failed.active
    assert segments(frames) == []


def test_a_stage_frees_the_frames_it_read_and_leaves_the_next_stage_s(tmp_path: Path) -> None:
    frames = SharedFramesDir.make(tmp_path)
    done = clip(0, 47)
    done.frames = {name: frames.write_stack(f"v.0000.{name}", list(array)) for name, array in done.frames.items()}
    ClipModelLogic(StageConfig(name="ocr", model="m.M"), frames).absorb(done, {"text": "x"})
    assert set(done.frames) == {"embed"} and segments(frames) == ["v.0000.embed"]


def test_a_split_answer_that_is_not_one_flag_per_core_frame_fails_its_video_naming_the_model(tmp_path: Path) -> None:
    from models.model_interface import SplitWindow
    from orchestrator.pipeline.items import SplitRequest
    from orchestrator.pipeline.split.decode import SplitLogic

    stage = StageConfig(name="shots", split="my.Splitter")
    frames = SharedFramesDir.make(tmp_path)
    logic = SplitLogic(stage, SplitWindow(step=50, context=25), frames)
    video = VideoItem(0, VideoInput(Path("/v.mp4"), "v"))
    request = SplitRequest(video, 0, frames.write_stack("v.split.0", list(np.zeros((150, 27, 48, 3), np.uint8))), 100)
    logic.absorb(request, {"transitions": np.zeros(99, bool)})
    assert request.frames is None and request.transitions is None and segments(frames) == []
    assert video.error == ("stage 'shots': model my.Splitter returned an unusable split: 'transitions' must be a "
                           "bool array of one flag per core frame (100,), got bool (99,)")
    later = SplitRequest(video, 100, frames.write_stack("v.split.100", list(np.zeros((150, 27, 48, 3), np.uint8))), 100)
    assert not logic.wants(later) and later.frames is None and segments(frames) == []  # decoded, never split


def test_whole_video_scenes_are_checked(tmp_path: Path) -> None:
    from orchestrator.pipeline.items import SplitRequest
    from orchestrator.pipeline.split.decode import SplitLogic

    logic = SplitLogic(StageConfig(name="shots", split="my.Splitter"), None, SharedFramesDir.make(tmp_path))
    video = VideoItem(0, VideoInput(Path("/v.mp4"), "v"))
    request = SplitRequest(video, 0, np.zeros((10, 27, 48, 3), np.uint8), 10, whole=True)
    logic.absorb(request, {"scenes": [[0, 5], [4, 9]]})
    assert video.error == ("stage 'shots': model my.Splitter returned an unusable split: scene 1 [4, 9] overlaps "
                           "scene 0 [0, 5]")
