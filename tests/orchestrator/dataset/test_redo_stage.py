"""`orchestrator run CONFIG --redo-stage NAME`: one model stage rerun over the clips of an output folder, its
results replaced in their rows, the filters on its fields re-applied, each redone row naming a provenance
record with the stage's new entry; the table keeps one schema; atomic per video under SIGKILL."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from orchestrator.dataset.provenance import provenance_of, read_provenance
from orchestrator.dataset.table import TABLE_DIR, read_schema, read_table
from orchestrator.errors import ConfigError
from orchestrator.pipeline.config import FilterSpec, load_config
from orchestrator.pipeline.output.redo import plan_redo
from tests.orchestrator.dataset.test_shards import check_shards
from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import RUN, _default_signals
from tests.support.cli import run_cli
from tests.support.paths import FIXTURES, ROOT

PIPELINE = """\
inputs: [{inputs}]
output: {output}
shards: {{max_bytes: 1MB}}
stages:
  - {{name: shots, split: colour_splitter.ColourSplitter, params: {{env: ocr}}, frames: {{size: [32, 24]}}}}
  - {{name: stats, model: {model}, params: {params}, frames: {{sampling: one_per_clip}}}}
  - {{name: keep, filter: {{min_duration_s: 0.4, max: {{stats.score: 0.6}}}}}}
"""
DARK, MID, LIGHTER, RED, BRIGHT = (40, 40, 40), (110, 110, 110), (145, 145, 145), (200, 40, 40), (190, 190, 190)
SHOTS = [(12, DARK), (12, MID), (6, RED), (12, BRIGHT)]
"""Per video, at scale 1: DARK and MID (LIGHTER in the last video) kept, RED too short, BRIGHT over the score
limit; at scale 1.5 MID and LIGHTER are over it too."""
NEW = {"env": "ocr", "scale": 1.5}


TYPED = """\
from scaled_brightness import ScaledBrightness


class Typed(ScaledBrightness):
    outputs = {outputs}

    def __call__(self, batch):
        return {{**super().__call__(batch), "label": "redone"}}
