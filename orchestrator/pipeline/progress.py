"""The live view of a run (rich): frames done (overall and of the current video), ETA from the speed since the
first clip (start-up and resumed videos not counted), per stage done, items/s, queue depth, workers; final table."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from orchestrator.pipeline.executor import RunState
from orchestrator.pipeline.summary import RunSummary


def render(state: RunState) -> Group:
    now = time.monotonic()
    eta = state.eta_s(now)
    frames = f"   frames {state.frames_done}/{state.frames_total}" if state.frames_total else ""
    current = state.current
    video = f"   this video {current.done}/{current.total} frames" if current and current.total else ""
    listing = "+ (listing)" if state.listing else ""
    header = Text(f"videos {state.videos_done}/{state.videos_total}{listing}{frames}{video}   clips {state.clips} "
                  f"(kept {state.kept})   failures {len(state.failures)}   elapsed {now - state.started:.0f}s   "
                  f"ETA {'-' if eta is None else f'{eta:.0f}s'}")
    table = Table("stage", "done", "failed", "items/s", "queue", "workers", "restarts", box=None)
    for stats in state.stages.values():
        workers = " ".join(stats.states) or "-"
        table.add_row(stats.name, str(stats.done), str(stats.failed), f"{stats.items_per_s():.2f}",
                      str(stats.queued), workers, str(stats.restarts))
    return Group(header, table)


def summary_table(summary: RunSummary) -> Table:
    table = Table("stage", "items", "failed", "items/s", "replicas", "worker restarts",
                  title=f"{summary.videos_done}/{summary.videos} videos, {summary.clips} clips, "
                        f"{summary.kept} kept, {len(summary.failures)} failures in {summary.wall_s:.1f}s")
    for name, stats in summary.stages.items():
        table.add_row(name, str(stats["items"]), str(stats["failed"]), f"{stats['items_per_s']:.2f}",
                      str(stats["replicas"]), str(stats["worker_restarts"]))
    return table
