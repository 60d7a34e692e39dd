"""Outputs, written so that a crash never leaves anything that looks complete but is not, and a rerun resumes.

    <out>/clips/<video id>_<clip>.mp4   kept clips, renamed into place once encoded and judged
    <out>/.parts/<video id>.json        one finished video: its fingerprint, rows and whether it succeeded
    <out>/.parts/pipeline.json          what decided the results beside it (stages, params, codec)
    <out>/clips.parquet/<video id>.parquet  the same rows as a typed table, rebuilt from a part when stale
    <out>/clips.parquet/_schema.json    the table's schema, recorded once known (orchestrator.dataset.table)
    <out>/metadata.jsonl                every finished video's rows, rebuilt from the parts (atomic)
    <out>/provenance.jsonl              what made the rows (locks, weights, params), one line per distinct set
    <out>/run.json                      the last run's summary (atomic)
    <out>/shards/                       WebDataset shards of the kept clips, when asked for (dataset/shards.py)
    <out>/.previous/<time>/             what `--fresh` set aside: the earlier results, never deleted

An `s3://` output holds the same (`bucket`): the writer writes the small files into a local working copy as
here and puts each in the bucket once written, clips moved into place in the store before the part that lists
them (orchestrator/pipeline/output/bucket.py).

The writer is made only once the run is known to be able to start (config valid, stages described, weights
present, inputs opened) and while the run holds the folder's lock, so a run that fails early or a second run
leaves the folder as it was. metadata.jsonl is never truncated: it is replaced, whole, by the rows of every
part in the folder (this run's inputs first, in input order, then videos earlier runs finished), as videos
finish and at the end. Clip names are fixed by the video's id and the clip's index, so redoing a video replaces
what a killed run left instead of adding to it. Every row has the same keys (docs/dataset.md): a video that
failed before it had a clip has one row of its own, and a stage that failed on a clip leaves its key null.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.atomic import atomic_write_bytes, atomic_write_text
from orchestrator.dataset.provenance import PROVENANCE_FILE, record_provenance
from orchestrator.dataset.shards import MANIFEST, SHARDS_DIR
from orchestrator.dataset.table import INFERRED, TABLE_DIR, ClipTable, TableSpec
from orchestrator.errors import ConfigError, OutputFull, PipelineError
from orchestrator.pipeline.items import Clip, VideoItem
from orchestrator.pipeline.media.video import VideoInput
from orchestrator.pipeline.output.bucket import BucketFolder
from orchestrator.pipeline.output.parts import PIPELINE_FILE, Part, finished_part, read_parts, resumable_rows
from orchestrator.pipeline.summary import RunSummary
from workers.media.s3 import ObjectError

LAYOUT = 3
"""Bumped when the folder's layout (part names, clip names) changes: older results are not mixed in."""
LARGE_METADATA = 16 << 20
"""metadata.jsonl is rebuilt whole; beyond this size (tens of thousands of clips), at most every LARGE_REBUILD_S."""
LARGE_REBUILD_S = 10.0
RESULTS = ("clips", ".parts", TABLE_DIR, "metadata.jsonl", PROVENANCE_FILE, "run.json", "shards", "report.html",
           "report_files")
"""What `--fresh` sets aside."""


