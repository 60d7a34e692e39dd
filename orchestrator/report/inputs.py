"""What a report is made of, read from an output folder without changing it.

    metadata.jsonl ─▶ ClipRow per line (older rows, lacking clip_id/kept/duplicate_of, are read too)
    run.json       ─▶ the last run's summary (stages, timeline, failures, warnings), {} when absent
    provenance.jsonl ─▶ ProvenanceRecord per id (one line each: {"id", "stages": {stage: {model, env, lock,
                         weights, params}}}), none when the folder records none

Every field a row may lack is given the value the folder implies (kept: it has a clip file), so a folder
written by an older orchestrator, or before a dedup or provenance stage existed, still reports.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.dataset.provenance import read_provenance
from orchestrator.errors import ConfigError

METADATA = "metadata.jsonl"


@dataclass(frozen=True)
class ClipRow:
    """One row of metadata.jsonl, as the report shows it."""

    clip_id: str
    video: str
    clip_index: int | None
    start_s: float | None
    end_s: float | None
    path: str | None
    kept: bool
    filtered_by: tuple[str, ...]
    errors: tuple[str, ...]
    """Each failure of a stage on the clip, as `stage: reason`."""
    duplicate_of: str | None
    provenance: str | None

    @classmethod
    def from_json(cls, row: dict[str, Any], video_ids: dict[str, str]) -> ClipRow:
        """`video_ids`: each source's video id, for rows that name no clip (`<video id>_<index:04d>`)."""
        path = row.get("path") if isinstance(row.get("path"), str) else None
        index = row.get("clip_index")
        video_id = row.get("video_id") or video_ids.get(str(row.get("video")), Path(str(row.get("video"))).stem)
        clip_id = row.get("clip_id") or (Path(path).stem if path else f"{video_id}_{index:04d}"
                                         if isinstance(index, int) else f"{video_id} (no clip)")
        return cls(clip_id=str(clip_id), video=str(row.get("video", "")),
                   clip_index=index if isinstance(index, int) else None,
                   start_s=_number(row.get("start_s")), end_s=_number(row.get("end_s")), path=path,
                   kept=bool(row.get("kept", path is not None)),
                   filtered_by=tuple(str(r) for r in row.get("filtered_by") or ()),
                   errors=_errors(row.get("errors")),
                   duplicate_of=row.get("duplicate_of") or None, provenance=row.get("provenance") or None)

    def span(self) -> str:
        """The clip's times, as a person reads them."""
        if self.start_s is None or self.end_s is None:
            return "no clip"
        return f"{self.start_s:.2f}–{self.end_s:.2f} s"


@dataclass(frozen=True)
class ProvenanceRecord:
    """What produced a row's columns: per stage, its fields (env lock hash, weights hash, params, ...)."""

    id: str
    stages: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class ReportInput:
    out_dir: Path
    rows: list[ClipRow]
    run: dict[str, Any]
    provenance: list[ProvenanceRecord]


def read_inputs(out_dir: Path) -> ReportInput:
    """The folder's rows, last run summary and provenance; ConfigError when it holds no results."""
    metadata = out_dir / METADATA
    try:
        lines = metadata.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {metadata} ({exc.strerror})") from None
    raw = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            raise ConfigError(f"{metadata}: line {number} is not JSON; rerun `orchestrator run` into the "
                              f"folder to rebuild it from .parts/") from None
        if isinstance(row, dict):
            raw.append(row)
    # a kept clip's file is named `<video id>_<index>`: rows that lack the id get it from a sibling
    video_ids = {str(r.get("video")): Path(r["path"]).stem.rsplit("_", 1)[0] for r in raw
                 if isinstance(r.get("path"), str)}
    run = _read_json(out_dir / "run.json")
    return ReportInput(out_dir, [ClipRow.from_json(r, video_ids) for r in raw], run if isinstance(run, dict) else {},
                       _provenance(out_dir))


def _errors(errors: Any) -> tuple[str, ...]:
    """A row's errors as lines: `[{"stage", "reason"}, ...]`, or the older `{stage: reason}`."""
    if isinstance(errors, dict):
        return tuple(f"{stage}: {reason}" for stage, reason in errors.items())
    if not isinstance(errors, list):
        return ()
    return tuple(f"{e['stage']}: {e.get('reason')}" if isinstance(e, dict) and e.get("stage")
                 else str(e.get("reason") if isinstance(e, dict) else e) for e in errors)


def _provenance(out_dir: Path) -> list[ProvenanceRecord]:
    """The folder's provenance records, in the order they were recorded (lines that are not one are skipped)."""
    return [ProvenanceRecord(record_id, {name: asdict(stage) for name, stage in record.stages.items()})
            for record_id, record in read_provenance(out_dir).items()]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