"""
"""A model of the stage that declares its outputs (and returns a field more than the first run's)."""


def write_config(folder: Path, videos: list[Path], model: str = "scaled_brightness.ScaledBrightness",
                 **params: object) -> Path:
    config = folder / f"pipeline-{len(list(folder.glob('pipeline-*.yaml')))}.yaml"
    config.write_text(PIPELINE.format(inputs=", ".join(map(str, videos)), output=folder / "out", model=model,
                                      params=json.dumps({"env": "ocr", **params})))
    return config


VIDEOS: list[Path] = []
"""The four input videos, made once for the module."""


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a finished run at scale 1 of four videos, with the models its configs name."""
    folder = tmp_path_factory.mktemp("redo")
    for name in ("colour_splitter.py", "scaled_brightness.py"):
        shutil.copy(FIXTURES / name, folder)
    VIDEOS[:] = [folder / f"video-{index}.mp4" for index in range(4)]
    for video in VIDEOS[:3]:
        write_shots(video, SHOTS)
    write_shots(VIDEOS[3], [(12, DARK), (12, LIGHTER), *SHOTS[2:]])
    done = run_cli("run", str(write_config(folder, VIDEOS)), "--quiet")
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture
def folder(first_run: Path, tmp_path: Path) -> Path:
    """A copy of the first run's output folder and models for one test to redo (the videos stay put)."""
    copy = tmp_path / "redo"
    shutil.copytree(first_run, copy, ignore=shutil.ignore_patterns("video-*.mp4", "pipeline-*.yaml"))
    return copy


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def part_rows(out: Path) -> dict[str, list[dict]]:
    return {p.stem: json.loads(p.read_text())["rows"] for p in (out / ".parts").glob("*-*.json")}


def by_shot(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(Path(r["video"]).stem, r["clip_index"]): r for r in rows}


def redo(folder: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("run", str(config), "--quiet", "--output", str(folder / "out"), "--redo-stage", "stats")


def held(out: Path) -> dict[Path, bytes]:
    """Every file of the folder's results (not its lock's owner, which each run records)."""
    return {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock-owner"}


def check_one_schema(out: Path) -> None:
    """Every table part holds the schema the table records, and the folder reads as one table of it."""
    recorded = read_schema(out)
    assert recorded is not None
    assert all(pq.read_schema(p).remove_metadata().equals(recorded) for p in (out / TABLE_DIR).glob("*.parquet"))
    assert read_table(out).schema.equals(recorded) and read_table(out).num_rows == len(rows_of(out))


def test_redo_replaces_the_stage_results_reapplies_its_filters_and_records_the_new_config(folder):
    out = folder / "out"
    before = by_shot(rows_of(out))
    made_before = {key: provenance_of(out, row) for key, row in before.items()}
    schema_before = read_schema(out)
    assert {k[1] for k, r in before.items() if r["path"]} == {0, 1}
    config = write_config(folder, VIDEOS, scale=1.5)
    done = redo(folder, config)
    assert done.returncode == 0, done.stderr
    after = by_shot(rows_of(out))
    assert after.keys() == before.keys()
    aside = next((out / ".previous").glob("*-redo-stats"))
    for (video, index), row in after.items():
        old = before[(video, index)]
        made_by, earlier = provenance_of(out, row), made_before[(video, index)]
        assert made_by is not None and earlier is not None and set(earlier.stages) == {"shots", "stats"}
        if index == 0:  # DARK: rerun, still kept
            assert row["stats"]["scale"] == 1.5 and row["path"] == old["path"] and (out / row["path"]).is_file()
        elif index == 1:  # MID: rerun, now over the limit: filtered as in a run, its file set aside
            assert row["stats"]["scale"] == 1.5 and row["path"] is None
            assert row["filtered_by"] == ["keep:max:stats.score"] and row["kept"] is False
            assert not (out / old["path"]).exists() and (aside / old["path"]).is_file()
        else:  # no file to rerun: the row as it was, made by what made it
            assert row == old and made_by == earlier
        if index in (0, 1):  # the earlier record with the stage's entry as the redo ran it
            assert made_by.stages == {**earlier.stages, "stats": replace(earlier.stages["stats"], params=NEW)}
        assert {k: v for k, v in row.items() if k not in ("stats", "path", "filtered_by", "kept", "provenance")} == \
            {k: v for k, v in old.items() if k not in ("stats", "path", "filtered_by", "kept", "provenance")}
    assert set(read_provenance(out)) == {row["provenance"] for row in after.values()}, "no record names no row"
    check_one_schema(out)
    assert read_schema(out) == schema_before, "the other stages' types are the ones the table recorded"
    assert sorted(rows_of(out), key=lambda r: (r["video"], r["clip_index"])) == \
        sorted((r for rows in part_rows(out).values() for r in rows), key=lambda r: (r["video"], r["clip_index"]))
    assert len(list((aside / ".parts").glob("*.json"))) == 4, "the rows from before the redo are kept"
    check_shards(out, {Path(r["path"]).stem for r in after.values() if r["path"]}, 10**6, folder / "clip.mp4")

    resumed = run_cli("run", str(config), "--quiet")  # the folder now records the new config: all resumed
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "run.json").read_text())["resumed"] == 4
    assert by_shot(rows_of(out)) == after


def test_a_redo_whose_config_differs_elsewhere_or_names_no_model_stage_is_refused(folder):
    config, _ = load_config(write_config(folder, VIDEOS, scale=1.5))
    other = config.model_copy(update={"stages": [*config.stages[:2], config.stages[2].model_copy(
        update={"filter": FilterSpec(min_duration_s=0.5, max={"stats.score": 0.6})})]})
    with pytest.raises(ConfigError, match=r"in more than stage 'stats''s model and params \(stage 'keep' changed\)"):
        plan_redo(folder / "out", other, "stats")
    with pytest.raises(ConfigError, match="no model stage 'shots'"):
        plan_redo(folder / "out", config, "shots")
    with pytest.raises(ConfigError, match="holds no pipeline results"):
        plan_redo(folder / "nowhere", config, "stats")
    assert plan_redo(folder / "out", config, "stats").stage_names == {"stats", "keep"}


def test_a_video_the_stage_fails_on_keeps_its_rows_whole_and_a_plain_run_waits_for_the_redo(folder):
    out = folder / "out"
    before = part_rows(out)
    failing = write_config(folder, VIDEOS, scale=1.5, fail_above=0.75)  # the LIGHTER clip of the last video
    failed = redo(folder, failing)
    assert failed.returncode == 1 and "controlled failure" in failed.stderr
    assert "1 videos keep their earlier 'stats' results" in failed.stderr
    after = part_rows(out)
    assert [after[v] == before[v] for v in sorted(before)] == [False, False, False, True]
    assert _check_whole_videos(out) == 3
    plain = run_cli("run", str(write_config(folder, VIDEOS)), "--quiet")  # the config the folder still records
    assert plain.returncode == 2 and "unfinished --redo-stage stats" in plain.stderr
    done = redo(folder, write_config(folder, VIDEOS, scale=1.5))
    assert done.returncode == 0, done.stderr
    assert _check_whole_videos(out) == 4 and not (out / ".parts" / "redo.json").exists()


def test_a_redo_whose_stage_declares_other_types_is_refused_and_one_declaring_new_fields_grows_the_table(folder):
    out = folder / "out"
    (folder / "typed_float.py").write_text(TYPED.format(outputs={"score": "float32", "label": "string"}))
    (folder / "typed_label.py").write_text(TYPED.format(outputs={"label": "string"}))
    untouched = held(out)
    refused = redo(folder, write_config(folder, VIDEOS, model="typed_float.Typed", scale=1.5))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "stats.score" in refused.stderr and "float64" in refused.stderr and "--fresh" in refused.stderr
    assert held(out) == untouched

    done = redo(folder, write_config(folder, VIDEOS, model="typed_label.Typed", scale=1.5))
    assert done.returncode == 0, done.stderr
    check_one_schema(out)
    stats = read_schema(out).field("stats").type
    assert [(f.name, str(f.type)) for f in stats] == [("label", "string"), ("score", "double"), ("scale", "double")]
    labels = {(r["clip_index"], (r["stats"] or {}).get("label")) for r in rows_of(out)}
    assert labels == {(0, "redone"), (1, "redone"), (2, None), (3, None)}, "a clip without a file is not rerun"


def _start_redo(config: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*RUN, str(config), "--quiet", "--output", str(out), "--redo-stage", "stats"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def _check_whole_videos(out: Path) -> int:
    """Every video holds its old rows or its new ones, never a mix, each naming a record of what made it; how
    many hold the new ones."""
    new = 0
    records = read_provenance(out)
    for rows in part_rows(out).values():
        scales = {r["stats"]["scale"] for r in rows if r["clip_index"] < 2}
        assert len(scales) == 1, f"a video with rows of both versions: {rows}"
        for row in rows:
            assert row["path"] is None or (out / row["path"]).is_file()
            assert row["provenance"] in records, "a row names a record the folder lacks"
            if row["clip_index"] < 2:
                assert records[row["provenance"]].stages["stats"].params.get("scale", 1.0) == row["stats"]["scale"]
        new += scales == {1.5}
    return new


def test_a_redo_killed_at_random_moments_leaves_whole_videos_and_the_same_command_finishes_it(first_run, folder):
    config = write_config(folder, VIDEOS, scale=1.5, delay_s=0.1)  # a video takes 0.2 s
    for seed in range(2):
        out = folder / f"out-{seed}"
        shutil.copytree(first_run / "out", out)
        proc = _start_redo(config, out)
        try:
            _wait_for(out / ".parts" / "redo.json", proc)  # the first video is redone
            time.sleep(random.Random(seed).uniform(0.0, 0.6))  # the fault's moment, not a synchronisation
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.communicate(timeout=60)
        assert _check_whole_videos(out) >= 1
        done = run_cli("run", str(config), "--quiet", "--output", str(out), "--redo-stage", "stats")
        assert done.returncode == 0, done.stderr
        assert _check_whole_videos(out) == 4 and not (out / ".parts" / "redo.json").exists()
        assert len(list((out / "clips").glob("*.mp4"))) == 4, "only the DARK clips stay"
