"""`orchestrator report OUT`: the static HTML page of an output folder (what `orchestrator run` also writes
at its end). PyAV and Pillow are imported when the command runs, not when the command line is built."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from orchestrator.render import console


def report(
    out: Annotated[str, typer.Argument(help="An output folder of `orchestrator run`.")],
) -> None:
    """Write OUT/report.html: kept and filtered clips as previews, grouped by filter reason and duplicate group,
    per-stage throughput and replicas over the last run, failures and provenance. It needs no server: open it
    from the folder, a copy of it or a bucket (with report_files/ beside it)."""
    from orchestrator.pipeline.output.bucket import local_output_folder
    from orchestrator.report.write import write_report

    written = write_report(local_output_folder(out, "report"))
    console.print(f"report: {escape(str(written.path))} ({written.kept} kept clips, {written.not_kept} not kept)",
                  highlight=False, soft_wrap=True)
