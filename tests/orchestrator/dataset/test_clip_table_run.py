"""The clip table of real runs (real decode, real workers): it reads with pyarrow and pandas in the documented
schema, holds exactly metadata.jsonl's rows, has a row for a failed video, keeps one schema whether a video's
detections are empty or not, and a rerun or a run killed at a random moment never duplicates a row."""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.dataset.provenance import provenance_of
from orchestrator.dataset.schema import BASE_COLUMNS, format_type
from orchestrator.dataset.table import read_table
from orchestrator.pipeline.output.parts import read_parts
from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import FIXTURES, outputs, run, start

HERE = Path(__file__).parent
DARK, DIM, BRIGHT, WHITE, POISON = (20, 20, 60), (60, 20, 20), (230, 200, 200), (240, 240, 240), (120, 120, 120)
PIPELINE = """\
inputs: [{inputs}]
output: {output}
stages:
  - {{name: shots, split: colour_splitter.ColourSplitter, params: {{env: ocr, fail_on: {poison}}}}}
  - name: declared
    model: detector_model.DeclaredDetector
    params: {{env: ocr, delay_s: {delay}}}
    frames: {{sampling: per_second, rate: 4}}
"""
INFERRED = """\
  - name: inferred
    model: detector_model.Detector
    params: {env: ocr}
    frames: {sampling: per_second, rate: 4}
"""
DOCUMENTED = [  # docs/dataset.md, "Columns"
    ("clip_id", "string"), ("video_id", "string"), ("video", "string"), ("fps", "float64"), ("width", "int32"),
    ("height", "int32"), ("video_frames", "int64"), ("clip_index", "int32"), ("start_frame", "int64"),
    ("end_frame", "int64"), ("frames", "int64"), ("start_s", "float64"), ("end_s", "float64"), ("path", "string"),
    ("kept", "bool"), ("filtered_by", "list<string>"), ("errors", "list<struct<stage: string, reason: string>>"),
    ("duplicate_of", "string"),
    ("truncated", "struct<decoded_frames: int64, declared_frames: int64, decoded_s: float64, declared_s: float64>"),
    ("provenance", "string"),
]
DETECTIONS = "list<list<struct<label: string, score: {score}, box: {box}>>>"


def write_pipeline(folder: Path, videos: list[Path], delay: float = 0.0, inferred: bool = True) -> tuple[Path, Path]:
    for model in (FIXTURES / "colour_splitter.py", HERE / "detector_model.py"):
        shutil.copy(model, folder / model.name)
    config, out = folder / "pipeline.yaml", folder / "out"
    config.write_text(PIPELINE.format(inputs=", ".join(map(str, videos)), output=out, poison=list(POISON),
                                      delay=delay) + (INFERRED if inferred else ""))
    return config, out


def videos(folder: Path) -> list[Path]:
    """A dark video (every detection list empty), a bright one and one whose first window fails the split."""
    paths = [folder / f"{name}.mp4" for name in ("dark", "bright", "broken")]
    write_shots(paths[0], [(12, DARK), (12, DIM)])
    write_shots(paths[1], [(12, BRIGHT), (12, WHITE), (12, DARK)])
    write_shots(paths[2], [(12, POISON), (12, BRIGHT)])
    return paths


def jsonl_rows(out: Path) -> list[dict[str, Any]]:
    return outputs(out)[0]


def by_clip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["video_id"], -1 if r["clip_index"] is None else r["clip_index"]))


def close(a: Any, b: Any) -> bool:
    """Equal, floats to float32 precision (a float32 column holds a rounded double)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
    return a == b


@dataclass
class Runs:
    out: Path
    first: list[dict[str, Any]]
    """The table's rows after the first run."""
    first_rc: int
    rerun_rc: int
    inputs: list[Path]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    folder = tmp_path_factory.mktemp("table")
    inputs = videos(folder)
    config, out = write_pipeline(folder, inputs)
    first = run(config)
    rows = read_table(out).to_pylist()
    rerun = run(config)
    assert "Traceback" not in first.stderr + rerun.stderr, (first.stderr + rerun.stderr)[-3000:]
    return Runs(out, rows, first.returncode, rerun.returncode, inputs)


def test_the_table_reads_with_pyarrow_and_pandas_in_the_documented_schema(runs: Runs) -> None:
    table = pq.read_table(runs.out / "clips.parquet")
    frame = pd.read_parquet(runs.out / "clips.parquet")
    assert len(frame) == table.num_rows == len(runs.first) > 0
    columns = [(f.name, format_type(f.type)) for f in table.schema]
    assert columns[:len(DOCUMENTED)] == DOCUMENTED == [(n, format_type(t)) for n, t in BASE_COLUMNS]
    stages = dict(columns[len(DOCUMENTED):])
    assert stages == {
        "declared": "struct<detections: " + DETECTIONS.format(score="float32", box="fixed_size_list<int32>[4]")
                    + ", embedding: fixed_size_list<float32>[3], bright: int64>",
        "inferred": "struct<detections: " + DETECTIONS.format(score="float64", box="list<int64>")
                    + ", embedding: fixed_size_list<float32>[3], bright: int64>"}
    assert list(frame.columns) == [name for name, _ in columns]
    kept = frame[frame["kept"]]
    assert len(kept) and all(len(e) == 3 for e in kept["declared"].map(lambda s: s["embedding"]))


