"""`orchestrator run CONFIG --redo-stage NAME`: rerun one model stage over the clips an output folder keeps and
replace that stage's results in their rows, without decoding, splitting or cutting the videos again.

    .parts/<video id>.json ─▶ RedoSource.read: each kept clip's file, its frames sampled as the stage asks
        ─▶ the stage's pool ─▶ the filters after it that read its fields ─▶ RedoSource.finish_video:
           the rows with the new results ─▶ OutputWriter.update_rows (a clip a filter now drops loses its file)

    .parts/redo.json                  the redo under way: its stage, the results it leads to, the videos done
    .previous/<time>-redo-<stage>/    each video's rows before the redo, and the clip files it dropped

The config may differ from the folder's recorded results only in that stage's model and params (its env is
not part of them). A video is redone whole or not at all: its part is replaced atomically, and only once every
clip of it went through the stage; a clip the stage fails on leaves the video's rows as they were and the
same command retries it. Once every video is redone the folder records the new results and drops the journal;
until then a run without --redo-stage is refused, and rerunning the same command does the videos not yet done.

A clip without a file (filtered out, a duplicate, failed) cannot be rerun: its row keeps what the stage found
before, and the provenance record that says so (a run with --fresh recomputes it from the videos). A kept clip
that a re-applied filter now drops is filtered as in a run: `path` null, `filtered_by` its reasons; its file
moves to the `.previous` folder. A rerun row names a record of `provenance.jsonl` that is its earlier one with
the stage's entry as the redo ran it, recorded before the row names it.

The other stages' columns keep the types the table recorded (only the redone stage is described). The stage
may declare fields the table lacks (the table grows, every part is rewritten to the one schema), not another
type for a field it holds: the rows that are not rerun keep their earlier values, and a column has one type.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from orchestrator.atomic import atomic_file, atomic_write_text
from orchestrator.dataset.provenance import Provenance, StageProvenance, read_provenance, record_provenance
from orchestrator.dataset.schema import format_type, merge_types
from orchestrator.dataset.table import TABLE_DIR, declared_types, read_schema
from orchestrator.errors import ConfigError, PipelineError
from orchestrator.pipeline.config import PipelineConfig, StageConfig
from orchestrator.pipeline.items import END, Clip, VideoDone, VideoItem, put
from orchestrator.pipeline.media.video import VideoError, VideoInput, probe, sample_indices
from orchestrator.pipeline.output.parts import PIPELINE_FILE, Part, read_parts
from orchestrator.pipeline.output.writer import LAYOUT, OutputWriter
from workers.media.video import Decoder, location

JOURNAL = "redo.json"


@dataclass(frozen=True)
class RedoJournal:
    """A redo under way, so that an interrupted one is finished by the same command and nothing else."""

    stage: str
    results_key: dict[str, Any]
    """What the folder records once every video is redone."""
    aside: str
    """Where the rows before the redo and the clip files it drops go, relative to the output folder."""
    done: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, out_dir: Path) -> RedoJournal | None:
        try:
            return cls(**json.loads((out_dir / ".parts" / JOURNAL).read_text()))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{out_dir / '.parts' / JOURNAL}: unreadable ({exc}); rerun with --fresh to start "
                              f"over (the earlier results are moved to {out_dir / '.previous'})") from None

    def write(self, out_dir: Path) -> None:
        atomic_write_text(out_dir / ".parts" / JOURNAL, json.dumps(asdict(self), indent=2) + "\n")


def check_no_unfinished_redo(out_dir: Path) -> None:
    """Refuse a plain run into a folder whose redo is unfinished: its videos hold two versions of a stage."""
    journal = RedoJournal.read(out_dir)
    if journal is not None:
        raise ConfigError(f"{out_dir} has an unfinished --redo-stage {journal.stage} (some videos still hold the "
                          f"earlier results); rerun that command to finish it, or rerun with --fresh to start over")


@dataclass
class RedoPlan:
    """What one `--redo-stage` run does: the stage, the filters re-applied after it, the videos left to redo."""

    out_dir: Path
    stage: StageConfig
    filters: list[StageConfig]
    model_stages: list[str]
    recorded_key: dict[str, Any]
    journal: RedoJournal
    parts: dict[str, Part]

    @property
    def stage_names(self) -> frozenset[str]:
        return frozenset([self.stage.name, *(f.name for f in self.filters)])

    def videos(self) -> list[VideoInput]:
        """The finished videos not yet redone, as the folder names them (their files need not exist)."""
        done = set(self.journal.done)
        parts = sorted((p for p in self.parts.values() if p.video_id not in done), key=lambda p: (p.video, p.video_id))
        return [VideoInput(location(p.video), p.video_id, p.fingerprint) for p in parts]

    def source(self, writer: OutputWriter, config: PipelineConfig, made_by: StageProvenance) -> RedoSource:
        """The executor's clip source; `config` is the one the executor runs (on Ray, with planned replicas),
        `made_by` the stage as this run runs it (the entry its rows' provenance records get)."""
        return RedoSource(self, writer, next(s for s in config.stages if s.name == self.stage.name), made_by)

    def check_outputs(self, outputs: Mapping[str, str] | None) -> None:
        """Refuse, before anything is written, a stage that now declares a field the table holds as another
        type: the rows the redo cannot rerun keep their earlier values, which one column type must hold."""
        recorded = read_schema(self.out_dir)
        name = self.stage.name
        if not outputs or recorded is None or recorded.get_field_index(name) < 0:
            return
        conflict = _type_conflict(name, recorded.field(name).type, declared_types({name: outputs})[name])
        if conflict:
            where, declared, held = conflict
            raise ConfigError(f"--redo-stage {name}: {self.stage.model} declares {where} as {format_type(declared)} "
                              f"where {self.out_dir / TABLE_DIR} holds {format_type(held)} (the rows the redo "
                              f"cannot rerun keep their earlier values); rerun with --fresh to remake the folder "
                              f"with the new types")

    def finish(self, writer: OutputWriter) -> str | None:
        """Record the new results once every video is redone; else the line that says what is left."""
        left = len(set(self.parts) - set(self.journal.done))
        if left:
            return (f"{left} videos keep their earlier {self.stage.name!r} results (see the failures); rerun the "
                    f"same command to retry them")
        writer.record_results_key(self.journal.results_key)
        (self.out_dir / ".parts" / JOURNAL).unlink(missing_ok=True)
        return None


def plan_redo(out_dir: Path, config: PipelineConfig, name: str) -> RedoPlan:
    """Check that `config` may redo stage `name` in `out_dir` (a ConfigError, in one line, says why not) and
    what is left to do there: every video, or those an interrupted redo of the same stage has not done."""
    stage = _model_stage(config, name)
    recorded = _recorded_key(out_dir)
    if recorded.get("clip_files") is False:  # a stage is redone over the clip files, and there are none
        raise ConfigError(f"--redo-stage {name}: {out_dir} was made with clips: {{encode: none}}, so it holds no "
                          f"clip files to run the stage over; rerun the whole pipeline (--fresh) instead")
    _check_only_stage_differs(out_dir, recorded, config, name)
    target = config.results_key()
    journal = RedoJournal.read(out_dir)
    if journal is not None and journal.stage != name:
        raise ConfigError(f"{out_dir} has an unfinished --redo-stage {journal.stage}; rerun that command to "
                          f"finish it before redoing {name!r}")
    if journal is None or journal.results_key != target:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = journal.aside if journal else f".previous/{stamp}-redo-{name}"
        journal = RedoJournal(name, target, aside)
    after = config.stages[config.stages.index(stage) + 1:]
    filters = [s for s in after if s.filter is not None and _reads(s, name)]
    models = [s.name for s in config.stages if s.class_path]
    return RedoPlan(out_dir, stage, filters, models, recorded, journal, read_parts(out_dir / ".parts"))


def _model_stage(config: PipelineConfig, name: str) -> StageConfig:
    stage = next((s for s in config.stages if s.name == name), None)
    if stage is None or stage.model is None:
        models = ", ".join(s.name for s in config.stages if s.model) or "none"
        raise ConfigError(f"--redo-stage {name}: the config has no model stage {name!r} (its clip model stages: "
                          f"{models})")
    return stage


def _recorded_key(out_dir: Path) -> dict[str, Any]:
    try:
        claim = json.loads((out_dir / ".parts" / PIPELINE_FILE).read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{out_dir} holds no pipeline results to redo a stage of; run the pipeline without "
                          f"--redo-stage first") from None
    if not isinstance(claim, dict) or claim.get("layout") != LAYOUT or not isinstance(claim.get("results"), dict):
        raise ConfigError(f"{out_dir} holds results of an older orchestrator's layout; rerun with --fresh instead "
                          f"of --redo-stage")
    return claim["results"]


def _check_only_stage_differs(out_dir: Path, recorded: dict[str, Any], config: PipelineConfig, name: str) -> None:
    """The config, with the recorded model and params of stage `name`, must be what made the folder."""
    target = config.results_key()
    new = next(s for s in target["stages"] if s["name"] == name)
    stages = recorded.get("stages")
    expected = {**recorded, "stages": [{**s, "model": new["model"], "params": new["params"]}
                                       if isinstance(s, dict) and s.get("name") == name else s
                                       for s in (stages if isinstance(stages, list) else [])]}
    if expected != target:
        differ = _differing_stages(expected, target) or ["clip_codec"]
        raise ConfigError(f"the config differs from the results in {out_dir} in more than stage "
                          f"{name!r}'s model and params ({', '.join(differ)} changed); --redo-stage reruns one "
                          f"stage: use the config that made the folder, changing only that stage")


def _differing_stages(expected: dict[str, Any], target: dict[str, Any]) -> list[str]:
    before = {s.get("name"): s for s in expected["stages"] if isinstance(s, dict)}
    after = {s["name"]: s for s in target["stages"]}
    if list(before) != list(after):
        return ["the stages"]
    return [f"stage {n!r}" for n in after if before[n] != after[n]]


def _type_conflict(name: str, column: pa.DataType, declared: Mapping[str, pa.DataType]) -> tuple[
        str, pa.DataType, pa.DataType] | None:
    """The first declared field of stage `name` whose type is not the recorded column's (where that is known:
    a field the column lacks, or an unknown part of its type, is only filled in): (where, declared, held)."""
    if pa.types.is_null(column):
        return None
    if not pa.types.is_struct(column):  # results that disagreed wholesale, held as JSON text
        return name, pa.struct(list(declared.items())), column
    held = {f.name: f.type for f in column}
    for field_name, wanted in declared.items():
        was = held.get(field_name, pa.null())
        if merge_types(was, wanted, widen=False) != wanted:
            return f"{name}.{field_name}", wanted, was
    return None


def _reads(stage: StageConfig, name: str) -> bool:
    """Whether a filter stage has a rule on a field of stage `name`."""
    rules = stage.filter
    paths = [*rules.max, *rules.min, *rules.present, *rules.absent] if rules else []
    return any(path.split(".", 1)[0] == name for path in paths)


class RedoSource:
    """The executor's clips for a redo: read from the folder's clip files, recorded back into its rows."""

    def __init__(self, plan: RedoPlan, writer: OutputWriter, stage: StageConfig, made_by: StageProvenance) -> None:
        self.plan, self.writer, self.stage, self.made_by = plan, writer, stage, made_by
        self.stage_names = plan.stage_names
        self.videos = plan.videos()
        self.records = read_provenance(plan.out_dir)
        self._redone_ids: dict[Any, str] = {}
        """The id a rerun row gets, by the id its row had."""

    def read(self, outq: queue.Queue, stop: threading.Event) -> None:
        """Each video left to redo: its VideoItem, a Clip per row with a file, VideoDone; then END. A clip's
        frames are read as it is put, so the bounded channel holds few at a time."""
        for seq, video in enumerate(self.videos):
            item = VideoItem(seq, video)
            rows = [r for r in self.plan.parts[video.video_id].rows if r.get("path")]
            clips = (self._clip(item, row) for row in rows)
            for each in itertools.chain([item], clips, [VideoDone(item)]):
                if not put(outq, each, stop):
                    return
        put(outq, END, stop)

    def _clip(self, video: VideoItem, row: dict[str, Any]) -> Clip:
        """A kept clip as the cut step would send it: the other stages' results (for the filters) and the
        frames this stage samples, read from its file."""
        results = {n: row[n] for n in self.plan.model_stages if n in row and n != self.stage.name}
        times = (row["start_s"], row["end_s"]) if None not in (row.get("start_s"), row.get("end_s")) else None
        clip = Clip(video, row["clip_index"], row["start_frame"], row["end_frame"], results=results, times=times)
        try:
            clip.frames = {self.stage.name: self._frames(self.plan.out_dir / str(row["path"]), clip)}
        except (VideoError, OSError) as exc:
            clip.errors["decode"] = f"{row['path']}: {exc}"
        return clip

    def _frames(self, path: Path, clip: Clip) -> np.ndarray:
        """The frames of the clip file the stage samples (indices as in the video, counted from the clip's)."""
        spec = self.stage.frames
        fps = probe(path).fps
        wanted = {i - clip.start for i in sample_indices(clip.start, clip.end, fps, spec.sampling, spec.rate,
                                                          spec.max_frames)}
        picked = []
        decoder = Decoder(path)
        with contextlib.closing(iter(decoder)) as frames:
            for index, frame in enumerate(frames):
                if index in wanted:
                    picked.append(decoder.rgb(frame, spec.size))
                if index >= max(wanted):
                    break
        if not picked:
            raise VideoError(f"{path}: holds no frames")
        return np.stack(picked)

    def finish_video(self, video: VideoItem, clips: list[Clip]) -> list[dict[str, Any]]:
        """Replace the video's rows with the stage's new results, if every clip went through it; else leave
        them as they were (the failures are the run's; the same command retries the video)."""
        part = self.plan.parts[video.video.video_id]
        if video.error is not None or any(clip.errors for clip in clips):
            return part.rows
        found = {clip.index: clip for clip in clips}
        rows = [self._redone(row, found[row["clip_index"]]) if row.get("path") else row for row in part.rows]
        self._set_aside(part, rows)
        self.writer.update_rows(part.video_id, rows)
        self.plan.journal = replace(self.plan.journal, done=[*self.plan.journal.done, part.video_id])
        with _writing_to(self.plan.out_dir / ".parts"):
            self.plan.journal.write(self.plan.out_dir)
        return rows

    def _redone(self, row: dict[str, Any], clip: Clip) -> dict[str, Any]:
        """The row with the stage's new result; filtered as a run filters a clip when a re-applied filter
        drops it."""
        new = {**row, self.stage.name: clip.results.get(self.stage.name), "provenance": self._made(row)}
        if clip.filtered_by:
            new.update(path=None, filtered_by=list(clip.filtered_by))
            if "kept" in row:
                new["kept"] = False
        return new

    def _made(self, row: dict[str, Any]) -> str:
        """The provenance id of the rerun row: its earlier record (none, where the folder lacks it) with the
        stage's entry as this redo runs it, recorded before any row names it."""
        earlier = row.get("provenance")
        if earlier not in self._redone_ids:
            record = self.records.get(str(earlier), Provenance())
            with _writing_to(self.plan.out_dir):
                self._redone_ids[earlier] = record_provenance(
                    self.plan.out_dir, Provenance({**record.stages, self.stage.name: self.made_by}))
        return self._redone_ids[earlier]

    def _set_aside(self, part: Part, rows: list[dict[str, Any]]) -> None:
        """Keep the video's rows from before the redo (the first time only) and hard links to the clip files
        the new rows drop, so the redo destroys nothing."""
        aside = self.plan.out_dir / self.plan.journal.aside
        with _writing_to(aside):
            (aside / ".parts").mkdir(parents=True, exist_ok=True)
            earlier = aside / ".parts" / f"{part.video_id}.json"
            if not earlier.exists():
                atomic_write_text(earlier, json.dumps(part.to_json()) + "\n")
            kept = {r["path"] for r in rows if r.get("path")}
            for path in {r["path"] for r in part.rows if r.get("path")} - kept:
                source, target = self.plan.out_dir / path, aside / path
                if source.exists() and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(source, target)


@contextlib.contextmanager
def _writing_to(where: Path) -> Iterator[None]:
    """A file system error (a full disk) as one line naming the folder; the rerun finishes the redo."""
    try:
        yield
    except OSError as exc:
        raise PipelineError(f"cannot write to {where} ({exc.strerror}: {exc.filename}); free some space and rerun "
                            f"the same command to finish the redo") from None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        with source.open("rb") as clip, atomic_file(target) as copy:
            shutil.copyfileobj(clip, copy)
