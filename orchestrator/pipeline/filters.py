"""The built-in filter step: each clip is judged by a stage's rules over what earlier stages found."""

from __future__ import annotations

import queue
import threading
from typing import Any

from orchestrator.pipeline.config import FilterSpec, StageConfig
from orchestrator.pipeline.items import END, Clip, put
from orchestrator.pipeline.stats import StageStats
from workers.shared_frames import SharedFramesDir


def apply_filter(stage: StageConfig, clip: Clip) -> None:
    """Record on the clip each rule of `stage` it breaks (as `stage:rule`)."""
    rules: FilterSpec = stage.filter  # type: ignore[assignment]
    if clip.duration_s < rules.min_duration_s:
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


def run_filter(stage: StageConfig, stats: StageStats, frames: SharedFramesDir, inq: queue.Queue,
               outq: queue.Queue, stop: threading.Event) -> None:
    """Judge each active clip; one filtered out goes to no later stage, so its frames are freed here."""
    while not stop.is_set():
        try:
            item = inq.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(item, Clip) and item.active:
            stats.mark_started()
            apply_filter(stage, item)
            stats.mark_done()
            if not item.active:
                item.release_frames(frames)
        if not put(outq, item, stop) or item is END:
            return
