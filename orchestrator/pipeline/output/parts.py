"""The parts of an output folder: one file per finished video, the truth a rerun resumes from and that
metadata.jsonl is rebuilt from. Reading them changes nothing, so a run may look before it may write."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.pipeline.media.video import VideoInput

PIPELINE_FILE = "pipeline.json"


@dataclass(frozen=True)
class Part:
    """One finished video: the input it was, the fingerprint the file had when the run opened it, whether
    every clip succeeded, and its rows."""

    video: str
    video_id: str
    fingerprint: str
    ok: bool
    rows: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Part | None:
        """The part `data` describes, or None when it is not one (torn by hand, or another layout's)."""
        if not isinstance(data, dict):
            return None
        fields = (data.get("video"), data.get("video_id"), data.get("fingerprint"), data.get("ok"), data.get("rows"))
        video, video_id, marks, ok, rows = fields
        if not (isinstance(video, str) and isinstance(video_id, str) and isinstance(marks, str)
                and isinstance(ok, bool) and isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
            return None
        return cls(video, video_id, marks, ok, rows)


def read_parts(parts_dir: Path) -> dict[str, Part]:
    """Every readable part in the folder, by video id (the file's name); others are ignored."""
    parts = {}
    for path in sorted(parts_dir.glob("*.json")) if parts_dir.is_dir() else []:
        if path.name == PIPELINE_FILE:
            continue
        try:
            part = Part.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if part is not None and path.stem == part.video_id:
            parts[part.video_id] = part
    return parts


def resumable_rows(part: Part | None, video: VideoInput,
                   has_clip: Callable[[str], bool]) -> list[dict[str, Any]] | None:
    """The part's rows if it finished `video`, as fingerprinted now, successfully and its clips are all there
    (`has_clip` of each row's path, relative to the folder)."""
    if part is None or not part.ok or part.fingerprint != video.fingerprint or not video.fingerprint:
        return None
    if any(r.get("path") and not has_clip(str(r["path"])) for r in part.rows):
        return None
    return part.rows


def finished_part(part: Part | None, video: VideoInput, has_clip: Callable[[str], bool]) -> bool:
    """Whether `part` finished `video` successfully with its clips all there, for a video not opened yet (so
    not fingerprinted now): as the part's own fingerprint has it."""
    return part is not None and resumable_rows(part, replace(video, fingerprint=part.fingerprint), has_clip) is not None


def count_kept(out_dir: Path, videos: Iterable[VideoInput], has_clip: Callable[[str], bool] | None = None,
               unopened: Iterable[VideoInput] = ()) -> int:
    """How many of `videos` the folder holds finished results for (read only, for a run stopped before it
    could write), and of `unopened` (found, not opened yet: see `finished_part`); `has_clip`: whether a clip
    is there, when the clips are not files in `out_dir`."""
    parts = read_parts(out_dir / ".parts")
    present = has_clip or (lambda path: (out_dir / path).is_file())
    return (sum(resumable_rows(parts.get(v.video_id), v, present) is not None for v in videos)
            + sum(finished_part(parts.get(v.video_id), v, present) for v in unopened))
