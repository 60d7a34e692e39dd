"""The live view: the ETA counts neither start-up nor resumed videos, and one long video shows its frames."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from orchestrator.pipeline.executor import RunState
from orchestrator.pipeline.items import Clip, VideoItem
from orchestrator.pipeline.media.video import VideoInput, VideoMeta
from orchestrator.pipeline.progress import render


def shown(state: RunState) -> str:
    console = Console(width=200, record=True)
    console.print(render(state))
    return console.export_text()


def test_the_eta_is_measured_from_the_first_clip_over_the_frames_left_of_the_videos_worked_on() -> None:
    state = RunState(videos_total=2, started=time.monotonic() - 600)  # ten minutes of env builds and setup
    resumed = VideoItem(0, VideoInput(Path("done.mp4"), "done", "f0", VideoMeta(25.0, 64, 48, 5000)),
                        resumed=[{"clip_index": 0}])
    long = VideoItem(1, VideoInput(Path("long.mp4"), "long", "f1", VideoMeta(25.0, 64, 48, 1000)))
    state.frames_total = long.video.frames
    state.video_finished(resumed)
    state.videos_done = state.resumed = 1
    state.clip_written(Clip(long, 0, 0, 99))
    assert state.work_started is not None
    first_clip = state.work_started
    state.clip_written(Clip(long, 1, 100, 299))
    # 200 frames in the 10 s since the first clip: 700 frames left take 35 s
    assert state.eta_s(first_clip + 10) == 35.0
    text = shown(state)
    assert "frames 300/1000" in text and "this video 300/1000 frames" in text and "videos 1/2" in text
    state.video_finished(long)
    assert state.frames_done == 1000 and state.eta_s(first_clip + 20) is None


def test_while_inputs_are_still_listed_the_eta_counts_the_readable_videos_found_and_not_started() -> None:
    """Four videos found so far, one of them unreadable, one started (100 frames): the ETA expects as many
    frames again of each of the other two, and the line says the listing goes on."""
    state = RunState(videos_total=0)
    state.inputs_found(4, 1, True)
    first = VideoItem(0, VideoInput(Path("a.mp4"), "a", "f0", VideoMeta(25.0, 64, 48, 100)))
    state.video_planned(first)
    state.clip_written(Clip(first, 0, 0, 49))
    assert state.work_started is not None
    state.clip_written(Clip(first, 1, 50, 99))
    # 50 frames in 10 s since the first clip; 300 frames expected in all, 200 left: 40 s
    assert state.frames_expected() == 300 and state.eta_s(state.work_started + 10) == 40.0
    assert "videos 0/4+ (listing)" in shown(state)
    state.inputs_found(4, 1, False)
    assert "videos 0/4 " in shown(state) and "listing" not in shown(state)
