"""The dedup stage over an output folder: once the streaming stages have finished a batch of videos, the
original clips (kept, and marked by no dedup) not yet judged are judged against those already judged (earlier
runs' too), and the videos with duplicates are rewritten through `OutputWriter.update_rows`.

    .parts/<video>.json           which clips are originals, their ids (and the marks written back)
    clips.parquet/<video>.parquet their values: only the stage's column, one video at a time
    judged videos' originals ─▶ kept index (alive within a run; a run's first pass builds it from the table)
    unjudged originals, in order, in blocks ─▶ judge against it ─▶ update_rows per video with duplicates
                                                                ─▶ .parts/dedup/<stage>.json (judged videos)

Order: videos judged earlier first, in the order they were judged (their kept clips win), then this run's
videos in input order, then other videos in the folder by path; a video's clips by index. A video counts as
judged while its rows still carry what this stage made of them (a redone video is judged again).

A crash: each video's update is atomic, and the judged list is written after a pass's updates. A pass killed
midway leaves some videos updated while the list still calls them unjudged; the rerun judges them again, and
since they lost only duplicates (which never decide anything) it reaches the same kept set.

Semantic centroids (`.parts/dedup/<stage>.npy`) are trained on the first pass with more than EXACT_UP_TO clips
to index (the originals judged so far and the pass's own), on an even sample of them, and again when the clips
have grown enough for twice the clusters; in between they are kept. Up to EXACT_UP_TO clips there is one
cluster, every pair is compared, and batches, runs or one pass give the same kept set. Beyond, the centroids
depend on which clips the training pass saw, so how the videos were batched (or split between runs) decides
which pairs across a cluster boundary are compared, and can change the kept set; the same folder, inputs
and settings always give the same result.
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
from orchestrator.dataset.dedup import NONE, NearIndex, add_kept, judge
from orchestrator.dataset.dedup_kmeans import cluster_count, sample_positions, train_centroids, unit_rows
from orchestrator.dataset.dedup_phash import PhashIndex
from orchestrator.dataset.dedup_semantic import SemanticIndex
from orchestrator.dataset.dedup_values import TableValues
from orchestrator.dataset.table import is_kept
from orchestrator.errors import PipelineError
from orchestrator.pipeline.config import DedupSpec
from orchestrator.pipeline.output.parts import Part

STATE_DIR = "dedup"
"""Under `.parts/`: what each dedup stage judged, and its centroids."""


@dataclass
class Selection:
    """Original clips with a value in the stage's column, in order: each video's row positions, and the clips'
    ids. Their values stay in the clip table until a pass streams them into the index."""

    videos: list[tuple[str, list[int]]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def where(self) -> Iterator[tuple[str, int]]:
        return ((video_id, index) for video_id, positions in self.videos for index in positions)


@dataclass
class Kept:
    """A stage's kept index, alive across a run's passes: the videos judged into it (in order), the clip id of
    each index id, how many clips it holds, and the centroids it was built on (semantic)."""

    videos: list[str]
    ids: list[str]
    size: int
    index: NearIndex
    centroids: np.ndarray | None


def clip_id(video_id: str, row: dict[str, Any]) -> str:
    """The row's `clip_id`, or the clip file's stem it is made of."""
    return row.get("clip_id") or f"{video_id}_{int(row['clip_index']):04d}"


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
    """One dedup stage's passes over an output folder's parts. Within a run the kept index stays alive from
    pass to pass (a pass costs its new clips, not every clip); a run's first pass builds it from the table."""

    def __init__(self, name: str, spec: DedupSpec, out_dir: Path) -> None:
        self.name, self.spec = name, spec
        self.source, self.field = spec.column.split(".")
        self.values = TableValues(out_dir, spec.column, spec.method)
        self.state_dir = out_dir / ".parts" / STATE_DIR
        self.judged_file = self.state_dir / f"{name}.json"
        self.centroids_file = self.state_dir / f"{name}.npy"
        self._kept: Kept | None = None
        """The index as the last recorded pass left it (a pass takes it, `record` gives it back)."""
        self._pending: Kept | None = None
        self._digests: dict[str, tuple[Part, str]] = {}

    def judge(self, parts: dict[str, Part], candidates: list[str]) -> Judgement | None:
        """Judge the original clips of `candidates` (video ids, in order) not judged yet; None when there are
        none. Only reads (and may record new centroids): the caller writes the updates, then `record`s."""
        judged = self._judged(parts)
        done = set(judged)
        todo = [v for v in candidates if v in parts and v not in done]
        if not todo:
            return None
        new = self._select(parts, todo)
        kept, self._kept, self._pending = self._index(parts, judged, new), None, None
        try:
            duplicates = judge(kept.index, self.values.blocks(new.videos), len(kept.ids))
        except ValueError as exc:
            raise self._bad_values(exc) from None
        updates = self._updates(parts, kept.ids, new, duplicates)
        kept.ids.extend(new.ids)
        self._pending = Kept(judged + todo, kept.ids, kept.size + int((duplicates == NONE).sum()), kept.index,
                             kept.centroids)
        return Judgement(updates, judged + todo)

    def record(self, parts: dict[str, Part], judgement: Judgement) -> None:
        """Once the updates are written: the videos judged, as their rows are now."""
        entries = [[v, self._digest(parts[v])] for v in judgement.judged if v in parts]
        self.state_dir.mkdir(exist_ok=True)
        atomic_write_text(self.judged_file, json.dumps({"judged": entries}) + "\n")
        self._kept, self._pending = self._pending, None

    def _judged(self, parts: dict[str, Part]) -> list[str]:
        """The videos judged by earlier passes whose rows still say what this stage made of them."""
        try:
            entries = json.loads(self.judged_file.read_text())["judged"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return [v for v, digest in entries if v in parts and self._digest(parts[v]) == digest]

    def _digest(self, part: Part) -> str:
        """What this stage's judgement of a video rests on and left in its rows: the clips, the values it compared
        (a `--redo-stage` of the stage that made them has the video judged again) and their marks. Hashed once
        per version of the part (the writer replaces a part whenever it changes its rows)."""
        cached = self._digests.get(part.video_id)
        if cached is not None and cached[0] is part:
            return cached[1]
        marks = [(r.get("clip_index"), r.get("start_frame"), r.get("end_frame"), is_kept(r),
                  self.name in (r.get("filtered_by") or []), r.get("duplicate_of"),
                  (r.get(self.source) or {}).get(self.field)) for r in part.rows]
        digest = hashlib.sha256(json.dumps([part.fingerprint, marks]).encode()).hexdigest()[:32]
        self._digests[part.video_id] = (part, digest)
        return digest

    def _select(self, parts: dict[str, Part], videos: list[str]) -> Selection:
        selection = Selection()
        for video_id in videos:
            positions = [i for i, row in enumerate(parts[video_id].rows)
                         if is_original(row) and (row.get(self.source) or {}).get(self.field) is not None]
            selection.videos.append((video_id, positions))
            selection.ids.extend(clip_id(video_id, parts[video_id].rows[i]) for i in positions)
        return selection

    def _index(self, parts: dict[str, Part], judged: list[str], new: Selection) -> Kept:
        """The kept index of the `judged` videos: the live one, unless it holds other videos or the clips to index
        call for new centroids; else built from the table."""
        alive = self._kept if self._kept is not None and self._kept.videos == judged else None
        kept = self._select(parts, judged) if alive is None else None
        size = (alive.size if alive is not None else len(kept.ids)) + len(new.ids)
        try:
            centroids = None if self.spec.method == "phash" else self._centroids(parts, judged, kept, new, size)
            if alive is not None and (centroids is None or centroids is alive.centroids):
                return alive
            kept = kept or self._select(parts, judged)
            index = PhashIndex(int(self.spec.limit)) if centroids is None else SemanticIndex(centroids,
                                                                                            self.spec.limit)
            add_kept(index, self.values.blocks(kept.videos))
        except ValueError as exc:
            raise self._bad_values(exc) from None
        return Kept(judged, kept.ids, len(kept.ids), index, centroids)

    def _bad_values(self, exc: ValueError) -> PipelineError:
        what = "hex hashes" if self.spec.method == "phash" else "float vectors of one length"
        return PipelineError(f"dedup stage {self.name!r}: column {self.spec.column!r} holds values that are not "
                             f"{what} ({exc})")

    def _centroids(self, parts: dict[str, Part], judged: list[str], kept: Selection | None, new: Selection,
                   n: int) -> np.ndarray:
        """The centroids in force (the live index's, or the saved ones), or new ones when the clips to index
        need twice as many clusters: trained on an even sample of them, in order."""
        current = self._kept.centroids if self._kept is not None else self._saved_centroids()
        k = cluster_count(n)
        if k < 2 * (1 if current is None else len(current)):
            return current if current is not None else np.ones((1, 1), np.float32)
        kept = kept or self._select(parts, judged)
        sample = unit_rows(self._sample([*kept.videos, *new.videos], sample_positions(n, k)))
        centroids = train_centroids(sample, k)
        buffer = io.BytesIO()
        np.save(buffer, centroids)
        self.state_dir.mkdir(exist_ok=True)
        atomic_write_bytes(self.centroids_file, buffer.getvalue())
        return centroids

    def _saved_centroids(self) -> np.ndarray | None:
        try:
            return np.load(self.centroids_file)
        except (OSError, ValueError):
            return None

    def _sample(self, videos: list[tuple[str, list[int]]], positions: np.ndarray) -> np.ndarray:
        """The values at these positions (ascending) of the clips of `videos`, streamed block by block."""
        picked, start = [], 0
        for block in self.values.blocks(videos):
            ahead = positions[(positions >= start) & (positions < start + len(block))]
            picked.append(block[ahead - start])
            start += len(block)
        return np.concatenate(picked)

    def _updates(self, parts: dict[str, Part], kept_ids: list[str], new: Selection,
                 duplicates: np.ndarray) -> dict[str, list[dict[str, Any]]]:
        updates: dict[str, list[dict[str, Any]]] = {}
        for (video_id, index), target in zip(new.where(), duplicates.tolist(), strict=True):
            if target == NONE:
                continue
            original = kept_ids[target] if target < len(kept_ids) else new.ids[target - len(kept_ids)]
            rows = updates.setdefault(video_id, [dict(r) for r in parts[video_id].rows])
            rows[index] = self._mark(rows[index], original)
        return updates

    def _mark(self, row: dict[str, Any], original: str) -> dict[str, Any]:
        marked = {**row, "kept": is_kept(row), "duplicate_of": original}
        if self.spec.filter:
            marked.update(kept=False, filtered_by=[*(row.get("filtered_by") or []), self.name])
        return marked
