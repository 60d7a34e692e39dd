"""Outputs, written so a crash never leaves anything that looks complete but is not.

    <out>/clips/<video>_<clip>.mp4   kept clips, renamed into place once encoded and judged
    <out>/.parts/<seq>-<video>.jsonl one finished video's metadata, written atomically
    <out>/metadata.jsonl             the parts in input order, rewritten atomically as videos finish
    <out>/run.json                   the run's summary, written atomically at the end

A finished video's part file is the unit of resumption: a later run can skip it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import ConfigError
from orchestrator.pipeline.items import Clip, VideoItem


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json(value: Any) -> Any:
    """numpy arrays and scalars as plain JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class OutputWriter:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        # metadata.jsonl describes this run only: parts left by an earlier run into the same folder go.
        shutil.rmtree(out_dir / ".parts", ignore_errors=True)
        try:
            for sub in ("clips", ".parts", ".tmp"):
                (out_dir / sub).mkdir(parents=True, exist_ok=True)
            probe = out_dir / ".tmp" / ".write-check"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"output directory {out_dir} is not writable ({exc.strerror}); choose another with "
                              f"--output") from None
        self.clips_tmp = out_dir / ".tmp"

    def finish_video(self, video: VideoItem, clips: list[Clip]) -> list[dict[str, Any]]:
        """Keep or drop each clip's file, then record the video's metadata atomically."""
        rows = [self._finish_clip(clip) for clip in clips]
        name = f"{video.seq:06d}-{video.video.video_id}.jsonl"
        atomic_write(self.out_dir / ".parts" / name, "".join(json.dumps(r, default=to_json) + "\n" for r in rows))
        self._write_metadata()
        return rows

    def _finish_clip(self, clip: Clip) -> dict[str, Any]:
        fps = clip.video.meta.fps if clip.video.meta else 0.0
        kept = clip.active and clip.encoded is not None
        path = None
        if kept:
            target = self.out_dir / "clips" / Path(clip.encoded).name
            os.replace(clip.encoded, target)
            path = str(target.relative_to(self.out_dir))
        elif clip.encoded is not None:
            Path(clip.encoded).unlink(missing_ok=True)
        return {
            "video": str(clip.video.video.path), "clip_index": clip.index, "start_frame": clip.start,
            "end_frame": clip.end, "start_s": round(clip.start / fps, 3) if fps else None,
            "end_s": round((clip.end + 1) / fps, 3) if fps else None, "path": path,
            "filtered_by": (clip.filtered_by or [f"error:{s}" for s in clip.errors]) or None,
            **({"errors": clip.errors} if clip.errors else {}), **clip.results,
        }

    def _write_metadata(self) -> None:
        parts = sorted((self.out_dir / ".parts").glob("*.jsonl"))
        atomic_write(self.out_dir / "metadata.jsonl", "".join(p.read_text() for p in parts))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.out_dir / "run.json", json.dumps(summary, indent=2, default=to_json) + "\n")
        shutil.rmtree(self.clips_tmp, ignore_errors=True)
