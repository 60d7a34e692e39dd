"""The pipeline's steps between queues: decode, split, extract clips, run clip models, filter."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from orchestrator.pipeline.config import FilterSpec, StageConfig
from orchestrator.pipeline.items import END, Clip, VideoDone, VideoItem, put
from orchestrator.pipeline.pool import StepLogic
from orchestrator.pipeline.stats import StageStats
from orchestrator.pipeline.video import ClipEncoder, VideoError, VideoInput, iter_frames, probe, sample_indices


def decode_videos(videos: list[VideoInput], split: StageConfig, resumable: Callable[[VideoInput], Any],
                  outq: queue.Queue, stop: threading.Event) -> None:
    """Decode each video at the split stage's size; a video an earlier run finished is passed on with its rows,
    a bad one carries its error."""
    for seq, video in enumerate(videos):
        item = VideoItem(seq, video, resumed=resumable(video))
        if item.resumed is None:
            try:
                item.meta = probe(video.path)
                item.frames = np.stack(list(iter_frames(video.path, split.frames.size)))
                item.n_frames = len(item.frames)
            except VideoError as exc:
                item.error = str(exc)
            except (MemoryError, OSError) as exc:
                item.error = f"{video.path}: cannot be decoded here ({type(exc).__name__}: {exc})"
        if not put(outq, item, stop):
            return
    put(outq, END, stop)


class SplitLogic(StepLogic):
    """Whole-video frames in, `scenes` ([[start, end], ...] inclusive) out."""

    def __init__(self, stage: StageConfig) -> None:
        self.stage = stage

    def wants(self, item: Any) -> bool:
        return isinstance(item, VideoItem) and item.needs_work

    def payload(self, item: VideoItem) -> Any:
        return {"frames": item.frames}

    def absorb(self, item: VideoItem, result: Any) -> None:
        item.frames = None
        scenes = result.get("scenes") if isinstance(result, dict) else None
        if not isinstance(scenes, list):
            item.error = f"stage {self.stage.name!r}: the model returned no 'scenes' list"
            return
        item.scenes = [(int(s), int(e)) for s, e in scenes]

    def fail(self, item: VideoItem, reason: str) -> None:
        item.frames = None
        item.error = f"stage {self.stage.name!r}: {reason}"


class ClipModelLogic(StepLogic):
    """A clip's sampled frames for this stage in, the model's result stored under the stage's name."""

    def __init__(self, stage: StageConfig) -> None:
        self.stage = stage

    def wants(self, item: Any) -> bool:
        return isinstance(item, Clip) and item.active

    def payload(self, item: Clip) -> Any:
        return {"frames": item.frames[self.stage.name]}

    def absorb(self, item: Clip, result: Any) -> None:
        item.frames.pop(self.stage.name, None)
        item.results[self.stage.name] = result

    def fail(self, item: Clip, reason: str) -> None:
        item.frames.pop(self.stage.name, None)
        item.errors[self.stage.name] = reason


def extract_clips(model_stages: list[StageConfig], clips_tmp: Path, codec: str, inq: queue.Queue,
                  outq: queue.Queue, stop: threading.Event) -> None:
    """Second decode pass at full size: encode each clip and sample each clip stage's frames.

    Emits the VideoItem first, then each clip as soon as its last frame is decoded (so annotation starts while
    the rest of the video is still being cut), then VideoDone."""
    while not stop.is_set():
        try:
            item = inq.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is END:
            put(outq, END, stop)
            return
        if not put(outq, item, stop):
            return
        for clip in _cut(item, model_stages, clips_tmp, codec) if item.needs_work else []:
            if not put(outq, clip, stop):
                return
        if not put(outq, VideoDone(item), stop):
            return


def _cut(item: VideoItem, stages: list[StageConfig], clips_tmp: Path, codec: str) -> Iterator[Clip]:
    """Yield the video's clips in order, each complete; a decode failure marks the clips it left unfinished."""
    fps = item.meta.fps if item.meta else 1.0
    clips = [Clip(item, i, s, e) for i, (s, e) in enumerate(item.scenes)]
    owner = {f: c for c in clips for f in range(c.start, c.end + 1)}
    finished = 0
    encoder: ClipEncoder | None = None
    picked: dict[str, list[np.ndarray]] = {}
    wanted: dict[str, set[int]] = {}
    try:
        for index, frame in enumerate(iter_frames(item.video.path)):
            clip = owner.get(index)
            if clip is None:
                continue
            if clip.start == index:
                encoder = ClipEncoder(clips_tmp / f"{item.video.video_id}_{clip.index:04d}.mp4", fps,
                                      frame.shape[1], frame.shape[0], codec)
                clip.encoded = encoder.path
                wanted = {st.name: set(sample_indices(clip.start, clip.end, fps, st.frames.sampling, st.frames.rate))
                          for st in stages}
                picked = {st.name: [] for st in stages}
            encoder.write(frame)
            for stage in stages:
                if index in wanted[stage.name]:
                    picked[stage.name].append(_resize(frame, stage.frames.size))
            if clip.end == index:
                encoder.close()
                encoder = None
                clip.frames = {name: np.stack(frames) for name, frames in picked.items() if frames}
                finished += 1
                yield clip
        reason = "the video has fewer frames than the split stage reported"
    except VideoError as exc:
        reason = str(exc)
    except (OSError, ValueError, av.error.FFmpegError, MemoryError) as exc:  # encoding: disk full, a bad codec
        reason = f"cutting clips failed: {type(exc).__name__}: {exc}"
    if encoder is not None:
        with contextlib.suppress(OSError, ValueError, av.error.FFmpegError):
            encoder.close()
    for clip in clips[finished:]:
        clip.errors["decode"] = reason
        yield clip


def _resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (frame.shape[1], frame.shape[0]) == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def apply_filter(stage: StageConfig, clip: Clip) -> None:
    """Record on the clip each rule of `stage` it breaks (as `stage:rule`)."""
    rules: FilterSpec = stage.filter  # type: ignore[assignment]
    fps = clip.video.meta.fps if clip.video.meta else 1.0
    if (clip.end - clip.start + 1) / fps < rules.min_duration_s:
        clip.filtered_by.append(f"{stage.name}:min_duration_s")
    for path, limit in rules.max.items():
        if not _number(clip, path) <= limit:
            clip.filtered_by.append(f"{stage.name}:max:{path}")
    for path, limit in rules.min.items():
        if not _number(clip, path) >= limit:
            clip.filtered_by.append(f"{stage.name}:min:{path}")
    for path in rules.present:
        if not _lookup(clip, path):
            clip.filtered_by.append(f"{stage.name}:present:{path}")
    for path in rules.absent:
        if _lookup(clip, path):
            clip.filtered_by.append(f"{stage.name}:absent:{path}")


def _lookup(clip: Clip, path: str) -> Any:
    value: Any = clip.results
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _number(clip: Clip, path: str) -> float:
    value = _lookup(clip, path)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def run_filter(stage: StageConfig, stats: StageStats, inq: queue.Queue, outq: queue.Queue,
               stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            item = inq.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(item, Clip) and item.active:
            stats.mark_started()
            apply_filter(stage, item)
            stats.mark_done()
        if not put(outq, item, stop) or item is END:
            return
