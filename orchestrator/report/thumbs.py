"""The report's images: a short animated preview of each kept clip, and a still of each filtered clip taken
from its source video (filtered clips have no file of their own).

    <out>/clips/<clip>.mp4 ──PyAV──▶ PREVIEW_FRAMES frames across the clip ──▶ report_files/<clip>.<key>.webp
    <source video> at the clip's start ─────────────────────────────────────▶ report_files/<clip>.<key>.webp

An image's name carries a key of what it was made from (the file's size and modification time, the clip's
start, the preview settings), so a later report reuses every image whose clip is unchanged and remakes the
rest. Each image is written atomically; one that cannot be made (an unreadable or vanished file) is None, and
the page shows that clip as a text tile instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import av
from PIL import Image

from orchestrator.atomic import atomic_file
from orchestrator.report.inputs import ClipRow
from workers.media.s3 import is_s3

IMAGES_DIR = "report_files"
PREVIEW_FRAMES = 6
PREVIEW_WIDTH = 192
FRAME_MS = 350
MAX_IMAGES = 500
"""Images one report shows at most (kept clips first): a folder of many thousand clips reports in minutes, not
hours. Images of unchanged clips are reused, so mostly a run's new clips cost decoding."""
SETTINGS = f"{PREVIEW_FRAMES}x{PREVIEW_WIDTH}@{FRAME_MS}"
"""Part of every image's key: changing how previews are made remakes them."""
UNREADABLE = (av.error.FFmpegError, OSError, ValueError, IndexError, StopIteration)


class Thumbnails:
    """Makes (or finds from an earlier report) the images of an output folder's clips."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.folder = out_dir / IMAGES_DIR
        self.used: set[str] = set()
        self.created: list[Path] = []
        self.over_budget = 0
        """Clips left without an image because the report already shows MAX_IMAGES."""

    def preview(self, row: ClipRow) -> str | None:
        """The animated preview of a kept clip, as a path relative to the output folder (a still from its
        video when the run wrote no clip files)."""
        if row.path is None:
            return self.source_still(row)
        clip = self.out_dir / str(row.path)
        name = self._name(row, clip, "")
        if name is None:
            return None
        duration = (row.end_s - row.start_s) if row.start_s is not None and row.end_s is not None else None
        return self._made(name, lambda: _preview_frames(clip, duration))

    def source_still(self, row: ClipRow) -> str | None:
        """A frame of a filtered clip, decoded from its source video at the clip's start, if still readable
        (a local file)."""
        if row.start_s is None or is_s3(row.video):  # the report reads no video from object storage
            return None
        source = Path(row.video)
        name = self._name(row, source, f"{row.start_s:.3f}")
        if name is None:
            return None
        return self._made(name, lambda: [_frame_at(source, row.start_s or 0.0)])

    def discard_created(self) -> None:
        """Remove the images this report made: a report that failed (a full disk) leaves no space taken."""
        for path in self.created:
            path.unlink(missing_ok=True)

    def prune(self) -> None:
        """Remove every image no longer shown (clips redone or gone), once the page that shows these is written."""
        for path in self.folder.glob("*") if self.folder.is_dir() else []:
            if path.name not in self.used and path.is_file():
                path.unlink(missing_ok=True)

    def _name(self, row: ClipRow, made_from: Path, detail: str) -> str | None:
        try:
            stat = made_from.stat()
        except OSError:
            return None
        key = hashlib.sha1(f"{made_from}:{stat.st_size}:{stat.st_mtime_ns}:{detail}:{SETTINGS}".encode())
        return f"{re.sub(r'[^A-Za-z0-9._-]', '_', row.clip_id)}.{key.hexdigest()[:10]}.webp"

    def _made(self, name: str, frames: Callable[[], list[Image.Image]]) -> str | None:
        if len(self.used) >= MAX_IMAGES:
            self.over_budget += 1
            return None
        target = self.folder / name
        if not target.is_file():
            try:
                images = frames()
            except UNREADABLE:
                return None
            if not images:
                return None
            self.folder.mkdir(exist_ok=True)
            with atomic_file(target) as handle:
                images[0].save(handle, format="WEBP", save_all=len(images) > 1, append_images=images[1:],
                               duration=FRAME_MS, loop=0, quality=70)
            self.created.append(target)
        self.used.add(name)
        return f"{IMAGES_DIR}/{name}"


def _preview_frames(clip: Path, duration_s: float | None) -> list[Image.Image]:
    """PREVIEW_FRAMES frames spread evenly over the clip (the first frame, then every sixth of its length)."""
    images: list[Image.Image] = []
    with av.open(str(clip)) as container:
        frames = _decoded(container)
        first = next(frames)
        origin = first.time or 0.0
        images.append(_small(first))
        step = (duration_s or 0.0) / PREVIEW_FRAMES
        targets = [origin + step * k for k in range(1, PREVIEW_FRAMES)] if step > 0 else []
        for frame in frames:
            if not targets:
                break
            if (frame.time or 0.0) >= targets[0]:
                images.append(_small(frame))
                targets = [t for t in targets if t > (frame.time or 0.0)]
    return images


def _frame_at(source: Path, start_s: float) -> Image.Image:
    """The first frame shown at or after `start_s` in the source video (seeking to the keyframe before it)."""
    with av.open(str(source)) as container:
        container.seek(max(int(start_s * av.time_base), 0))
        last = None
        for frame in _decoded(container):
            last = frame
            if (frame.time or 0.0) >= start_s - 1e-3:
                break
        if last is None:
            raise ValueError(f"{source} has no frame at {start_s} s")
        return _small(last)


def _decoded(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container.decode(stream)


def _small(frame: av.VideoFrame) -> Image.Image:
    height = max(2, round(frame.height * PREVIEW_WIDTH / max(frame.width, 1) / 2) * 2)
    return frame.reformat(width=PREVIEW_WIDTH, height=height, format="rgb24").to_image()
