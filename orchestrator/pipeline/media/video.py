"""Find input videos (files, folders, globs, and s3:// prefixes, patterns and objects), open each once to read
what its container declares, and pick the frames each clip stage samples. Decoding and encoding are the
media workers' (workers.media); this process reads no frame.

`VideoError` (a video that cannot be read) is the media workers' own, re-exported here for the run's code."""

from __future__ import annotations

import functools
import glob
import hashlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import av

from workers.media import s3
from workers.media.video import VideoError, average_rate, open_video

__all__ = ["VIDEO_SUFFIXES", "VideoError", "VideoInput", "VideoMeta", "Truncation", "expand_inputs", "find_inputs",
           "fingerprint", "open_inputs", "probe", "sample_indices", "truncation", "video_id"]

OPENERS = 16
"""Objects in a store opened at once when a run starts."""
PROBE_BLOCK = 16 << 10
"""Bytes per ranged GET while a run reads an object's container header (its frames are the media steps')."""
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"})


@dataclass(frozen=True)
class VideoInput:
    """One input video and the id its outputs are named by: the same file always gets the same id, whatever
    else a run into the same folder reads. `fingerprint` and `meta` are read when the file is first opened
    (`open_inputs`): the results are recorded under that fingerprint, so a file replaced while the run reads it
    is noticed instead of recorded as the new file."""

    path: Path | str
    """A local file, or an `s3://bucket/key` object read in place."""
    video_id: str
    fingerprint: str = ""
    meta: VideoMeta | None = None
    """What the container declares (rate, size, frames, duration), read when the file was opened."""
    local: Path | None = None
    """A whole local copy of an object (`--cache-inputs`), which the media steps read instead."""

    @property
    def source(self) -> str:
        """What the media steps read: the local copy where there is one, else the file or object itself."""
        return str(self.local or self.path)

    @property
    def frames(self) -> int:
        """Frames the container declares, counted from its duration where it lists none (0: it says neither)."""
        if self.meta is None:
            return 0
        if self.meta.declared_frames:
            return self.meta.declared_frames
        return int(self.meta.declared_s * self.meta.fps) if self.meta.declared_s else 0

    def changed(self) -> bool:
        """Whether the file is no longer the one opened (rewritten, replaced or gone)."""
        try:
            return fingerprint(self.path) != self.fingerprint
        except OSError:  # s3.ObjectError too: gone, or no longer readable
            return True


def expand_inputs(patterns: list[str], base: Path) -> tuple[list[VideoInput], list[tuple[str, str]]]:
    """Files, folders (searched recursively), globs and s3:// locations -> videos in a stable order, plus
    (input, reason) misses: all of `find_inputs` at once."""
    videos: list[VideoInput] = []
    missing: list[tuple[str, str]] = []
    for found in find_inputs(patterns, base):
        if isinstance(found, VideoInput):
            videos.append(found)
        else:
            missing.append(found)
    return videos, missing


def find_inputs(patterns: list[str], base: Path) -> Iterator[VideoInput | tuple[str, str]]:
    """The videos the inputs name, as they are found (an s3:// listing page by page), each once, in a stable
    order; and (input, reason) for an input that names none or cannot be listed."""
    seen: set[Path | str] = set()
    for pattern in patterns:
        for found in _matches(pattern, base):
            if isinstance(found, tuple):
                yield found
                continue
            key = found if isinstance(found, str) else found.resolve()
            if key not in seen:
                seen.add(key)
                yield VideoInput(key, video_id(key))


