"""The live view of a run (rich): per stage done, items/s, queue depth, workers; overall ETA; final table."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from orchestrator.pipeline.executor import RunState


def render(state: RunState) -> Group:
    elapsed = time.monotonic() - state.started
    done, total = state.videos_done, state.videos_total
    eta = f"{elapsed / done * (total - done):.0f}s" if done and done < total else "-"
    header = Text(f"videos {done}/{total}   clips {state.clips} (kept {state.kept})   "
                  f"failures {len(state.failures)}   elapsed {elapsed:.0f}s   ETA {eta}")
    table = Table("stage", "done", "failed", "items/s", "queue", "workers", "restarts", box=None)
    for stats in state.stages.values():
        workers = " ".join(stats.states) or "-"
        table.add_row(stats.name, str(stats.done), str(stats.failed), f"{stats.items_per_s():.2f}",
                      str(stats.queued), workers, str(stats.restarts))
    return Group(header, table)


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table("stage", "items", "failed", "items/s", "replicas", "worker restarts",
                  title=f"{summary['videos_done']}/{summary['videos']} videos, {summary['clips']} clips, "
                        f"{summary['kept']} kept, {len(summary['failures'])} failures in {summary['wall_s']:.1f}s")
    for name, stats in summary["stages"].items():
        table.add_row(name, str(stats["items"]), str(stats["failed"]), f"{stats['items_per_s']:.2f}",
                      str(stats["replicas"]), str(stats["worker_restarts"]))
    return table