def to_json(value: Any) -> Any:
    """numpy arrays and scalars as plain JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _claim(results_key: dict[str, Any]) -> dict[str, Any]:
    return {"layout": LAYOUT, "results": results_key}


def check_results_key(out_dir: Path, results_key: dict[str, Any], shown: str | None = None) -> None:
    """Refuse a folder whose parts another pipeline config made: they must not be mixed into these results.
    Only reads, so a run can ask before it may write. `shown`: the folder as the user named it (a bucket
    output's URL; `out_dir` is then its working copy)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        earlier = json.loads((out_dir / ".parts" / PIPELINE_FILE).read_text())
        if earlier != _claim(results_key):
            what = ("an older orchestrator's layout" if earlier.get("layout") != LAYOUT
                    else "a different pipeline (stages, params or codec changed)")
            where = shown or str(out_dir)
            aside = f"{where.rstrip('/')}/.previous"
            raise ConfigError(f"{where} holds results of {what}; rerun with --fresh to start over there (the "
                              f"earlier results are moved to {aside}), or choose another --output")


def _is_clip_path(path: Any) -> bool:
    """A row's clip path that points into clips/ (a hand-edited row never removes anything else)."""
    return isinstance(path, str) and Path(path).parent == Path("clips")


class OutputWriter:
    """Writes one run's results into a folder whose lock the run holds."""

    def __init__(self, out_dir: Path, results_key: dict[str, Any], videos: list[VideoInput],
                 fresh: bool = False, table: TableSpec = INFERRED,
                 unreadable: list[tuple[VideoInput, str]] | None = None, bucket: BucketFolder | None = None) -> None:
        """`fresh` moves the earlier results aside (see `set_aside`) instead of refusing another pipeline's;
        `table` names the clip stages (each row has their keys) with their declared outputs, and what made them;
        `unreadable` are the input files that could not be opened, with why (a run to the end records a row
        for each); `bucket`: the output is that bucket folder, `out_dir` its local working copy. `videos` and
        `unreadable` may grow while the run goes (its inputs are opened as it works): the writer reads the
        lists it was given, never copies."""
        self.out_dir = out_dir
        self.bucket = bucket
        self.shown: Path | str = bucket.url if bucket is not None else out_dir
        """The folder as the user named it, for messages."""
        self.unreadable = unreadable if unreadable is not None else []
        self.parts_dir = out_dir / ".parts"
        self.clips_tmp: Path | str = bucket.scratch() if bucket else out_dir / ".tmp"
        """Where clips are encoded before they are kept or dropped (a prefix in the bucket for an s3:// output)."""
        self.videos = videos
        self.set_aside: Path | str | None = None
        """Where `fresh` moved the earlier results, if there were any."""
        claim = _claim(results_key)
        with self._writing(ConfigError):
            if fresh:
                self.set_aside = self._set_aside()
            else:
                check_results_key(out_dir, results_key, str(self.shown))
            self._clear_scratch()
            for sub in ("clips", ".parts", ".tmp"):
                (out_dir / sub).mkdir(parents=True, exist_ok=True)
            if not (self.parts_dir / PIPELINE_FILE).exists():
                atomic_write_text(self.parts_dir / PIPELINE_FILE, json.dumps(claim, indent=2, sort_keys=True) + "\n")
                self._publish(f".parts/{PIPELINE_FILE}")
        self.parts: dict[str, Part] = read_parts(self.parts_dir)
        self.stages = list(table.outputs)
        self.table = ClipTable(out_dir, table.outputs)
        with self._writing(PipelineError):
            self.provenance = (record_provenance(out_dir, table.provenance) if table.provenance is not None
                               else None)
            self.table.sync(self.parts)
            if bucket is not None:
                bucket.publish_changed()
        self.changed = False
        """Whether this run finished a video: only then does it rewrite metadata.jsonl and run.json."""
        self._rebuilt_at = 0.0
        self._metadata_bytes = 0

    def _clear_scratch(self) -> None:
        if self.bucket is not None:
            self.bucket.clear_scratch()
        else:
            shutil.rmtree(self.clips_tmp, ignore_errors=True)

    def _publish(self, relative: str) -> None:
        """Put a small file just written into the bucket, for an s3:// output."""
        if self.bucket is not None:
            self.bucket.publish(relative)

    def _has_clip(self, relative: str) -> bool:
        return self.bucket.has(relative) if self.bucket is not None else (self.out_dir / relative).is_file()

    def _remove_clip(self, relative: str) -> None:
        if self.bucket is not None:
            self.bucket.delete(relative)
        else:
            (self.out_dir / relative).unlink(missing_ok=True)

    def _set_aside(self) -> Path | str | None:
        """Move the earlier results into `.previous/<UTC time>/`, so starting over never destroys them."""
        if self.bucket is not None:
            aside = self.bucket.set_aside()
            self.bucket.pull()  # the working copy follows: nothing is left to resume from
            return aside
        present = [name for name in RESULTS if (self.out_dir / name).exists()]
        if not present:
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.out_dir / ".previous" / stamp
        target.mkdir(parents=True)
        for name in present:
            os.replace(self.out_dir / name, target / name)
        return target

    def resumable(self, video: VideoInput) -> list[dict[str, Any]] | None:
        """The rows of an earlier run that finished `video` (as opened now) successfully, whose clips are all
        still here."""
        return resumable_rows(self.parts.get(video.video_id), video, self._has_clip)

    def kept(self, unopened: Iterable[VideoInput] = ()) -> int:
        """This run's videos whose finished results the folder holds; `unopened`: videos found that the run
        had not opened yet, counted when the folder holds a finished part of them (as last fingerprinted)."""
        return (sum(self.resumable(video) is not None for video in self.videos)
                + sum(finished_part(self.parts.get(video.video_id), video, self._has_clip) for video in unopened))

    def finish_video(self, video: VideoItem, clips: list[Clip]) -> list[dict[str, Any]]:
        """Keep or drop each clip's file, record the video's part atomically, then its table part, then rebuild
        metadata.jsonl. Returns the clips' rows; a video that failed before it had a clip is recorded as one row
        of its own (no clip index, its error), which is not returned."""
        if video.resumed is not None:
            return video.resumed
        with self._writing(PipelineError):
            results = [self._clip_row(video, clip) for clip in clips]
            results += [self._failed_video_row(video)] if video.error and not clips else []
            rows = json.loads(json.dumps(results, default=to_json))  # the rows as a rerun will read them back
            ok = video.error is None and not any(clip.errors for clip in clips)
            part = Part(str(video.video.path), video.video.video_id, video.video.fingerprint, ok, rows)
            self._drop_stale_clips(self.parts.get(part.video_id), {r["path"] for r in rows if r["path"]})
            self._record(part, results)
        return rows[:len(clips)]

    def update_rows(self, video_id: str, rows: list[dict[str, Any]]) -> None:
        """Replace a finished video's rows (as the dedup stage marks duplicates): its part, then its table part,
        each atomically (a crash leaves the old rows or the new; a stale table part is rebuilt from the part),
        then the clip files of rows no longer kept, then metadata.jsonl."""
        earlier = self.parts.get(video_id)
        if earlier is None:
            raise PipelineError(f"{self.out_dir}: no finished video {video_id!r} to update rows of")
        rows = json.loads(json.dumps(rows, default=to_json))
        for row in rows:
            row["path"] = row.get("path") if row.get("kept") else None
        kept = {Path(row["path"]).name for row in rows if _is_clip_path(row["path"])}
        with self._writing(PipelineError):
            self._record(replace(earlier, rows=rows), None)
            for name in self._clip_files(video_id):
                if name not in kept:
                    self._remove_clip(f"clips/{name}")

    def _clip_files(self, video_id: str) -> list[str]:
        """The names of the clip files in the folder named for `video_id` (whatever its rows say: a step killed
        between a video's update and its clean-up leaves one that the next update removes)."""
        own = re.compile(rf"{re.escape(video_id)}_\d+\.mp4")
        names = (sorted(self.bucket.clips) if self.bucket is not None
                 else [p.name for p in (self.out_dir / "clips").glob(f"{glob.escape(video_id)}_*.mp4")])
        return [name for name in names if own.fullmatch(name)]

    def record_results_key(self, results_key: dict[str, Any]) -> None:
        """Record that the folder's results are now those of `results_key` (after a step redid part of them)."""
        with self._writing(PipelineError):
            atomic_write_text(self.parts_dir / PIPELINE_FILE,
                              json.dumps(_claim(results_key), indent=2, sort_keys=True) + "\n")
            self._publish(f".parts/{PIPELINE_FILE}")

    def _record(self, part: Part, results: list[dict[str, Any]] | None) -> None:
        if not self.changed:  # shards certify the rows they were written from: not these
            (self.out_dir / SHARDS_DIR / MANIFEST).unlink(missing_ok=True)
        atomic_write_text(self.parts_dir / f"{part.video_id}.json", json.dumps(part.to_json(), default=to_json)
                          + "\n")
        self._publish(f".parts/{part.video_id}.json")  # after the clips it lists are in place
        self.parts[part.video_id] = part
        self.table.add(part, results, self.parts)
        self._publish(f"{TABLE_DIR}/{part.video_id}.parquet")
        self.changed = True
        self._rebuild_metadata(force=False)

    def _video_columns(self, video: VideoItem) -> dict[str, Any]:
        """What every row of a video says about the video itself."""
        meta = video.meta or video.video.meta
        return {"video_id": video.video.video_id, "video": str(video.video.path),
                "fps": meta.fps if meta else None, "width": meta.width if meta else None,
                "height": meta.height if meta else None, "video_frames": video.n_frames or None}

    def _clip_row(self, video: VideoItem, clip: Clip) -> dict[str, Any]:
        """The clip's row, its stages' results as the models returned them (numpy arrays still arrays)."""
        kept = clip.active and (clip.encoded is not None or clip.encode_to is None)  # None: no clip files wanted
        path = None
        name = f"{video.video.video_id}_{clip.index:04d}.mp4"
        if kept and clip.encoded is not None and self.bucket is not None:
            path = self.bucket.adopt(str(clip.encoded), name)
        elif kept and clip.encoded is not None:
            target = self.out_dir / "clips" / name
            os.replace(clip.encoded, target)
            path = str(target.relative_to(self.out_dir))
        elif clip.encoded is not None and self.bucket is not None:
            self.bucket.drop(str(clip.encoded))
        elif clip.encoded is not None:
            Path(clip.encoded).unlink(missing_ok=True)
        return {
            "clip_id": f"{video.video.video_id}_{clip.index:04d}", **self._video_columns(video),
            "clip_index": clip.index, "start_frame": clip.start, "end_frame": clip.end,
            "frames": clip.end - clip.start + 1, "start_s": clip.start_s, "end_s": clip.end_s, "path": path,
            "kept": kept, "filtered_by": (clip.filtered_by or [f"error:{s}" for s in clip.errors]) or None,
            "errors": [{"stage": s, "reason": r} for s, r in clip.errors.items()] or None,
            **self._common(video), **{name: None for name in self.stages}, **clip.results,
        }

    def _failed_video_row(self, video: VideoItem) -> dict[str, Any]:
        """The row of a video that failed before it had a clip: the video's columns and its error."""
        return {
            "clip_id": None, **self._video_columns(video), "clip_index": None, "start_frame": None,
            "end_frame": None, "frames": None, "start_s": None, "end_s": None, "path": None, "kept": False,
            "filtered_by": ["error:video"], "errors": [{"stage": None, "reason": video.error}],
            **self._common(video), **{name: None for name in self.stages},
        }

    def _common(self, video: VideoItem) -> dict[str, Any]:
        return {"duplicate_of": None, "truncated": None, **video.notes, "provenance": self.provenance}

    def _drop_stale_clips(self, earlier: Part | None, kept: set[str]) -> None:
        """Clip files an earlier attempt at this video kept that this attempt does not."""
        for row in earlier.rows if earlier else []:
            path = row.get("path")
            if _is_clip_path(path) and path not in kept:
                self._remove_clip(path)

    def _rebuild_metadata(self, force: bool) -> None:
        """Replace metadata.jsonl with every part's rows: after each video, except that a large one (many
        videos) is rebuilt at most every `LARGE_REBUILD_S` between videos; always at the end."""
        now = time.monotonic()
        if not force and self._metadata_bytes > LARGE_METADATA and now - self._rebuilt_at < LARGE_REBUILD_S:
            return
        ours = [self.parts[v.video_id] for v in self.videos if v.video_id in self.parts]
        mine = {part.video_id for part in ours}
        others = sorted((p for p in self.parts.values() if p.video_id not in mine), key=lambda p: (p.video, p.video_id))
        lines = "".join(json.dumps(row) + "\n" for part in [*ours, *others] for row in part.rows).encode()
        atomic_write_bytes(self.out_dir / "metadata.jsonl", lines)
        self._publish("metadata.jsonl")
        self._rebuilt_at, self._metadata_bytes = now, len(lines)

    def finish_run(self, summary: RunSummary, completed: bool) -> None:
        """Drop the scratch folder (first: on a full disk that frees room), then write metadata.jsonl and
        run.json if this run finished a video or ran to the end (a run stopped before finishing anything
        leaves an earlier run's record as it was)."""
        with self._writing(PipelineError):
            self._clear_scratch()
            if completed:
                self._record_unreadable()
            if self.changed or completed or not (self.out_dir / "metadata.jsonl").exists():
                self._rebuild_metadata(force=True)
            if self.changed or completed or not (self.out_dir / "run.json").exists():
                atomic_write_text(self.out_dir / "run.json",
                                  json.dumps(summary.to_json(), indent=2, default=to_json) + "\n")
            if self.bucket is not None:
                self.bucket.publish_changed()

    def _record_unreadable(self) -> None:
        """A failed part of one row for each input file that could not be opened, so the table names it too;
        never in place of a finished video's part, nor of one that keeps clips (a file that breaks later loses
        no finished results).
        A failed part is not resumed: the next run tries the file again."""
        for video, reason in self.unreadable:
            earlier = self.parts.get(video.video_id)
            if earlier is None or not (earlier.ok or any(row.get("path") for row in earlier.rows)):
                row = json.loads(json.dumps(self._failed_video_row(VideoItem(-1, video, error=reason))))
                self._record(Part(str(video.path), video.video_id, "", False, [row]), [row])

    @contextlib.contextmanager
    def _writing(self, error: type[Exception]) -> Iterator[None]:
        """A file system error as one line naming the folder: a full disk stops the run (OutputFull)."""
        try:
            yield
        except ObjectError as exc:  # the bucket's refusal says what failed where
            raise error(str(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutputFull(f"{self.out_dir}: no space left on device; free some space and rerun the same "
                                 f"command to resume") from None
            if error is ConfigError:
                raise ConfigError(f"output directory {self.out_dir} is not writable ({exc.strerror}); choose "
                                  f"another with --output") from None
            raise PipelineError(f"cannot write to {self.out_dir} ({exc.strerror}: {exc.filename})") from None