def _matches(pattern: str, base: Path) -> Iterator[Path | str | tuple[str, str]]:
    """One input's video files or objects (a listing as it goes), or (input, reason) when it names none."""
    if s3.is_s3(pattern):
        listed = 0
        try:
            for url, _ in s3.list_objects(pattern, VIDEO_SUFFIXES):
                listed += 1
                yield url
        except s3.ObjectError as exc:
            cut = f" (the listing stopped after {listed} videos; the rest were not read: rerun to do them)"
            yield pattern, f"{exc}{cut if listed else ''}"
            return
        if not listed:
            endings = ", ".join(sorted(VIDEO_SUFFIXES))
            yield pattern, f"no video object matches {pattern} (looked for keys ending in {endings})"
        return
    target = Path(pattern) if Path(pattern).is_absolute() else base / pattern
    if target.is_dir():
        yield from sorted(p for p in target.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    elif target.exists():
        yield target
    elif matches := sorted(glob.glob(str(target), recursive=True)):
        yield from (Path(m) for m in matches if Path(m).is_file())
    else:
        yield pattern, f"no such file, folder or glob match: {target}"


def video_id(path: Path | str) -> str:
    """`<folder>_<stem>-<hash of the absolute path or URL>`: readable, the same for the same file in every
    run, and different for `cam1/0001.mp4` and `cam2/0001.mp4`."""
    if isinstance(path, str):
        bucket, key = s3.split_url(path)
        parent, _, name = f"{bucket}/{key}".rpartition("/")
        readable, identity = f"{parent.rpartition('/')[2]}_{name.rpartition('.')[0] or name}", path
    else:
        absolute = path.resolve()
        readable, identity = f"{absolute.parent.name}_{absolute.stem}", str(absolute)
    # never a leading dot or underscore: Parquet readers skip such files in the clip table's folder
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", readable).strip("._")
    return f"{readable}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def fingerprint(path: Path | str) -> str:
    """Which file a path held when it was opened: the same path, size, modification time and inode give the
    same fingerprint; a file rewritten or replaced gets another. An object's is its ETag, size and version."""
    if isinstance(path, str):
        return s3.stat(path).fingerprint(path)
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def open_inputs(videos: list[VideoInput], cache: Path | None = None,
                ) -> tuple[list[VideoInput], list[tuple[VideoInput, str]]]:
    """Each video opened once (the run's inputs, a batch at a time as it goes): the readable ones with their
    fingerprint and what their container declares, and (video, reason) for those that cannot be read, both
    in input order. With `cache`, each object is first copied whole into that folder (see `cached_copy`).
    Objects in a store are opened OPENERS at a time (each costs a few round trips, mostly waiting), by
    threads that live on from batch to batch, each keeping its store client."""
    if any(isinstance(video.path, str) for video in videos):
        opened = list(_opening_pool().map(lambda video: _opened(video, cache), videos))
    else:
        opened = [_opened(video, cache) for video in videos]
    readable = [video for video, reason in opened if reason is None]
    unreadable = [(video, reason) for video, reason in opened if reason is not None]
    return readable, unreadable


@functools.cache
def _opening_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(OPENERS, thread_name_prefix="open-input")


def _opened(video: VideoInput, cache: Path | None) -> tuple[VideoInput, str | None]:
    """The video with its fingerprint and container's declarations, or why it cannot be read. An object is
    asked for its version once: that version is fingerprinted, copied (with `cache`) and read."""
    try:
        if isinstance(video.path, str):
            version = s3.stat(video.path)
            video = replace(video, fingerprint=version.fingerprint(video.path))
            if cache is not None:
                video = cached_copy(video, version, cache)
            container = open_video(video.local or video.path, block_size=PROBE_BLOCK,  # the header, not the frames
                                   version=None if video.local else version)
        else:
            video = replace(video, fingerprint=fingerprint(video.path))
            container = open_video(video.path)
    except FileNotFoundError:
        return video, f"{video.path}: file not found"
    except (s3.ObjectError, VideoError) as exc:
        return video, str(exc)
    try:
        return replace(video, meta=_declared(container)), None
    finally:
        container.close()


def cached_copy(video: VideoInput, version: s3.ObjectStat, folder: Path) -> VideoInput:
    """The object's `version` copied whole into `folder` once (`<video id>-<fingerprint><suffix>`, kept for
    later runs; an interrupted copy leaves only a `.part`); an OSError of the folder is one line naming it."""
    url = str(video.path)
    copy = folder / f"{video.video_id}-{video.fingerprint}{Path(s3.split_url(url)[1]).suffix}"
    if not copy.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            s3.download(url, version, copy)
        except s3.ObjectError:
            raise
        except OSError as exc:
            raise VideoError(f"{url}: cannot copy it into --cache-inputs {folder} ({exc.strerror or exc}); "
                             f"free room there or pick another folder") from None
    return replace(video, local=copy)


@dataclass(frozen=True)
class VideoMeta:
    fps: float
    """The average rate: what frame sampling counts in; the frames' own timestamps give times."""
    width: int
    height: int
    declared_frames: int | None = None
    """Frames the container's index lists (mp4, mov), when it has one."""
    declared_s: float | None = None
    """Duration the container declares, when it declares one."""


@dataclass(frozen=True)
class Truncation:
    """A video that decoded short of what its container declares: cut off, or damaged on the way."""

    decoded_frames: int
    declared_frames: int | None
    decoded_s: float
    declared_s: float | None

    def explain(self, path: Path) -> str:
        declared = " ".join(part for part in (
            f"{self.declared_frames} frames" if self.declared_frames is not None else "",
            f"({self.declared_s:.3f} s)" if self.declared_s is not None else "") if part)
        return (f"{path}: decoded {self.decoded_frames} frames ({self.decoded_s:.3f} s) of the {declared} its "
                f"container declares: the file is truncated or damaged")


def truncation(meta: VideoMeta, decoded_frames: int, decoded_s: float) -> Truncation | None:
    """What a video's container declares against what decoded, when the decode fell short of it.

    A short frame count is enough (an index lists every frame); a short duration must miss by more than two
    frames, since a last frame's duration is often a guess."""
    short_frames = meta.declared_frames is not None and decoded_frames < meta.declared_frames
    short_s = meta.declared_s is not None and decoded_s < meta.declared_s - 2 / meta.fps
    if not (short_frames or short_s):
        return None
    return Truncation(decoded_frames, meta.declared_frames, round(decoded_s, 3),
                      None if meta.declared_s is None else round(meta.declared_s, 3))


def probe(path: Path | str) -> VideoMeta:
    container = open_video(path)
    try:
        return _declared(container)
    finally:
        container.close()


def _declared(container: av.container.InputContainer) -> VideoMeta:
    stream = container.streams.video[0]
    if stream.duration is not None and stream.time_base is not None:
        declared_s: float | None = float(stream.duration * stream.time_base)
    else:
        declared_s = container.duration / av.time_base if container.duration else None
    return VideoMeta(float(average_rate(stream)), stream.codec_context.width, stream.codec_context.height,
                     stream.frames or None, declared_s)


def sample_indices(start: int, end: int, fps: float, sampling: str, rate: float,
                   max_frames: int | None = None) -> list[int]:
    """Frame indices (inclusive range start..end) a stage sees for one clip: at most `max_frames`, spread
    evenly over the ones the sampling picks, so a long shot never holds more frames than that."""
    if sampling == "every_frame":
        picked = list(range(start, end + 1))
    elif sampling == "one_per_clip":
        picked = [(start + end) // 2]
    else:
        step = max(fps / rate, 1.0)
        picked = sorted({min(end, start + round(k * step)) for k in range(int((end - start) / step) + 1)})
        picked = picked or [(start + end) // 2]
    if max_frames is None or len(picked) <= max_frames:
        return picked
    if max_frames == 1:
        return [picked[len(picked) // 2]]
    return [picked[round(i * (len(picked) - 1) / (max_frames - 1))] for i in range(max_frames)]
