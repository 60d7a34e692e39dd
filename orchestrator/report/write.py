"""Writing an output folder's report, so that it can never cost the folder its results.

    lock the folder ─▶ read rows, run.json, provenance ─▶ images (new ones only) ─▶ report.html (atomic)
        ─▶ remove images no page shows any more ─▶ unlock

The report only reads the results and writes `report.html` and `report_files/`; it takes the folder's lock, so
it never races a run into the same folder. After a run, any failure to write it is a warning: the run's
results and exit code stay what they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.atomic import atomic_write_text
from orchestrator.errors import ConfigError, OrchestratorError, OutputBusy, PipelineError
from orchestrator.pipeline.output.lock import OutputLock
from orchestrator.report.inputs import METADATA, read_inputs
from orchestrator.report.page import render
from orchestrator.report.thumbs import Thumbnails

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class Written:
    """A report written: where, and the clips it shows."""

    path: Path
    kept: int
    not_kept: int


def write_report(out_dir: Path) -> Written:
    """Write `<out_dir>/report.html` (and its images) from the folder's results, holding the folder's lock."""
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is not a folder: give the output folder of an `orchestrator run`")
    if not (out_dir / METADATA).is_file():  # before the lock, which would add its files to any folder
        raise ConfigError(f"{out_dir} holds no {METADATA}: give the output folder of an `orchestrator run`")
    lock = OutputLock(out_dir)
    target = out_dir / REPORT_FILE
    thumbs = Thumbnails(out_dir)
    try:
        lock.acquire()
        report = read_inputs(out_dir)
        try:
            atomic_write_text(target, render(report, thumbs))
        except BaseException:
            thumbs.discard_created()
            raise
        thumbs.prune()
    except OutputBusy:
        raise OutputBusy(f"{out_dir} is in use by a run, which writes its report when it ends (or run "
                         f"`orchestrator report {out_dir}` once it has)") from None
    except OSError as exc:
        raise PipelineError(f"cannot write the report {target} ({exc.strerror}); the results are untouched") \
            from None
    finally:
        lock.release()
    kept = sum(row.kept for row in report.rows)
    return Written(target, kept, len(report.rows) - kept)


def report_after_run(out_dir: Path, warn: Callable[[str], None]) -> Written | None:
    """The report at the end of a run: any failure (even a bug in the report) is a warning, never the run's."""
    try:
        return write_report(out_dir)
    except Exception as exc:  # the run's results are written: nothing here may fail it
        reason = str(exc) if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {exc}"
        warn(f"the report was not written: {reason}; `orchestrator report {out_dir}` tries again")
        return None