def test_the_table_holds_the_rows_of_metadata_jsonl(runs: Runs) -> None:
    table, rows = by_clip(read_table(runs.out).to_pylist()), by_clip(jsonl_rows(runs.out))
    assert len(table) == len(rows)
    for typed, row in zip(table, rows, strict=True):
        assert list(row) == list(typed) and close(typed, row), (typed, row)


def test_a_video_that_fails_before_its_first_clip_has_one_row_with_its_error(runs: Runs) -> None:
    assert runs.first_rc == runs.rerun_rc == 1
    broken = [r for r in runs.first if r["video"] == str(runs.inputs[2])]
    assert len(broken) == 1
    row = broken[0]
    assert row["clip_id"] is None and row["clip_index"] is None and row["kept"] is False and row["path"] is None
    assert row["fps"] == 24.0 and (row["width"], row["height"]) == (64, 48)
    assert row["declared"] is None and row["inferred"] is None
    assert row["errors"][0]["stage"] is None and "controlled failure" in row["errors"][0]["reason"]


def test_empty_and_full_detections_give_one_schema_in_every_part(runs: Runs) -> None:
    parts = sorted((runs.out / "clips.parquet").glob("*.parquet"))
    assert len(parts) == 3
    schemas = [pq.read_schema(p).remove_metadata() for p in parts]
    assert all(s.equals(schemas[0]) for s in schemas)
    dark = [r for r in runs.first if r["video"] == str(runs.inputs[0])]
    bright = [r for r in runs.first if r["video"] == str(runs.inputs[1])]
    assert dark and all(d == [] for r in dark for d in r["inferred"]["detections"])
    assert any(d for r in bright for d in r["inferred"]["detections"])
    assert not pa.types.is_null(schemas[0].field("inferred").type.field("detections").type.value_type.value_type)


def test_each_row_names_what_made_it(runs: Runs) -> None:
    made_by = provenance_of(runs.out, runs.first[0])
    assert made_by is not None and sorted(made_by.stages) == ["declared", "inferred", "shots"]
    declared = made_by.stages["declared"]
    assert declared.model == "detector_model.DeclaredDetector" and declared.env == "ocr"
    assert declared.lock is not None and len(declared.lock) == 64 and declared.params == {"env": "ocr", "delay_s": 0.0}
    assert {r["provenance"] for r in runs.first} == {made_by.id}


def test_a_rerun_keeps_each_row_once(runs: Runs) -> None:
    again = read_table(runs.out).to_pylist()
    ids = [(r["video_id"], r["clip_index"]) for r in again]
    assert len(ids) == len(set(ids)) == len(runs.first)
    assert by_clip(again) == by_clip(runs.first)
    assert len(jsonl_rows(runs.out)) == len(again)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_run_killed_at_a_random_moment_resumes_without_duplicating_a_row(tmp_path: Path, seed: int) -> None:
    """Killed (SIGKILL, no cleanup) a random moment after its first video finished, the rerun resumes it."""
    inputs = videos(tmp_path)[:2]
    config, out = write_pipeline(tmp_path, inputs, delay=0.15, inferred=False)
    proc = start(config)
    try:
        deadline = time.monotonic() + 120
        while not read_parts(out / ".parts"):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before a video finished"
            time.sleep(0.02)
        time.sleep(random.Random(seed).uniform(0.0, 0.4))  # the fault's moment, not a synchronisation
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and len(read_parts(out / ".parts")) < 2, "killed after it finished"
    rerun = run(config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    table = read_table(out).to_pylist()
    ids = [r["clip_id"] for r in table]
    assert len(ids) == len(set(ids)) and {r["video_id"] for r in table} == set(read_parts(out / ".parts"))
    assert [r["clip_id"] for r in by_clip(jsonl_rows(out))] == [r["clip_id"] for r in by_clip(table)]
    assert json.loads((out / "run.json").read_text())["videos_done"] == 2


def test_an_input_that_cannot_be_opened_has_its_row_and_one_that_breaks_later_keeps_its_results(
        tmp_path: Path) -> None:
    """A file that is no video gets one row naming why; once a finished video's file is broken, a rerun says it
    is unreadable but keeps its rows and clips (and the other file keeps its row)."""
    dark, bright, _ = videos(tmp_path)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(random.Random(0).randbytes(4096))
    config, out = write_pipeline(tmp_path, [dark, bright, garbage], inferred=False)
    first = run(config)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr[-3000:]
    rows = read_table(out).to_pylist()
    (bad,) = [r for r in rows if r["video"] == str(garbage)]
    assert bad["clip_index"] is None and bad["kept"] is False and bad["filtered_by"] == ["error:video"]
    assert str(garbage) in bad["errors"][0]["reason"] and bad["video_id"]
    finished = [r for r in rows if r["video"] == str(dark)]
    assert finished and all((out / r["path"]).is_file() for r in finished if r["path"])

    dark.write_bytes(random.Random(1).randbytes(4096))
    again = run(config)
    assert again.returncode == 1 and f"{dark}: not a readable video" in again.stderr, again.stderr[-3000:]
    assert by_clip(read_table(out).to_pylist()) == by_clip(rows)
    assert close(by_clip(jsonl_rows(out)), by_clip(rows))
    assert all((out / r["path"]).is_file() for r in finished if r["path"])
