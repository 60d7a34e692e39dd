"""Outputs, written so that a crash never leaves anything that looks complete but is not, and a rerun resumes.

    <out>/clips/<video>_<clip>.mp4    kept clips, renamed into place once encoded and judged
    <out>/.parts/<fingerprint>.json   one finished video: its rows and whether it succeeded (atomic)
    <out>/.parts/pipeline.json        what decided the results beside it (stages, params, codec)
    <out>/metadata.jsonl              this run's rows in input order, appended as each video finishes
    <out>/run.json                    the run's summary, written atomically at the end

Rerunning the same command reuses every video whose part says it succeeded (and whose clip files are still
there) and redoes the others; `fresh` starts over. Clip names are fixed by the video's id and the clip's
index, so redoing a video replaces what a killed run left instead of adding to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import IO, Any

import numpy as np

from orchestrator.atomic import atomic_write_text
from orchestrator.errors import ConfigError
from orchestrator.pipeline.items import Clip, VideoItem
from orchestrator.pipeline.video import VideoInput

PIPELINE_FILE = "pipeline.json"


def to_json(value: Any) -> Any:
    """numpy arrays and scalars as plain JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fingerprint(path: Path) -> str:
    """Names a video's part: the same file (path, size, modification time) maps to the same part."""
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:20]


class OutputWriter:
    def __init__(self, out_dir: Path, results_key: dict[str, Any], fresh: bool = False) -> None:
        self.out_dir = out_dir
        self.parts = out_dir / ".parts"
        self.clips_tmp = out_dir / ".tmp"
        try:
            if fresh:
                for sub in (".parts", "clips"):
                    shutil.rmtree(out_dir / sub, ignore_errors=True)
            shutil.rmtree(self.clips_tmp, ignore_errors=True)
            for sub in ("clips", ".parts", ".tmp"):
                (out_dir / sub).mkdir(parents=True, exist_ok=True)
            self._claim(results_key)
            self._metadata: IO[str] = open(out_dir / "metadata.jsonl", "w")  # noqa: SIM115 - open for the run
        except OSError as exc:
            raise ConfigError(f"output directory {out_dir} is not writable ({exc.strerror}); choose another with "
                              f"--output") from None

    def _claim(self, results_key: dict[str, Any]) -> None:
        """Parts made by another pipeline config must not be mixed into this run's results."""
        path = self.parts / PIPELINE_FILE
        with contextlib.suppress(FileNotFoundError):
            if json.loads(path.read_text()) != results_key:
                raise ConfigError(f"{self.out_dir} holds results of a different pipeline (stages, params or "
                                  f"codec changed); rerun with --fresh to start over there, or choose another "
                                  f"--output")
            return
        atomic_write_text(path, json.dumps(results_key, indent=2, sort_keys=True) + "\n")

    def resumable(self, video: VideoInput) -> list[dict[str, Any]] | None:
        """The rows of an earlier run that finished `video` successfully and whose clips are all still here."""
        try:
            part = json.loads((self.parts / f"{fingerprint(video.path)}.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(part, dict) or not part.get("ok") or part.get("video_id") != video.video_id:
            return None
        rows = part.get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return None
        if any(r.get("path") and not (self.out_dir / r["path"]).is_file() for r in rows):
            return None
        return rows

    def finish_video(self, video: VideoItem, clips: list[Clip]) -> list[dict[str, Any]]:
        """Keep or drop each clip's file, record the video's part atomically, then append its rows."""
        if video.resumed is not None:
            self._append(video.resumed)
            return video.resumed
        rows = [self._finish_clip(clip) for clip in clips]
        ok = video.error is None and not any(clip.errors for clip in clips)
        part = {"video": str(video.video.path), "video_id": video.video.video_id, "ok": ok, "rows": rows}
        with contextlib.suppress(FileNotFoundError):  # a video that vanished mid-run still gets its rows
            path = self.parts / f"{fingerprint(video.video.path)}.json"
            self._drop_stale_clips(path, {r["path"] for r in rows if r["path"]})
            atomic_write_text(path, json.dumps(part, default=to_json) + "\n")
        self._append(rows)
        return rows

    def _finish_clip(self, clip: Clip) -> dict[str, Any]:
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
            "end_frame": clip.end, "start_s": clip.start_s,
            "end_s": clip.end_s, "path": path,
            "filtered_by": (clip.filtered_by or [f"error:{s}" for s in clip.errors]) or None,
            **({"errors": clip.errors} if clip.errors else {}), **clip.video.notes, **clip.results,
        }

    def _drop_stale_clips(self, part: Path, kept: set[str]) -> None:
        """Clip files an earlier attempt at this video kept that this attempt does not."""
        try:
            earlier = json.loads(part.read_text())["rows"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        for row in earlier:
            path = row.get("path") if isinstance(row, dict) else None
            if isinstance(path, str) and Path(path).parent == Path("clips") and path not in kept:
                (self.out_dir / path).unlink(missing_ok=True)

    def _append(self, rows: list[dict[str, Any]]) -> None:
        self._metadata.write("".join(json.dumps(r, default=to_json) + "\n" for r in rows))
        self._metadata.flush()

    def close(self) -> None:
        """Make metadata.jsonl durable; idempotent."""
        if not self._metadata.closed:
            self._metadata.flush()
            os.fsync(self._metadata.fileno())
            self._metadata.close()

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.close()
        atomic_write_text(self.out_dir / "run.json", json.dumps(summary, indent=2, default=to_json) + "\n")
        shutil.rmtree(self.clips_tmp, ignore_errors=True)
