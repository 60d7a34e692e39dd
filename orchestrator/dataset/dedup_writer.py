"""An OutputWriter that runs the config's dedup stages as the run goes: after every `batch_videos` of this
run's videos have reached it (finished or resumed from an earlier run), over those videos, and once every video
is done (`finish_dedup`), over every video in the folder. Videos reach the writer in input order, so each pass
judges a continuation of the order the previous one judged: batches give what one pass at the end gives while
every pair is compared (phash, and semantic up to EXACT_UP_TO clips); beyond, where the batches fall decides
which clips the centroids are trained on (see dedup_stage).

It runs in the writer's thread: while a pass runs nothing else writes, and the streaming stages upstream wait
on their bounded channels (backpressure) until it is done.
"""

from __future__ import annotations

from typing import Any

from orchestrator.dataset.dedup_stage import DedupStage, clip_id
from orchestrator.dataset.table import is_kept
from orchestrator.errors import PipelineError
from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.items import Clip, VideoItem
from orchestrator.pipeline.output.writer import OutputWriter


class DedupingWriter(OutputWriter):
    """Writes a run's results and dedups them (see the module docstring); with no dedup stages, a plain writer."""

    def __init__(self, *args: Any, dedup: list[StageConfig], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dedup = [(DedupStage(s.name, s.dedup, self.out_dir), s.dedup.batch_videos) for s in dedup if s.dedup]
        self.reached: list[str] = []

    def finish_video(self, video: VideoItem, clips: list[Clip]) -> list[dict[str, Any]]:
        rows = super().finish_video(video, clips)
        video_id = video.video.video_id
        self.reached.append(video_id)
        due = [stage for stage, every in self.dedup if len(self.reached) % every == 0]
        if due:
            self._passes(due, self.reached)
        return self.parts[video_id].rows[:len(rows)] if video_id in self.parts else rows

    def finish_dedup(self) -> None:
        """The last pass: this run's videos in input order, then the folder's others by path."""
        ours = [v.video_id for v in self.videos]
        others = sorted((p for p in self.parts.values() if p.video_id not in set(ours)),
                        key=lambda p: (p.video, p.video_id))
        self._passes([stage for stage, _ in self.dedup], ours + [p.video_id for p in others])

    def kept_clips(self) -> int:
        """Kept clips of this run's videos, as the folder holds them now."""
        parts = [self.parts[v.video_id] for v in self.videos if v.video_id in self.parts]
        return sum(is_kept(row) for part in parts for row in part.rows)

    def _passes(self, stages: list[DedupStage], candidates: list[str]) -> None:
        for stage in stages:
            judgement = stage.judge(self.parts, candidates)
            if judgement is None:
                continue
            for video_id in judgement.judged:
                if video_id in judgement.updates:
                    self.update_rows(video_id, judgement.updates[video_id])
            with self._writing(PipelineError):
                self._drop_unkept_clip_files(judgement.judged)
                stage.record(self.parts, judgement)

    def _drop_unkept_clip_files(self, videos: list[str]) -> None:
        """A clip file whose row is no longer kept (a pass killed between a video's update and its clean-up
        leaves one): the rows are the truth, and only a kept row has a file."""
        for video_id in videos:
            for row in self.parts[video_id].rows if video_id in self.parts else []:
                relative = f"clips/{clip_id(video_id, row)}.mp4"
                if not is_kept(row) and row.get("clip_index") is not None and self._has_clip(relative):
                    self._remove_clip(relative)
