"""What a run reports: its failures, in one shape, and its summary (run.json, the final table, the exit line).

Every failure names the video it belongs to (empty for the run as a whole), the clip (its index, or None for a
whole video) and the stage (or None), and says why in one line, so run.json never holds two spellings of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from orchestrator.pipeline.scaling.policy import ScalingDecision
from orchestrator.pipeline.stats import Timeline


@dataclass(frozen=True)
class Failure:
    """One thing the run could not do: a whole video (`clip_index` None), one clip of it, or the run itself
    (`video` empty)."""

    video: str
    reason: str
    clip_index: int | None = None
    stage: str | None = None

    def line(self) -> str:
        """The failure as the one line the command prints (naming the video once)."""
        if self.clip_index is None and self.stage is None and self.video and self.video in self.reason:
            return self.reason
        where = self.video or "the run"
        if self.clip_index is not None:
            where += f" clip {self.clip_index}"
        if self.stage is not None:
            where += f" (stage {self.stage!r})"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class RunSummary:
    """The run's outcome, as written to run.json. `videos_done` counts every input video whose results the
    output folder holds now (finished by this run or resumed from an earlier one)."""

    videos: int
    videos_done: int
    resumed: int
    clips: int
    kept: int
    failures: list[Failure]
    stages: dict[str, dict[str, Any]]
    wall_s: float
    autoscale: list[ScalingDecision] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    """Videos kept with a note: those that decoded short of what their container declares."""
    timeline: Timeline = field(default_factory=Timeline)
    """Per-stage items done and live replicas over the run (what the report plots)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

