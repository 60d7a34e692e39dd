"""Clip steps drop the frames a clip no longer needs: once filtered out or failed it goes to no later stage."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from orchestrator.pipeline.channel import Channel
from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.items import END, Clip, VideoItem
from orchestrator.pipeline.stats import StageStats
from orchestrator.pipeline.steps import ClipModelLogic, run_filter
from orchestrator.pipeline.video import VideoInput, VideoMeta


def clip(start: int, end: int) -> Clip:
    video = VideoItem(0, VideoInput(Path("/v.mp4"), "v"), VideoMeta(24.0, 64, 48))
    frames = {name: np.zeros((4, 8, 8, 3), np.uint8) for name in ("ocr", "embed")}
    return Clip(video, 0, start, end, frames=frames)


def test_a_filtered_clip_drops_every_stage_s_frames_and_a_kept_one_keeps_them() -> None:
    stage = StageConfig(name="keep", filter={"min_duration_s": 1.0})
    short, long = clip(0, 11), clip(0, 47)
    inq, outq = Channel(), Channel()
    for item in (short, long, END):
        inq.put(item)
    run_filter(stage, StageStats("keep"), inq, outq, threading.Event())
    assert short.filtered_by == ["keep:min_duration_s"] and short.frames == {}
    assert long.filtered_by == [] and set(long.frames) == {"ocr", "embed"}


def test_a_failed_clip_drops_its_frames_for_later_stages() -> None:
    failed = clip(0, 47)
    ClipModelLogic(StageConfig(name="ocr", model="m.M")).fail(failed, "failed on 3 attempts")
    assert failed.errors == {"ocr": "failed on 3 attempts"} and failed.frames == {} and not failed.active
