"""The dedup stage over an output folder: once the streaming stages have finished a batch of videos, the
kept clips not yet judged are judged against those already judged (earlier runs' too), and the videos with
duplicates are rewritten through `OutputWriter.update_rows`.

    .parts/<video>.json ─▶ judged kept clips ─▶ index ─┐
                         └▶ unjudged kept clips, in order ─▶ judge ─▶ update_rows per video with duplicates
                                                                   ─▶ .parts/dedup/<stage>.json (judged videos)

Order: videos judged earlier first, in the order they were judged (their kept clips win), then this run's
videos in input order, then other videos in the folder by path; a video's clips by index. A video counts as
judged while its rows still carry what this stage made of them (a redone video is judged again).

A crash: each video's update is atomic, and the judged list is written after a pass's updates. A pass killed
midway leaves some videos updated while the list still calls them unjudged; the rerun judges them again, and
since they lost only duplicates (which never decide anything) it reaches the same kept set.

Semantic centroids (`.parts/dedup/<stage>.npy`) are trained on the first pass with enough clips for more than
one cluster, and again when the clips to index have grown enough for twice the clusters; in between they are
kept, so which pairs are compared does not change as clips come and go.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.atomic import atomic_write_bytes, atomic_write_text
from orchestrator.dataset.dedup import BLOCK, NONE, NearIndex, add_kept, judge
from orchestrator.dataset.dedup_kmeans import cluster_count, sample_positions, train_centroids, unit_rows
from orchestrator.dataset.dedup_phash import PhashIndex, parse_hashes
from orchestrator.dataset.dedup_semantic import SemanticIndex
from orchestrator.errors import PipelineError
from orchestrator.pipeline.config import DedupSpec
from orchestrator.pipeline.parts import Part

STATE_DIR = "dedup"
"""Under `.parts/`: what each dedup stage judged, and its centroids."""


@dataclass
class Clips:
    """Kept clips with a value in the stage's column, in order: where each row is, its id, its value."""

    where: list[tuple[str, int]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def blocks(self, method: str) -> Iterator[np.ndarray]:
        """The values in blocks of BLOCK, as the index takes them (float32 rows, or uint64 hashes)."""
        for start in range(0, len(self.values), BLOCK):
            chunk = self.values[start:start + BLOCK]
            yield parse_hashes(chunk) if method == "phash" else np.asarray(chunk, np.float32)


def clip_id(video_id: str, row: dict[str, Any]) -> str:
    """The row's `clip_id`, or the clip file's stem it is made of."""
    return row.get("clip_id") or f"{video_id}_{int(row['clip_index']):04d}"


def is_kept(row: dict[str, Any]) -> bool:
    return bool(row.get("kept", row.get("path")))


def is_original(row: dict[str, Any]) -> bool:
    """A kept clip no dedup has marked: only these are judged and compared with. A duplicate that `filter:
    false` keeps is not, so it decides nothing: in one pass and in batches the same pairs decide."""
    return is_kept(row) and not row.get("duplicate_of")


@dataclass(frozen=True)
class Judgement:
    """A pass's outcome: the new rows of each video with duplicates, and every video judged once they are
    written (in order)."""

    updates: dict[str, list[dict[str, Any]]]
    judged: list[str]


class DedupStage:
    """One dedup stage's passes over an output folder's parts."""

    def __init__(self, name: str, spec: DedupSpec, out_dir: Path) -> None:
        self.name, self.spec = name, spec
        self.source, self.field = spec.column.split(".")
        self.state_dir = out_dir / ".parts" / STATE_DIR
        self.judged_file = self.state_dir / f"{name}.json"
        self.centroids_file = self.state_dir / f"{name}.npy"

    def judge(self, parts: dict[str, Part], candidates: list[str]) -> Judgement | None:
        """Judge the kept clips of `candidates` (video ids, in order) not judged yet; None when there are none.
        Only reads (and may record new centroids): the caller writes the updates, then `record`s."""
        judged = self._judged(parts)
        done = set(judged)
        todo = [v for v in candidates if v in parts and v not in done]
        if not todo:
            return None
        kept, new = self._clips(parts, judged), self._clips(parts, todo)
        duplicates = self._duplicates(kept, new) if new.values else np.empty(0, np.int64)
        return Judgement(self._updates(parts, kept, new, duplicates), judged + todo)

    def record(self, parts: dict[str, Part], judgement: Judgement) -> None:
        """Once the updates are written: the videos judged, as their rows are now."""
        entries = [[v, self._digest(parts[v])] for v in judgement.judged if v in parts]
        self.state_dir.mkdir(exist_ok=True)
        atomic_write_text(self.judged_file, json.dumps({"judged": entries}) + "\n")

    def _judged(self, parts: dict[str, Part]) -> list[str]:
        """The videos judged by earlier passes whose rows still say what this stage made of them."""
        try:
            entries = json.loads(self.judged_file.read_text())["judged"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return [v for v, digest in entries if v in parts and self._digest(parts[v]) == digest]

    def _digest(self, part: Part) -> str:
        """What this stage's judgement of a video rests on and left in its rows: the clips, the values it compared
        (a `--redo-stage` of the stage that made them has the video judged again) and their marks."""
        marks = [(r.get("clip_index"), r.get("start_frame"), r.get("end_frame"), is_kept(r),
                  self.name in (r.get("filtered_by") or []), r.get("duplicate_of"),
                  (r.get(self.source) or {}).get(self.field)) for r in part.rows]
        return hashlib.sha256(json.dumps([part.fingerprint, marks]).encode()).hexdigest()[:32]

    def _clips(self, parts: dict[str, Part], videos: list[str]) -> Clips:
        clips = Clips()
        for video_id in videos:
            for index, row in enumerate(parts[video_id].rows):
                value = (row.get(self.source) or {}).get(self.field) if is_original(row) else None
                if value is not None:
                    clips.where.append((video_id, index))
                    clips.ids.append(clip_id(video_id, row))
                    clips.values.append(value)
        return clips

    def _duplicates(self, kept: Clips, new: Clips) -> np.ndarray:
        """For each new clip, the position in `kept` + `new` of the clip it duplicates, or NONE."""
        method = self.spec.method
        try:
            index = PhashIndex(int(self.spec.limit)) if method == "phash" else self._semantic(kept, new)
            first = add_kept(index, kept.blocks(method))
            return judge(index, new.blocks(method), first)
        except ValueError as exc:
            raise PipelineError(f"dedup stage {self.name!r}: column {self.spec.column!r} holds values that are "
                                f"not {'hex hashes' if method == 'phash' else 'float vectors of one length'} "
                                f"({exc})") from None

    def _semantic(self, kept: Clips, new: Clips) -> NearIndex:
        return SemanticIndex(self._centroids(kept, new), self.spec.limit)

    def _centroids(self, kept: Clips, new: Clips) -> np.ndarray:
        """The kept centroids, or new ones when the clips to index need twice as many clusters."""
        n = len(kept.values) + len(new.values)
        try:
            saved = np.load(self.centroids_file)
        except (OSError, ValueError):
            saved = None
        k = cluster_count(n)
        if k < 2 * (1 if saved is None else len(saved)):
            if saved is not None:
                return saved
            return unit_rows(np.asarray(new.values[:1], np.float32))
        values = kept.values + new.values
        sample = unit_rows(np.asarray([values[i] for i in sample_positions(n, k)], np.float32))
        centroids = train_centroids(sample, k)
        buffer = io.BytesIO()
        np.save(buffer, centroids)
        self.state_dir.mkdir(exist_ok=True)
        atomic_write_bytes(self.centroids_file, buffer.getvalue())
        return centroids

    def _updates(self, parts: dict[str, Part], kept: Clips, new: Clips,
                 duplicates: np.ndarray) -> dict[str, list[dict[str, Any]]]:
        ids = kept.ids + new.ids
        updates: dict[str, list[dict[str, Any]]] = {}
        for (video_id, index), target in zip(new.where, duplicates.tolist(), strict=True):
            if target == NONE:
                continue
            rows = updates.setdefault(video_id, [dict(r) for r in parts[video_id].rows])
            rows[index] = self._mark(rows[index], ids[target])
        return updates

    def _mark(self, row: dict[str, Any], original: str) -> dict[str, Any]:
        marked = {**row, "kept": is_kept(row), "duplicate_of": original}
        if self.spec.filter:
            marked.update(kept=False, filtered_by=[*(row.get("filtered_by") or []), self.name])
        return marked
